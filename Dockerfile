# JobServ images, built from this repository:
#   docker build --target node   -t jobserv/node:TAG .     jobserv-node (+ jobserv-worker it serves for
#                                                          self-update, + the jobserv CLI)
#   docker build --target worker -t jobserv/worker:TAG .   jobserv-worker (runs need the host's Docker socket)
# The FROM tags are Docker Hub's official images; without a registry, `deploy/base-image.sh` makes both tags
# locally (debootstrap + this machine's toolchain). Works with the legacy builder and with BuildKit.
ARG RUST_IMAGE=rust:1.95-slim-bookworm
ARG BASE_IMAGE=debian:bookworm-slim

FROM ${RUST_IMAGE} AS build
WORKDIR /src
COPY . .
# One release build of the three binaries; strip in the profile keeps the runtime image small.
RUN CARGO_INCREMENTAL=0 CARGO_PROFILE_RELEASE_STRIP=symbols \
    cargo build --release --locked -p jobserv-node -p jobserv-worker -p jobserv-cli \
 && mkdir /out \
 && cp target/release/jobserv-node target/release/jobserv-worker target/release/jobserv /out/ \
 && rm -rf target /usr/local/cargo/registry
# (target/ and the crate cache go in the same layer: the build stage stays ~1 GB instead of several)

# What both runtime images share: TLS roots, git (pollers, script repos), tini as PID 1 (reaps children,
# forwards SIGTERM: the node's graceful stop hands leadership over before it exits).
FROM ${BASE_IMAGE} AS runtime
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends ca-certificates curl git tini \
 && rm -rf /var/lib/apt/lists/*

FROM runtime AS worker
COPY --from=build /out/jobserv-worker /usr/local/bin/
# Root in the container: the worker drives the host's Docker through its socket, which is root-equivalent
# whatever user asks. Its data dir must be mounted at the same path as on the host (runs bind-mount it).
ENV JOBSERV_WORKER_DATA_DIR=/var/lib/jobserv-worker
ENTRYPOINT ["tini", "--", "jobserv-worker"]
CMD ["run", "--no-self-update"]

FROM runtime AS node
RUN useradd --system --uid 10001 --user-group --home-dir /var/lib/jobserv --create-home jobserv \
 && mkdir -p /etc/jobserv/secrets && chown jobserv:jobserv /etc/jobserv/secrets
COPY --from=build /out/ /usr/local/bin/
COPY deploy/node.toml /etc/jobserv/node.toml
USER jobserv
# HTTPS (API, UI, Raft, artifact replication) on TCP and gossip on UDP, both on the one port.
EXPOSE 8443/tcp 8443/udp
VOLUME ["/var/lib/jobserv"]
HEALTHCHECK --interval=5s --timeout=3s --start-period=30s --retries=3 \
  CMD curl -fsS --cacert /etc/jobserv/secrets/ca.pem https://localhost:8443/healthz >/dev/null || exit 1
ENTRYPOINT ["tini", "--", "jobserv-node"]
CMD ["run", "--config", "/etc/jobserv/node.toml"]
