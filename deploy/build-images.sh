#!/usr/bin/env bash
# Builds jobserv/node:TAG and jobserv/worker:TAG (default TAG: dev) from the repository's Dockerfile, making
# the base images locally first when no registry can supply them (deploy/base-image.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
TAG=${1:-dev}
bash deploy/base-image.sh
# The builder base-image.sh made: this machine's Rust (the Dockerfile's default may name another release).
RUST_VERSION=$(rustc --version | awk '{print $2}')
RUST_IMAGE="rust:${RUST_VERSION%.*}-slim-bookworm"
for target in node worker; do
  start=$(date +%s)
  docker build -q --build-arg "RUST_IMAGE=$RUST_IMAGE" --target "$target" -t "jobserv/$target:$TAG" . >/dev/null
  echo "== jobserv/$target:$TAG built in $(( $(date +%s) - start )) s ($(docker image inspect -f '{{.Size}}' "jobserv/$target:$TAG" | awk '{printf "%.0f MB", $1/1e6}'))"
done
