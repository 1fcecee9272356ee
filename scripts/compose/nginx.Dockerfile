# Stand-in for the upstream `nginx:1.27` image, used only by scripts/compose-check (no
# image registry is reachable there): Debian's nginx (1.22) on the debootstrapped base,
# shaped like upstream where docker-compose.yml relies on it: the configuration in
# /etc/nginx/nginx.conf (the compose file mounts its own over it), logs to the
# container's stdout/stderr, nginx in the foreground as PID 1, SIGQUIT to stop.
FROM debian:bookworm-slim
RUN apt-get update \
    && apt-get install -y --no-install-recommends nginx \
    && rm -rf /var/lib/apt/lists/* \
    && ln -sf /dev/stdout /var/log/nginx/access.log \
    && ln -sf /dev/stderr /var/log/nginx/error.log
EXPOSE 80
STOPSIGNAL SIGQUIT
CMD ["nginx", "-g", "daemon off;"]
