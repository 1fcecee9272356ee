# The chat image: chat-gateway (the server) and chat-loadtest (the load-test harness),
# built in the full Rust image, run in a slim Debian as a non-root user.
#
#   docker build -t chat-gateway .
#   docker run -p 8080:8080 chat-gateway                 # in-memory engine, guests on
#   docker run --rm chat-gateway token --user alice --name Alice   # needs CHAT_AUTH__JWT_SECRET
#   docker run --rm --entrypoint chat-loadtest chat-gateway --help
#
# Needs BuildKit (the default builder since Docker 23; DOCKER_BUILDKIT=1 before) for the
# cache mounts. There is deliberately no `# syntax=` line: BuildKit's built-in frontend
# has everything used here, and a syntax image would have to be pulled from a registry
# on every build, which offline builders cannot do.
#
# Stages: `runtime` (the base every image runs on), `prebuilt` (runtime plus binaries
# built on the host, for scripts/compose-check; not the documented path), `builder` and
# the final, default stage. Build the image from host binaries with
#   docker build --target prebuilt -t chat-gateway:local -f Dockerfile DIR
# where DIR holds chat-gateway and chat-loadtest built for Debian bookworm (glibc 2.36)
# or older, e.g. target/release of `cargo build --release -p chat-gateway -p chat-loadtest`
# on a bookworm host.

FROM debian:bookworm-slim AS runtime
# curl for the health check; ca-certificates for anything that speaks TLS (rediss://,
# an OTLP collector behind TLS). A fixed numeric uid/gid so Kubernetes can check
# runAsNonRoot without a runAsUser of its own.
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates curl \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --system --gid 10001 chat \
    && useradd --system --uid 10001 --gid chat --no-create-home \
               --home-dir /nonexistent --shell /usr/sbin/nologin chat
USER 10001:10001
ENV CHAT_SERVER__LISTEN=0.0.0.0:8080
EXPOSE 8080
# /healthz: the process is alive. /readyz (also checks Redis, fails while draining) is
# for routing: docker-compose.yml and the Kubernetes readiness probe use it.
HEALTHCHECK --interval=10s --timeout=3s --start-period=5s --retries=3 \
    CMD curl -fsS http://127.0.0.1:8080/healthz || exit 1
# The gateway handles SIGTERM itself (drain, then exit 0): it must be PID 1's signal.
STOPSIGNAL SIGTERM
ENTRYPOINT ["chat-gateway"]

# Host-built binaries from the build context (see above); only built when asked for
# with --target prebuilt.
FROM runtime AS prebuilt
COPY chat-gateway chat-loadtest /usr/local/bin/

FROM rust:1-bookworm AS builder
WORKDIR /src
COPY . .
# Cache mounts keep the registry and target dir between builds; the binaries are copied
# out of the cached target dir so the next stage can take them.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p chat-gateway -p chat-loadtest \
    && cp target/release/chat-gateway target/release/chat-loadtest /usr/local/bin/

# The default target: the binaries built above, on the runtime base.
FROM runtime
COPY --from=builder /usr/local/bin/chat-gateway /usr/local/bin/chat-loadtest /usr/local/bin/
