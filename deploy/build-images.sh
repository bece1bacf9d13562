#!/usr/bin/env bash
# Builds jobserv/node:TAG and jobserv/worker:TAG (default TAG: dev) from the repository's Dockerfile, making
# the base images locally first when no registry can supply them (deploy/base-image.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
TAG=${1:-dev}
bash deploy/base-image.sh
for target in node worker; do
  start=$(date +%s)
  docker build -q --target "$target" -t "jobserv/$target:$TAG" . >/dev/null
  echo "== jobserv/$target:$TAG built in $(( $(date +%s) - start )) s ($(docker image inspect -f '{{.Size}}' "jobserv/$target:$TAG" | awk '{printf "%.0f MB", $1/1e6}'))"
done
