#!/bin/sh
# Runs inside the debootstrapped root file system (chroot) before it becomes an image.
set -eu

cat >/etc/apt/sources.list <<EOF
deb $MIRROR bookworm main
deb $MIRROR bookworm-updates main
deb $SECURITY_MIRROR bookworm-security main
EOF

# Trust the controller's extra CAs so apt and pip work behind a TLS-inspecting proxy.
update-ca-certificates >/dev/null

# Units that have no job in a container and only fail or slow the boot there.
for unit in systemd-udevd.service systemd-udevd-control.socket systemd-udevd-kernel.socket \
            getty@tty1.service console-getty.service systemd-remount-fs.service \
            sys-kernel-config.mount sys-kernel-debug.mount sys-kernel-tracing.mount \
            systemd-firstboot.service systemd-modules-load.service; do
  ln -sf /dev/null "/etc/systemd/system/$unit"
done

# A fresh machine-id is made at the first boot of each container.
: >/etc/machine-id
rm -f /var/lib/dbus/machine-id

echo 'APT::Install-Recommends "false";' >/etc/apt/apt.conf.d/90-no-recommends
apt-get clean
rm -rf /var/lib/apt/lists/* /var/cache/apt/*.bin /tmp/* /var/tmp/*
# The image ships no package lists: make them look stale so that `apt: update_cache: true,
# cache_valid_time: N` refreshes them instead of trusting the empty list.
rm -f /var/lib/apt/periodic/update-success-stamp
touch -d '2000-01-01 00:00:00' /var/lib/apt/lists
