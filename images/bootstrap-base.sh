#!/usr/bin/env bash
# Make the local base image sandbox-debian-base:bookworm from a Debian root filesystem, without any registry.
#
# No container registry is reachable on these machines (DESIGN.md §9), so `FROM python:3.11-slim` cannot be
# pulled. Debian's archive is reachable: debootstrap builds a minimal bookworm root (variant minbase) with
# python3, ca-certificates and tini, and `docker import` turns it into an image the Dockerfiles accept as
# BASE_IMAGE. apt inside later builds uses the same http mirror (packages are verified by apt's signatures,
# so no TLS and no CA bundle is needed for apt).
#
# Usage: images/bootstrap-base.sh [--force] [--tag NAME] [--mirror URL]
#   Skips all work when the tag already exists, unless --force. Downloaded .debs are kept in
#   $SANDBOX_IMAGE_CACHE/debootstrap (default /var/cache/sandbox-images) so a --force rebuild is quicker.
#   Needs root, debootstrap and a running Docker engine.
set -euo pipefail

TAG="${SANDBOX_BASE_IMAGE_TAG:-sandbox-debian-base:bookworm}"
MIRROR="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"
SECURITY_MIRROR="${DEBIAN_SECURITY_MIRROR:-http://deb.debian.org/debian-security}"
SUITE=bookworm
CACHE="${SANDBOX_IMAGE_CACHE:-/var/cache/sandbox-images}"
FORCE=0
# python3 (not only python3-minimal): the executor needs ctypes, socketserver and http.server from the full
# stdlib. tini is PID 1 in the executor image.
INCLUDE=python3,ca-certificates,tini

while [ $# -gt 0 ]; do
  case "$1" in
    --force) FORCE=1 ;;
    --tag) TAG="$2"; shift ;;
    --mirror) MIRROR="$2"; shift ;;
    -h|--help) sed -n '2,14p' "$0"; exit 0 ;;
    *) echo "bootstrap-base: unknown option $1" >&2; exit 2 ;;
  esac
  shift
done

if [ "$FORCE" = 0 ] && docker image inspect "$TAG" >/dev/null 2>&1; then
  echo "bootstrap-base: $TAG exists (use --force to rebuild)"
  exit 0
fi
if [ "$(id -u)" != 0 ]; then
  echo "bootstrap-base: debootstrap needs root: sudo $0   (or: make docker-images, which does everything)" >&2
  exit 1
fi
export PATH="$PATH:/usr/sbin:/sbin"  # a non-login root shell may lack them; debootstrap lives there
if ! command -v debootstrap >/dev/null; then
  echo "bootstrap-base: debootstrap is not installed: apt-get install -y debootstrap" >&2
  echo "bootstrap-base: (or run make docker-images, which installs it, Docker, and builds every image)" >&2
  exit 1
fi

mkdir -p "$CACHE/debootstrap"
WORK="$(mktemp -d /var/tmp/sandbox-rootfs.XXXXXX)"
ROOT="$WORK/rootfs"
cleanup() {
  # debootstrap mounts /proc and /sys in the target; an interrupted run can leave them mounted.
  for m in proc sys dev/pts; do
    mountpoint -q "$ROOT/$m" 2>/dev/null && umount -l "$ROOT/$m" || true
  done
  rm -rf --one-file-system "$WORK"
}
trap cleanup EXIT

started=$(date +%s)
echo "bootstrap-base: debootstrap $SUITE (minbase + $INCLUDE) from $MIRROR"
debootstrap --variant=minbase --include="$INCLUDE" --cache-dir="$CACHE/debootstrap" \
  "$SUITE" "$ROOT" "$MIRROR" >"$WORK/debootstrap.log" 2>&1 || {
  tail -30 "$WORK/debootstrap.log" >&2
  echo "bootstrap-base: debootstrap failed" >&2
  exit 1
}

cat >"$ROOT/etc/apt/sources.list" <<EOF
deb $MIRROR $SUITE main
deb $MIRROR $SUITE-updates main
deb $SECURITY_MIRROR $SUITE-security main
EOF
# Docker-style apt hygiene: no recommends, no caches or docs left in layers.
cat >"$ROOT/etc/apt/apt.conf.d/90sandbox" <<'EOF'
APT::Install-Recommends "false";
APT::Install-Suggests "false";
Acquire::Languages "none";
EOF
cat >"$ROOT/etc/dpkg/dpkg.cfg.d/90sandbox-nodoc" <<'EOF'
path-exclude /usr/share/doc/*
path-exclude /usr/share/man/*
path-exclude /usr/share/info/*
path-exclude /usr/share/locale/*
path-include /usr/share/locale/locale.alias
EOF
rm -rf "$ROOT"/var/cache/apt/archives/*.deb "$ROOT"/var/lib/apt/lists/* "$ROOT"/usr/share/doc/* \
  "$ROOT"/usr/share/man/* "$ROOT"/usr/share/info/* "$ROOT"/var/log/* "$ROOT"/tmp/* "$ROOT"/var/tmp/*
find "$ROOT/usr/share/locale" -mindepth 1 -maxdepth 1 ! -name locale.alias -exec rm -rf {} +
# Keep the stdlib's bytecode (dpkg compiled it): containers run read-only, and without .pyc files every
# interpreter start would recompile what it imports, tripling start-up time.
chroot "$ROOT" python3 -c 'import compileall, sysconfig; compileall.compile_dir(sysconfig.get_paths()["stdlib"], quiet=2)' || true
: >"$ROOT/etc/machine-id"
# Each container gets its own hostname; do not bake the build host's into the image.
rm -f "$ROOT/etc/hostname"

tar -C "$ROOT" --numeric-owner --xattrs -c . | docker import \
  --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
  --change 'ENV LANG=C.UTF-8' \
  --change 'CMD ["python3"]' \
  --message "debootstrap $SUITE minbase + $INCLUDE" \
  - "$TAG" >/dev/null
echo "bootstrap-base: tagged $TAG ($(docker image inspect -f '{{.Size}}' "$TAG" | awk '{printf "%.0f MB", $1/1e6}')) in $(( $(date +%s) - started )) s"
