#!/usr/bin/env bash
# The Helm chart, checked and then installed for real on the one-node test cluster:
#   1. `helm lint --strict` of deploy/helm/sandbox-control-plane and sandbox-dev-services, with their default
#      values and with the test cluster's (deploy/helm/test-cluster/);
#   2. the rendered manifests validated (kubernetes-validate, strict) for Kubernetes 1.20 and 1.37;
#   3. the control-plane and stand-in images built (deploy/build-images.sh) and loaded into the cluster;
#   4. sandbox-dev-services (MariaDB, Redis, S3) and the chart installed in namespace $HELM_CHECK_NAMESPACE;
#   5. the README's example through a port-forward to the chart's Service: an API key, a session (a pod the
#      control plane creates through in-cluster config), an execution, its output, the session ended;
#   6. both releases uninstalled and the namespace deleted: nothing of theirs is left.
# Helm is PyPI's helm-python-sdk (deploy/helm/chart_tool.py); no helm binary. Usage: .ci/helm-check.sh [KIT_DIR]
# (the cluster kit, as .ci/k8s-setup.sh prints it; default: SANDBOX_K8S_KIT, ../shared/k8s, /work/shared/k8s).
# Needs the cluster up, the template images loaded (.ci/k8s-setup.sh) and `make install-dev` done.
set -euo pipefail
cd "$(dirname "$0")/.."

NS="${HELM_CHECK_NAMESPACE:-scp-ci}"
LOCAL_PORT="${HELM_CHECK_PORT:-8201}"
PY=.venv/bin/python
TOOL="$PY deploy/helm/chart_tool.py"
CP=deploy/helm/sandbox-control-plane
DEV=deploy/helm/sandbox-dev-services
TEST_VALUES=deploy/helm/test-cluster
# kubernetes-validate from 1.29 on has no schemas before Kubernetes 1.25; 1.28.3 has 1.20's.
OLD_VALIDATOR=.venv/kubernetes-validate-1.28.3
RELEASE=scp
FULLNAME=$RELEASE-sandbox-control-plane

log() { echo "helm-check: $*" >&2; }
started=$(date +%s)
step_started=$started
step() { local now; now=$(date +%s); log "$1 ($((now - step_started)) s)"; step_started=$now; }

kit="${1:-${SANDBOX_K8S_KIT:-}}"
if [ -z "$kit" ]; then
  for candidate in "$PWD/../shared/k8s" /work/shared/k8s; do
    if [ -x "$candidate/cluster.sh" ]; then kit=$candidate; break; fi
  done
fi
[ -x "$kit/cluster.sh" ] || { log "no cluster kit (pass its directory)"; exit 1; }
eval "$("$kit/cluster.sh" env)"
# kubectl: Debian's (1.20, the test cluster's own version) where none is installed.
if ! command -v kubectl >/dev/null; then
  apt-get install -y -q kubernetes-client >&2 || { apt-get update -q && apt-get install -y -q kubernetes-client; } >&2
fi

# 1-2. Lint and validate: offline, so they run while the images build and load.
[ -d "$OLD_VALIDATOR" ] || $PY -m pip install -q --no-deps --target "$OLD_VALIDATOR" kubernetes-validate==1.28.3
targets="$CP $CP=$TEST_VALUES/control-plane.yaml $DEV $DEV=$TEST_VALUES/dev-services.yaml"
lint_log=$(mktemp /tmp/helm-check-lint.XXXXXX)
# shellcheck disable=SC2086
($TOOL lint $targets && $TOOL validate $targets --kube 1.20.0 --kube 1.37.0 --old-validator "$OLD_VALIDATOR") \
  >"$lint_log" 2>&1 &
lint_pid=$!

# 3. Images: unchanged trees rebuild from the layer cache in seconds.
deploy/build-images.sh control-plane standins >&2
# An image the cluster's containerd already holds under the same id (a reused cluster) is not loaded again:
# its manifest names the Docker image's id as its config.
containerd_sock="$(dirname "$KUBECONFIG")/containerd/containerd.sock"
loaded() {
  local digest
  digest=$(ctr --address "$containerd_sock" -n k8s.io images ls "name==docker.io/library/$1" 2>/dev/null \
    | awk 'NR == 2 {print $3}')
  [ -n "$digest" ] && ctr --address "$containerd_sock" -n k8s.io content get "$digest" 2>/dev/null \
    | grep -q "\"digest\":\"$(docker image inspect -f '{{.Id}}' "$1")\""
}
for image in sandbox-control-plane:latest sandbox-standin-mariadb:latest sandbox-standin-redis:latest \
  sandbox-standin-s3:latest; do
  # Once more after a failure: ctr refuses ("already exists") when another import of the image races ours.
  loaded "$image" || "$kit/cluster.sh" load-image "$image" >/dev/null \
    || { sleep 2; loaded "$image" || "$kit/cluster.sh" load-image "$image" >/dev/null; }
done
step "images built and loaded"
lint_ok=0
wait "$lint_pid" || lint_ok=$?
grep -v '^\[INFO\]' "$lint_log" >&2
rm -f "$lint_log"
[ "$lint_ok" = 0 ] || { log "lint or validation FAILED"; exit 1; }
step "lint and validate done"

