#!/usr/bin/env bash
# Set a machine up for the Docker runtime: the engine installed and running, the base and template images built.
#
# Usage: images/setup-docker.sh            (as root; `make docker-images` runs it through sudo when needed)
#
# Idempotent and cache-friendly: packages are installed only when missing (docker.io, debootstrap), dockerd is
# started only when it does not answer, the base image is bootstrapped only when absent, and images/build.sh
# reuses Docker's layer cache (kept in /var/lib/docker). Measured on a 2-core Debian 12 machine (docs/deploy.md,
# "Sizing"): see images/README.md for the cold figures; under two seconds when everything is cached.
# Needs no stdin. Afterwards: `SANDBOX_RUNTIME=docker make run`, or SANDBOX_REQUIRE_DOCKER=1 for the tests
# (a missing engine or image then fails them instead of skipping them).
set -euo pipefail
cd "$(dirname "$0")/.."
export DEBIAN_FRONTEND=noninteractive

log() { echo "setup-docker: $*"; }
if [ "$(id -u)" != 0 ]; then
  echo "setup-docker: needs root (apt-get, dockerd, debootstrap): sudo $0   (or: make docker-images)" >&2
  exit 1
fi
started=$(date +%s)

# e2fsprogs and util-linux make the loop-mounted workspaces (mkfs.ext4, mount, losetup); both are in every
# Debian install, listed so a trimmed machine gets them too.
packages=(docker.io debootstrap e2fsprogs util-linux)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  log "installing ${missing[*]}"
  apt-get install -y -q "${missing[@]}" </dev/null >/dev/null 2>&1 || {
    apt-get update -q </dev/null >/dev/null
    apt-get install -y -q "${missing[@]}" </dev/null >/dev/null
  }
fi

if ! docker info >/dev/null 2>&1; then
  if [ -d /run/systemd/system ] && command -v systemctl >/dev/null; then
    log "starting docker.service"
    systemctl start docker
  else
    log "starting dockerd (log: /var/log/dockerd.log)"
    # Detached from this shell (own session, no stdin), so it outlives the command that started it.
    setsid dockerd >>/var/log/dockerd.log 2>&1 </dev/null &
  fi
  for _ in $(seq 1 60); do
    docker info >/dev/null 2>&1 && break
    sleep 1
  done
  docker info >/dev/null 2>&1 || { tail -20 /var/log/dockerd.log >&2; log "dockerd did not come up"; exit 1; }
fi
log "engine $(docker version -f '{{.Server.Version}}') is up"

images/bootstrap-base.sh  # a no-op when sandbox-debian-base:bookworm exists
images/build.sh
log "ready in $(( $(date +%s) - started )) s"
