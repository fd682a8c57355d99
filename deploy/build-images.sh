#!/usr/bin/env bash
# Build the images a deployment runs: the control plane, the sandbox templates, and (where no registry is
# reachable) stand-ins for MariaDB, Redis and S3 built from the local Debian base.
#
# Usage: deploy/build-images.sh [GROUP ...]      GROUP: control-plane, templates, standins, all
#                                                (default: control-plane templates)
# Tags:
#   sandbox-control-plane:latest      web and workers (deploy/Dockerfile)
#   sandbox-template-*:latest         the sandbox images the Docker and Kubernetes runtimes start (images/build.sh)
#   sandbox-standin-mariadb:latest    Debian's mariadb-server   (deploy/standins/mariadb)
#   sandbox-standin-redis:latest      Debian's redis-server     (deploy/standins/redis)
#   sandbox-standin-s3:latest         moto's S3 server mode     (deploy/standins/s3)
# Environment:
#   BASE_IMAGE          what the control plane is built FROM; default: sandbox-debian-base:bookworm when it
#                       exists (images/bootstrap-base.sh makes it), else python:3.11-slim (needs a registry)
#   STANDIN_BASE_IMAGE  what the stand-ins are built FROM; default: sandbox-debian-base:bookworm (made by
#                       images/bootstrap-base.sh when missing), which needs no registry
#   CA_BUNDLE           CA file pip trusts inside the builds (default /etc/ssl/certs/ca-certificates.crt)
#   CONTROL_PLANE_TAG   default sandbox-control-plane:latest
#
# Layer caching is by content: an unchanged tree rebuilds in seconds. Every image built here is labelled
# sandbox.build=deploy, and the untagged ones a rebuild leaves (the tag's previous image) are pruned unless a
# container still uses them, so no untagged image is left behind.
set -euo pipefail

HERE="$(cd "$(dirname "$0")" && pwd)"
REPO="$(dirname "$HERE")"
LOCAL_BASE="${SANDBOX_BASE_IMAGE_TAG:-sandbox-debian-base:bookworm}"
CA_BUNDLE="${CA_BUNDLE:-/etc/ssl/certs/ca-certificates.crt}"
CONTROL_PLANE_TAG="${CONTROL_PLANE_TAG:-sandbox-control-plane:latest}"

groups=()
for arg in "$@"; do
  case "$arg" in
    all) groups+=(control-plane templates standins) ;;
    control-plane|templates|standins) groups+=("$arg") ;;
    -h|--help) sed -n '2,22p' "$0"; exit 0 ;;
    *) echo "build-images: unknown group $arg (control-plane, templates, standins, all)" >&2; exit 2 ;;
  esac
done
[ ${#groups[@]} -gt 0 ] || groups=(control-plane templates)
wants() { local g; for g in "${groups[@]}"; do [ "$g" = "$1" ] && return 0; done; return 1; }

command -v docker >/dev/null || { echo "build-images: docker is not installed (make docker-images installs it)" >&2; exit 1; }
docker info >/dev/null 2>&1 || { echo "build-images: the Docker engine does not answer (make docker-images starts it)" >&2; exit 1; }

WORK="$(mktemp -d /tmp/sandbox-deploy-build.XXXXXX)"
trap 'rm -rf "$WORK"' EXIT
# The classic builder: works with every docker CLI (no buildx plugin) and never pulls a BuildKit frontend.
export DOCKER_BUILDKIT=0

ca_into() {  # ca_into DIR: the CA file pip uses in the build (empty: pip's own trust store)
  if [ -r "$CA_BUNDLE" ]; then cp "$CA_BUNDLE" "$1/ca-bundle.crt"; else : >"$1/ca-bundle.crt"; fi
}

build() {  # build TAG CONTEXT DOCKERFILE [ARGS...]; the log is shown only on failure
  local tag="$1" context="$2" dockerfile="$3" log="$WORK/${1//[:\/]/_}.log" started
  shift 3
  started=$(date +%s)
  if ! docker build --force-rm --label sandbox.build=deploy -t "$tag" -f "$dockerfile" "$@" "$context" >"$log" 2>&1; then
    tail -40 "$log" >&2
    echo "build-images: $tag FAILED" >&2
    exit 1
  fi
  # The image a rebuild took the tag from is left untagged: remove every such image of these builds (they
  # carry the label) that no container uses. A container's image goes at the first build after it stops.
  docker image prune -f --filter label=sandbox.build=deploy >/dev/null
  echo "build-images: $tag ($(docker image inspect -f '{{.Size}}' "$tag" | awk '{printf "%.0f MB", $1/1e6}'), $(( $(date +%s) - started )) s)"
}

if wants standins && [ -z "${STANDIN_BASE_IMAGE:-}" ] && ! docker image inspect "$LOCAL_BASE" >/dev/null 2>&1; then
  "$REPO/images/bootstrap-base.sh"
fi
if [ -z "${BASE_IMAGE:-}" ]; then
  if docker image inspect "$LOCAL_BASE" >/dev/null 2>&1; then BASE_IMAGE="$LOCAL_BASE"; else BASE_IMAGE=python:3.11-slim; fi
fi

# The stand-ins build alongside the control plane (their time is mostly apt's and pip's downloads).
standins_job=""
if wants standins; then
  standin_base="${STANDIN_BASE_IMAGE:-$LOCAL_BASE}"
  echo "build-images: stand-ins FROM $standin_base"
  (
    for name in mariadb redis s3; do
      context="$WORK/standin-$name"
      cp -r "$HERE/standins/$name" "$context"
      ca_into "$context"
      build "sandbox-standin-$name:latest" "$context" "$context/Dockerfile" --build-arg "BASE_IMAGE=$standin_base"
    done
  ) &
  standins_job=$!
fi

if wants control-plane; then
  # The source tree as it is (uncommitted changes included), without what is not the product's.
  context="$WORK/control-plane"
  mkdir -p "$context"
  tar -C "$REPO" --exclude=./.git --exclude=./.venv --exclude=./data --exclude=__pycache__ --exclude='*.pyc' \
    --exclude=./.mypy_cache --exclude=./.ruff_cache --exclude=./.pytest_cache --exclude='*.egg-info' \
    --exclude=./build --exclude=./node_modules -cf - . | tar -C "$context" -xf -
  ca_into "$context"
  # The dependency layer is keyed on this list alone, not on all of pyproject.toml (whose tool settings change
  # far more often than its dependencies). tomllib needs Python 3.11: the host's, else the base image's.
  list='import sys, tomllib; p = tomllib.load(sys.stdin.buffer)["project"]
print("\n".join(p["dependencies"] + p["optional-dependencies"]["mariadb"]))'
  python3 -c "$list" <"$REPO/pyproject.toml" >"$context/requirements.txt" 2>/dev/null ||
    docker run --rm -i --entrypoint python3 "$BASE_IMAGE" -c "$list" <"$REPO/pyproject.toml" >"$context/requirements.txt"
  echo "build-images: control plane FROM $BASE_IMAGE"
  build "$CONTROL_PLANE_TAG" "$context" "$HERE/Dockerfile" --build-arg "BASE_IMAGE=$BASE_IMAGE"
fi

if wants templates; then
  BASE_IMAGE="${TEMPLATE_BASE_IMAGE:-}" CA_BUNDLE="$CA_BUNDLE" "$REPO/images/build.sh"
fi

if [ -n "$standins_job" ]; then
  wait "$standins_job" || { echo "build-images: the stand-ins FAILED" >&2; exit 1; }
fi
