# syntax=docker/dockerfile:1
# chat-gateway image: build in the full Rust image, run in a slim Debian.
#   docker build -t chat-gateway .
#   docker run -p 8080:8080 chat-gateway                 # in-memory engine, guests on
#   docker run --rm chat-gateway token --user alice --name Alice   # needs CHAT_AUTH__JWT_SECRET

FROM rust:1-bookworm AS builder
WORKDIR /src
COPY . .
# Cache mounts keep the registry and target dir between builds; the binary is copied
# out of the cached target dir so the next stage can take it.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p chat-gateway \
    && cp target/release/chat-gateway /usr/local/bin/chat-gateway

FROM debian:bookworm-slim
# curl for the health check; ca-certificates for anything that speaks TLS.
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates curl \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --user-group --no-create-home --shell /usr/sbin/nologin chat
COPY --from=builder /usr/local/bin/chat-gateway /usr/local/bin/chat-gateway
USER chat
ENV CHAT_SERVER__LISTEN=0.0.0.0:8080
EXPOSE 8080
# /healthz: the process is alive. (/readyz also checks Redis; use it for routing.)
HEALTHCHECK --interval=10s --timeout=3s --start-period=5s --retries=3 \
    CMD curl -fsS http://127.0.0.1:8080/healthz || exit 1
ENTRYPOINT ["chat-gateway"]
