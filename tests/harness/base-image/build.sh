#!/usr/bin/env bash
# Build the Debian 12 systemd base image from Debian packages (debootstrap + docker import).
# No container registry is needed. The tag is a hash of this recipe and of the host's extra CA
# certificates, so the image is rebuilt only when one of them changes.
#
# Usage: build.sh [--print-tag]
#   KIMH_DEBIAN_MIRROR   mirror for debootstrap and the image's apt sources (default deb.debian.org)
#   KIMH_IMAGE_REPO      image repository name (default kimh/debian12-systemd)
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
mirror=${KIMH_DEBIAN_MIRROR:-http://deb.debian.org/debian}
security_mirror=${KIMH_DEBIAN_SECURITY_MIRROR:-http://deb.debian.org/debian-security}
repo=${KIMH_IMAGE_REPO:-kimh/debian12-systemd}
ca_dir=/usr/local/share/ca-certificates
packages=systemd,systemd-sysv,dbus,python3,python3-apt,sudo,ca-certificates,iproute2,procps,less

recipe_hash() {
  {
    cat "$here/build.sh" "$here/container-setup.sh"
    echo "$mirror $security_mirror $packages"
    find "$ca_dir" -type f -name '*.crt' 2>/dev/null | sort | xargs -r cat
  } | sha256sum | cut -c1-12
}

tag="$repo:$(recipe_hash)"
if [ "${1:-}" = "--print-tag" ]; then
  echo "$tag"
  exit 0
fi

if docker image inspect "$tag" >/dev/null 2>&1; then
  docker tag "$tag" "$repo:latest"
  echo "base image $tag is up to date"
  exit 0
fi

"$here/../apt-install.sh" debootstrap

rootfs=$(mktemp -d /var/tmp/kimh-rootfs.XXXXXX)
cleanup() {
  # debootstrap may leave /proc or /sys mounted in the chroot after a failure
  for m in proc sys dev/pts dev; do umount -l "$rootfs/$m" 2>/dev/null || true; done
  rm -rf --one-file-system "$rootfs"
}
trap cleanup EXIT

echo "building base image $tag (debootstrap bookworm from $mirror)"
debootstrap --variant=minbase --include="$packages" bookworm "$rootfs" "$mirror" >"$rootfs.log" 2>&1 || {
  tail -30 "$rootfs.log" >&2
  echo "debootstrap failed; full log in $rootfs.log" >&2
  exit 1
}
rm -f "$rootfs.log"

mkdir -p "$rootfs$ca_dir"
find "$ca_dir" -type f -name '*.crt' -exec cp {} "$rootfs$ca_dir/" \; 2>/dev/null || true
MIRROR="$mirror" SECURITY_MIRROR="$security_mirror" chroot "$rootfs" /bin/sh -s <"$here/container-setup.sh"

tar -C "$rootfs" --numeric-owner -c . | docker import \
  --change 'ENV container=docker' \
  --change 'CMD ["/lib/systemd/systemd"]' \
  - "$tag" >/dev/null
docker tag "$tag" "$repo:latest"
echo "built base image $tag"
