#!/usr/bin/env bash
# Run the app's pytest suite against real PostgreSQL 15, OpenBao, Dovecot and Redis (started by the
# fixtures on free ports, as temporary per-run instances; never the system-wide services).
# Usage (from anywhere): tests/harness/run-app-tests.sh [--junitxml=PATH] [pytest args...]
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
harness=$root/tests/harness
cd "$root"

# Debian server packages. Their postinst must not start system-wide daemons: the fixtures
# run their own instances. A policy-rc.d we add is removed again; one that exists is kept.
pkgs=(postgresql-15 dovecot-imapd redis-server)
need=0
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || need=1
done
if [ "$need" = 1 ]; then
  added_policy=0
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
    chmod 755 /usr/sbin/policy-rc.d
    added_policy=1
  fi
  trap '[ "$added_policy" = 1 ] && rm -f /usr/sbin/policy-rc.d' EXIT
  "$harness/apt-install.sh" "${pkgs[@]}"
  [ "$added_policy" = 1 ] && rm -f /usr/sbin/policy-rc.d
  trap - EXIT
fi

venv=$root/.venv-app
"$harness/ensure-venv.sh" "$venv" app/requirements-test.lock
# the package itself, editable, without touching the pinned dependency set
"$venv/bin/pip" install -q --no-deps --no-build-isolation -e app 2>/dev/null \
  || "$venv/bin/pip" install -q --no-deps -e app

cd "$root/app"
# coverage by directory (src/mailhelper): Alembic runs the migration scripts under module
# names of its own, which a package-name filter would not count
exec "$venv/bin/python" -m pytest \
  --cov=src/mailhelper --cov-report=term --cov-fail-under=85 \
  -p no:cacheprovider "$@"
