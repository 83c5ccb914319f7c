#!/usr/bin/env bash
# Make sure a Docker engine answers. Installs Debian's docker.io when there is no daemon binary
# and starts it (systemd when it is PID 1, otherwise dockerd directly with the cgroupfs driver).
set -euo pipefail
log=/var/log/kimh-dockerd.log

if docker info >/dev/null 2>&1; then
  exit 0
fi
if ! command -v dockerd >/dev/null 2>&1; then
  "$(dirname "$0")/apt-install.sh" docker.io
fi
if [ "$(ps -p 1 -o comm= 2>/dev/null)" = systemd ]; then
  systemctl start docker
else
  echo "starting dockerd (cgroupfs driver), log in $log"
  nohup dockerd --exec-opt native.cgroupdriver=cgroupfs >>"$log" 2>&1 &
fi
for _ in $(seq 1 60); do
  docker info >/dev/null 2>&1 && exit 0
  sleep 1
done
echo "the Docker engine did not answer within 60 s; see $log" >&2
exit 1
