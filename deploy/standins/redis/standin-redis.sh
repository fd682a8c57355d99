#!/bin/sh
# Debian's redis-server listens on loopback in protected mode by default; in a container it must take
# connections on the container's network, as the official image does. Extra options come after.
set -eu
if [ "${1:-}" = redis-server ]; then shift; fi
exec redis-server --bind 0.0.0.0 --protected-mode no --dir /data "$@"
