#!/usr/bin/env bash
# Makes, locally, the two base images the Dockerfile's FROM lines name, for machines that reach no container
# registry (this project's CI reaches only Debian's, Python's and Rust's package registries):
#
#   debian:bookworm-slim      a Debian bookworm root filesystem made by debootstrap (--variant=minbase) from
#                             Debian's packages and imported with `docker import`;
#   rust:1.95-slim-bookworm   that image plus gcc and libc6-dev from Debian, and this machine's Rust toolchain
#                             (rustc, cargo, the standard library: what rustup's official image holds).
#
# On a machine that reaches Docker Hub none of this is needed: `docker build` pulls the same tags.
# Idempotent: existing images are kept (--force remakes them). Needs root for debootstrap (uses sudo if not).
set -euo pipefail
cd "$(dirname "$0")/.."

DEBIAN_TAG=debian:bookworm-slim
RUST_VERSION=$(rustc --version | awk '{print $2}')
RUST_TAG="rust:${RUST_VERSION%.*}-slim-bookworm"
MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo"

# The builder tag names this machine's toolchain; deploy/build-images.sh passes it as --build-arg RUST_IMAGE
# (the Dockerfile's default names the release the project is built with).

have() { docker image inspect "$1" >/dev/null 2>&1; }
if [ "${1:-}" != "--force" ] && have "$DEBIAN_TAG" && have "$RUST_TAG"; then
  echo "== base images present: $DEBIAN_TAG, $RUST_TAG"
  exit 0
fi

work=$(mktemp -d)
trap '$SUDO rm -rf "$work"' EXIT

if [ "${1:-}" = "--force" ] || ! have "$DEBIAN_TAG"; then
  command -v debootstrap >/dev/null || {
    $SUDO apt-get update -q && $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -q debootstrap
  }
  echo "== debootstrap bookworm (minbase) from $MIRROR"
  start=$(date +%s)
  $SUDO debootstrap --variant=minbase bookworm "$work/rootfs" "$MIRROR" >"$work/debootstrap.log" 2>&1 || {
    tail -30 "$work/debootstrap.log" >&2; exit 1; }
  # What debian:*-slim drops: documentation and the apt lists (apt-get update fetches them in a build).
  $SUDO rm -rf "$work/rootfs"/var/lib/apt/lists/* "$work/rootfs"/usr/share/doc/* "$work/rootfs"/usr/share/man/*
  $SUDO tar -C "$work/rootfs" -c . | docker import \
    --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'CMD ["bash"]' - "$DEBIAN_TAG" >/dev/null
  echo "== $DEBIAN_TAG imported in $(( $(date +%s) - start )) s ($(docker image inspect -f '{{.Size}}' "$DEBIAN_TAG" | awk '{printf "%.0f MB", $1/1e6}'))"
fi

echo "== $RUST_TAG: $DEBIAN_TAG + gcc + this machine's Rust $RUST_VERSION"
sysroot=$(rustc --print sysroot)
mkdir -p "$work/rust/toolchain/bin" "$work/rust/toolchain/lib"
cp "$sysroot/bin/rustc" "$sysroot/bin/cargo" "$work/rust/toolchain/bin/"
cp -a "$sysroot"/lib/*.so* "$work/rust/toolchain/lib/"
# The standard library and rust-lld (the default linker on x86_64 Linux since Rust 1.90); not the sources.
mkdir -p "$work/rust/toolchain/lib/rustlib"
cp -a "$sysroot/lib/rustlib/x86_64-unknown-linux-gnu" "$work/rust/toolchain/lib/rustlib/"
cp -a "$sysroot"/lib/rustlib/{components,rust-installer-version} "$work/rust/toolchain/lib/rustlib/" 2>/dev/null || true
# The builder downloads crates: it trusts what this machine trusts (a site's TLS-inspecting egress proxy adds
# its CA under /usr/local/share/ca-certificates; the build would fail on crates.io without it).
mkdir -p "$work/rust/extra-ca"
cp /usr/local/share/ca-certificates/*.crt "$work/rust/extra-ca/" 2>/dev/null || true
cat > "$work/rust/Dockerfile" <<DOCKERFILE
FROM $DEBIAN_TAG
RUN apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      gcc libc6-dev ca-certificates && rm -rf /var/lib/apt/lists/*
COPY extra-ca/ /usr/local/share/ca-certificates/
RUN update-ca-certificates >/dev/null
COPY toolchain/ /usr/local/
ENV CARGO_HOME=/usr/local/cargo PATH=/usr/local/cargo/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
RUN rustc --version && cargo --version
DOCKERFILE
start=$(date +%s)
docker build -q -t "$RUST_TAG" "$work/rust" >/dev/null
echo "== $RUST_TAG built in $(( $(date +%s) - start )) s"
