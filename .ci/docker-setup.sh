#!/usr/bin/env bash
# CI: the Docker engine and the template images, exactly as a developer gets them (`make docker-images`).
set -euo pipefail
exec "$(dirname "$0")/../images/setup-docker.sh"
