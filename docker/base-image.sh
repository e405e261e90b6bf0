#!/usr/bin/env bash
# Build a Python base image locally, for machines that cannot pull python:3.11-slim-bookworm
# from a registry (air-gapped clusters): a Debian bookworm minbase with python3, venv, pip and
# ca-certificates, made with debootstrap from a Debian mirror and loaded with `docker import`.
#
#   sudo docker/base-image.sh [TAG]          (default TAG: distill-base:bookworm)
#   then build with --build-arg BASE_IMAGE=TAG (docs/docker.md)
#
# Environment: DOCKER (the docker CLI, default `docker`), DEBIAN_MIRROR (default
# http://deb.debian.org/debian; point it at your local mirror offline), DEBIAN_SUITE (bookworm).
# The image holds Debian's CA bundle only: the machine's extra CA certificates are not copied
# in (pass them to a build as the pip_ca secret instead, so they never land in an image).
set -euo pipefail

TAG=${1:-distill-base:bookworm}
DOCKER=${DOCKER:-docker}
MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
SUITE=${DEBIAN_SUITE:-bookworm}

if [ "$(id -u)" != 0 ]; then
    echo "base-image.sh: debootstrap needs root; run it with sudo" >&2
    exit 2
fi
if ! command -v debootstrap > /dev/null; then
    echo "base-image.sh: debootstrap is missing; install it: apt-get install debootstrap" >&2
    exit 2
fi

ROOTFS=$(mktemp -d /var/tmp/distill-base.XXXXXX)
trap 'rm -rf "$ROOTFS"' EXIT

debootstrap --variant=minbase --include=python3,python3-venv,python3-pip,ca-certificates \
    "$SUITE" "$ROOTFS" "$MIRROR" > "$ROOTFS.log" 2>&1 || {
    tail -20 "$ROOTFS.log" >&2
    echo "base-image.sh: debootstrap from $MIRROR failed (log above); set DEBIAN_MIRROR" >&2
    rm -f "$ROOTFS.log"
    exit 1
}
rm -f "$ROOTFS.log"

# The official image's names: `python` and `pip` on PATH.
ln -sf /usr/bin/python3 "$ROOTFS/usr/local/bin/python"
ln -sf /usr/bin/pip3 "$ROOTFS/usr/local/bin/pip"
# Downloaded .debs, package lists, docs and the build host's name and resolver stay out.
rm -rf "$ROOTFS"/var/cache/apt/archives/*.deb "$ROOTFS"/var/lib/apt/lists/* \
    "$ROOTFS"/usr/share/doc/* "$ROOTFS"/usr/share/man/* "$ROOTFS"/usr/share/locale/* \
    "$ROOTFS"/tmp/* "$ROOTFS"/var/log/*.log
: > "$ROOTFS/etc/hostname"
: > "$ROOTFS/etc/resolv.conf"

tar --numeric-owner -C "$ROOTFS" -c . | "$DOCKER" import \
    --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'ENV LANG=C.UTF-8' \
    --change 'CMD ["python3"]' \
    --message "debootstrap $SUITE minbase + python3 (docker/base-image.sh)" \
    - "$TAG" > /dev/null
echo "base-image.sh: built $TAG (Debian $SUITE minbase with python3)"
