# Stand-in for the upstream `redis:7` image, used only by scripts/compose-check (no image
# registry is reachable there). Debian's redis-server on the debootstrapped base, shaped
# like upstream where docker-compose.yml relies on it: `redis-server` and `redis-cli`
# on PATH, working directory and volume /data owned by the redis user, port 6379, and
# protected mode off (upstream compiles it off, so other containers may connect without
# a password).
FROM debian:bookworm-slim
RUN apt-get update \
    && apt-get install -y --no-install-recommends redis-server \
    && rm -rf /var/lib/apt/lists/* \
    && mkdir /data && chown redis:redis /data
COPY redis-entrypoint.sh /usr/local/bin/docker-entrypoint.sh
VOLUME /data
WORKDIR /data
USER redis
EXPOSE 6379
ENTRYPOINT ["docker-entrypoint.sh"]
CMD ["redis-server"]
