#!/usr/bin/env bash
# Build the executor base image and the built-in template images.
#
# Usage: images/build.sh [TEMPLATE ...]        (default: python-basic nodejs-basic python-datascience)
# Environment:
#   BASE_IMAGE    what the executor base is built FROM; default: sandbox-debian-base:bookworm when it exists
#                 (images/bootstrap-base.sh makes it), else python:3.11-slim (needs a registry)
#   CA_BUNDLE     CA file for pip's TLS inside builds (default /etc/ssl/certs/ca-certificates.crt; TLS to PyPI
#                 is intercepted on these machines); passed as the CA_BUNDLE build arg, never left in an image
#   PIP_INDEX_URL index for python-datascience (default https://pypi.org/simple)
#
# Build context: a temporary directory holding `executor/` (runtime/executor without bytecode) and
# `ca-bundle.crt`; the Dockerfiles under images/ are passed with -f. Layer caching is by content, so a fresh
# context still hits the cache and an unchanged tree rebuilds in seconds.
#
# Tags: sandbox-executor-base:latest (and :system, the same without the executor, on which the heavier
# templates install their packages) and sandbox-template-<id>:latest; a template's intermediate build stages
# as sandbox-build-stage:<id>-<stage> (layer cache only; deleting them costs the next build a full rebuild).
# A rebuild that changes an image removes the one its tag named before, so no untagged image is left behind.
set -euo pipefail

HERE="$(cd "$(dirname "$0")" && pwd)"
REPO="$(dirname "$HERE")"
LOCAL_BASE="${SANDBOX_BASE_IMAGE_TAG:-sandbox-debian-base:bookworm}"
EXECUTOR_TAG=sandbox-executor-base:latest
SYSTEM_TAG=sandbox-executor-base:system  # the executor base without the executor (see its Dockerfile)
CA_BUNDLE="${CA_BUNDLE:-/etc/ssl/certs/ca-certificates.crt}"
PIP_INDEX_URL="${PIP_INDEX_URL:-https://pypi.org/simple}"
if [ $# -gt 0 ]; then TEMPLATES=("$@"); else TEMPLATES=(python-basic nodejs-basic python-datascience); fi

if [ -z "${BASE_IMAGE:-}" ]; then
  if docker image inspect "$LOCAL_BASE" >/dev/null 2>&1; then BASE_IMAGE="$LOCAL_BASE"; else BASE_IMAGE=python:3.11-slim; fi
fi
for t in "${TEMPLATES[@]}"; do
  [ -f "$HERE/templates/$t/Dockerfile" ] || { echo "build: no template $t (images/templates/$t/Dockerfile)" >&2; exit 2; }
done

CONTEXT="$(mktemp -d /tmp/sandbox-build.XXXXXX)"
trap 'rm -rf "$CONTEXT"' EXIT
tar -C "$REPO/runtime" --exclude=__pycache__ --exclude='*.pyc' -cf - executor | tar -C "$CONTEXT" -xf -
if [ -r "$CA_BUNDLE" ]; then
  cp "$CA_BUNDLE" "$CONTEXT/ca-bundle.crt"
else
  echo "build: CA bundle $CA_BUNDLE not readable; pip will use its own trust store" >&2
  : >"$CONTEXT/ca-bundle.crt"
fi

# The classic builder: it works with every docker CLI (no buildx plugin needed) and never fetches a BuildKit
# frontend image from a registry, which these machines cannot reach.
export DOCKER_BUILDKIT=0

build() {  # build TAG DOCKERFILE [ARGS...]; the log is shown only on failure
  local tag="$1" dockerfile="$2" log="$CONTEXT/build.log" started before after
  shift 2
  started=$(date +%s)
  before=$(docker image inspect -f '{{.Id}}' "$tag" 2>/dev/null || true)
  if ! docker build --force-rm -t "$tag" -f "$dockerfile" "$@" "$CONTEXT" >"$log" 2>&1; then
    tail -40 "$log" >&2
    echo "build: $tag FAILED" >&2
    exit 1
  fi
  # The image the tag named before would be left untagged (dangling): remove it unless a container uses it.
  after=$(docker image inspect -f '{{.Id}}' "$tag")
  if [ -n "$before" ] && [ "$before" != "$after" ]; then
    docker image rm "$before" >/dev/null 2>&1 || true
  fi
  echo "build: $tag ($(docker image inspect -f '{{.Size}}' "$tag" | awk '{printf "%.0f MB", $1/1e6}'), $(( $(date +%s) - started )) s)"
}

# Stages of a Dockerfile that run instructions of their own, but the last: `FROM ... AS name` followed by
# something other than the next FROM. The classic builder leaves each of them behind as an untagged image;
# built first under a tag of their own (sandbox-build-stage:<template>-<stage>), they stay named and keep
# the layer cache (pip's download of the data-science packages) for the next build.
built_stages() {
  awk 'tolower($1) == "from" { if (name != "" && body) print name; name = (tolower($3) == "as") ? $4 : ""; body = 0; next }
       /^[[:space:]]*(#|$)/ { next }
       { body = 1 }' "$1"
}

echo "build: executor base FROM $BASE_IMAGE"
build "$SYSTEM_TAG" "$HERE/executor-base/Dockerfile" --build-arg "BASE_IMAGE=$BASE_IMAGE" --target system
build "$EXECUTOR_TAG" "$HERE/executor-base/Dockerfile" --build-arg "BASE_IMAGE=$BASE_IMAGE"
for t in "${TEMPLATES[@]}"; do
  args=(--build-arg "SYSTEM_BASE=$SYSTEM_TAG" --build-arg "EXECUTOR_BASE=$EXECUTOR_TAG"
    --build-arg CA_BUNDLE=ca-bundle.crt --build-arg "PIP_INDEX_URL=$PIP_INDEX_URL")
  for stage in $(built_stages "$HERE/templates/$t/Dockerfile"); do
    build "sandbox-build-stage:$t-$stage" "$HERE/templates/$t/Dockerfile" --target "$stage" "${args[@]}"
  done
  build "sandbox-template-$t:latest" "$HERE/templates/$t/Dockerfile" "${args[@]}"
done