# 4. Install. Whatever happens next, the namespace goes at the end.
# Polled: kubectl 1.32's `delete --wait` against the 1.20 API server returns some 30 s after the namespace is gone.
delete_namespace() {
  kubectl delete namespace "$NS" --ignore-not-found --wait=false >/dev/null
  for _ in $(seq 1 240); do
    kubectl get namespace "$NS" >/dev/null 2>&1 || return 0
    sleep 0.5
  done
  log "namespace $NS is still there after 120 s"
  return 1
}
pf_pid=""
cleanup() {
  [ -z "$pf_pid" ] || kill "$pf_pid" 2>/dev/null || true
  $TOOL uninstall $RELEASE -n "$NS" >/dev/null 2>&1 || true
  $TOOL uninstall dev -n "$NS" >/dev/null 2>&1 || true
  delete_namespace || true
}
trap cleanup EXIT
if kubectl get namespace "$NS" >/dev/null 2>&1; then
  log "namespace $NS exists (a run that was cut short?); deleting it first"
  cleanup
fi
# The services start while the chart installs: its migration Job waits for the database.
$TOOL install $DEV dev -n "$NS" -f $TEST_VALUES/dev-services.yaml --no-wait
$TOOL install $CP $RELEASE -n "$NS" -f $TEST_VALUES/control-plane.yaml --timeout 300 || {
  kubectl -n "$NS" get pods -o wide >&2 || true
  kubectl -n "$NS" logs "job/$FULLNAME-migrate" --tail=50 >&2 || true
  kubectl -n "$NS" logs "deploy/$FULLNAME-web" --tail=50 >&2 || true
  kubectl -n "$NS" logs "deploy/$FULLNAME-worker" --tail=50 >&2 || true
  exit 1
}
kubectl -n "$NS" get pods -o wide >&2
step "installed"

# 5. The README's example, through a port-forward to the Service (on loopback).
key=$(kubectl -n "$NS" exec "deploy/$FULLNAME-web" -c web -- python /app/manage.py create_api_key ci | tail -n 1)
kubectl -n "$NS" port-forward --address 127.0.0.1 "svc/$FULLNAME" "$LOCAL_PORT:80" >/tmp/helm-check-pf.log 2>&1 &
pf_pid=$!
url="http://127.0.0.1:$LOCAL_PORT/api/v1"
for _ in $(seq 1 100); do curl -sf "$url/health" >/dev/null && break; sleep 0.2; done
curl -sf "$url/health" >&2 && echo >&2
api() {  # api METHOD PATH [JSON]: the response body; fails on an HTTP error
  curl -sS --fail-with-body -X "$1" "$url$2" -H "Authorization: Bearer $key" -H 'Content-Type: application/json' \
    ${3:+-d "$3"}
}
field() { $PY -c "import json, sys; print(json.load(sys.stdin)$1)"; }
session=$(api POST /sessions '{"template_id": "python-basic"}')
session_id=$(field '["id"]' <<<"$session")
status=$(field '["status"]' <<<"$session")
for _ in $(seq 1 120); do
  [ "$status" = creating ] || break
  sleep 0.5
  status=$(api GET "/sessions/$session_id" | field '["status"]')
done
[ "$status" = running ] || { log "session $session_id is $status"; api GET "/sessions/$session_id" >&2; exit 1; }
pod=$(kubectl -n "$NS" get pods -l "sandbox.managed=true" -o jsonpath='{.items[*].metadata.name}')
log "session $session_id runs in pod $pod"
[ -n "$pod" ]
proof=$(head -c 12 /dev/urandom | od -An -tx1 | tr -d ' \n')
execution=$(api POST "/sessions/$session_id/execute-sync" \
  "{\"language\": \"python\", \"code\": \"open('proof', 'w').write('$proof')\\nprint(6 * 7)\"}")
[ "$(field '["status"]' <<<"$execution")" = completed ] || { echo "$execution" >&2; exit 1; }
execution_id=$(field '["id"]' <<<"$execution")
stdout=$(api GET "/executions/$execution_id/output" \
  | $PY -c 'import json, sys; print("".join(c["data"] for c in json.load(sys.stdin)["chunks"] if c["stream"] == "stdout"))')
log "output: $(tr '\n' ' ' <<<"$stdout")"
[ "$(head -n 1 <<<"$stdout")" = 42 ]
# The code ran in that pod: its workspace holds the file the execution wrote.
[ "$(kubectl -n "$NS" exec "$pod" -c sandbox -- cat /workspace/proof)" = "$proof" ]
api POST "/sessions/$session_id/terminate" | field '["status"]' | grep -qx terminated
kubectl -n "$NS" wait --for=delete "pod/$pod" --timeout=60s >/dev/null 2>&1 || true
step "example passed"

# 6. Uninstall: the releases, then the namespace; nothing of ours is left in the cluster.
kill "$pf_pid" 2>/dev/null || true
pf_pid=""
$TOOL uninstall $RELEASE -n "$NS"
$TOOL uninstall dev -n "$NS"
step "releases uninstalled"
delete_namespace
trap - EXIT
leftover=$(kubectl get clusterroles,clusterrolebindings -o name | grep -c "$NS-$FULLNAME" || true)
[ "$leftover" = 0 ] || { log "cluster-wide objects left: $leftover"; exit 1; }
step "uninstalled, namespace $NS gone"
log "done in $(($(date +%s) - started)) s"
