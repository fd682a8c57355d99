#!/usr/bin/env bash
# Make the Kubernetes runtime's tests runnable: the one-node test cluster up, the template images in it.
#
# Uses the cluster kit (cluster.sh, see its README): SANDBOX_K8S_KIT, else ../shared/k8s next to this
# checkout, else /work/shared/k8s. Starting is idempotent (a running cluster is reused as it is). Prints one
# line on stdout: `started KIT_DIR` when this script brought the cluster up (the caller stops it afterwards
# with KIT_DIR/cluster.sh down) or `reused KIT_DIR` when it was running already (left running). The kubeconfig is `cluster.sh env`'s. Progress goes
# to stderr. Needs root, cgroup v1 and the template images in the local Docker engine (.ci/docker-setup.sh).
set -euo pipefail
cd "$(dirname "$0")/.."

log() { echo "k8s-setup: $*" >&2; }
started=$(date +%s)

kit="${SANDBOX_K8S_KIT:-}"
if [ -z "$kit" ]; then
  for candidate in "$PWD/../shared/k8s" /work/shared/k8s; do
    if [ -x "$candidate/cluster.sh" ]; then kit=$candidate; break; fi
  done
fi
if [ -z "$kit" ] || [ ! -x "$kit/cluster.sh" ]; then
  log "no cluster kit found (set SANDBOX_K8S_KIT to the directory holding cluster.sh)"
  exit 1
fi

outcome=started
if "$kit/cluster.sh" status >/dev/null 2>&1; then
  outcome=reused
  log "the test cluster is already running; reusing it"
else
  "$kit/cluster.sh" up >/dev/null
fi

# The images the Kubernetes tests use; imported into the cluster's containerd (pods use imagePullPolicy Never).
for image in sandbox-template-python-basic:latest sandbox-template-nodejs-basic:latest; do
  "$kit/cluster.sh" load-image "$image" >/dev/null
done
log "cluster ready, images loaded in $(($(date +%s) - started)) s ($outcome)"
echo "$outcome $kit"
