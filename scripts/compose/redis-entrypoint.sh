#!/bin/sh
# Entry point of the stand-in redis:7 image (see redis.Dockerfile): upstream's build
# turns protected mode off by default; Debian's does not, so say it on the command line
# (first, so the compose file's own options still come after it and win).
set -e
if [ "${1:-}" = redis-server ]; then
    shift
    set -- redis-server --protected-mode no "$@"
fi
exec "$@"
