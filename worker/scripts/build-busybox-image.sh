#!/bin/sh
# Builds a tiny `busybox:latest` Docker image locally, without any registry: the Debian package
# busybox-static provides a statically linked busybox, which is the whole root filesystem.
# Idempotent: does nothing when the image already exists. Run as root (apt-get, docker).
# Concurrent callers are serialised with flock so that parallel test binaries build it once.
set -eu

IMAGE="${BUSYBOX_IMAGE:-busybox:latest}"
LOCK="${TMPDIR:-/tmp}/jobserv-busybox-image.lock"

exec 9>"$LOCK"
if command -v flock >/dev/null 2>&1; then
    flock 9
fi

if docker image inspect "$IMAGE" >/dev/null 2>&1; then
    echo "image $IMAGE already present"
    exit 0
fi

BUSYBOX=""
for candidate in /bin/busybox /usr/bin/busybox; do
    # Only a static busybox works alone in an empty rootfs.
    if [ -x "$candidate" ] && ! ldd "$candidate" >/dev/null 2>&1; then
        BUSYBOX="$candidate"
        break
    fi
done
if [ -z "$BUSYBOX" ]; then
    echo "installing busybox-static"
    export DEBIAN_FRONTEND=noninteractive
    if ! apt-get install -y busybox-static >/dev/null; then
        apt-get update >/dev/null
        apt-get install -y busybox-static >/dev/null
    fi
    BUSYBOX=/bin/busybox
fi

ROOTFS="$(mktemp -d)"
trap 'rm -rf "$ROOTFS"' EXIT
mkdir -p "$ROOTFS/bin" "$ROOTFS/tmp" "$ROOTFS/etc" "$ROOTFS/root" "$ROOTFS/usr/bin" "$ROOTFS/sbin" "$ROOTFS/usr/sbin"
chmod 1777 "$ROOTFS/tmp"
cp "$BUSYBOX" "$ROOTFS/bin/busybox"
# `--install -s DIR` would link to the host path of busybox; create the links ourselves so that they
# point at /bin/busybox inside the image.
for applet in $("$BUSYBOX" --list); do
    [ "$applet" = busybox ] && continue
    ln -sf /bin/busybox "$ROOTFS/bin/$applet"
done
cat > "$ROOTFS/etc/passwd" <<'PASSWD'
root:x:0:0:root:/root:/bin/sh
nobody:x:65534:65534:nobody:/nonexistent:/bin/sh
PASSWD
cat > "$ROOTFS/etc/group" <<'GROUP'
root:x:0:
nogroup:x:65534:
GROUP

tar -C "$ROOTFS" -c . | docker import \
    --change 'CMD ["/bin/sh"]' \
    --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    - "$IMAGE"
echo "built $IMAGE"
