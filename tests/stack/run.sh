#!/usr/bin/env bash
# Stack scenarios: deploy playbooks/site.yml onto a multi-host container stack and test it
# end to end. Called by tests/harness/run_suites.py with the JUnit file to write.
#   tests/stack/run.sh [JUNIT_XML] [pytest args...]
# KIMH_STACK_ID names the stack (containers kimh-stack-<id>-<host>); KIMH_STACK_KEEP=1 keeps
# it after the run (then KIMH_STACK_REUSE=1 skips the cold deploy on the next run).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
junit="${1:-$root/tests/.results/stack.xml}"
shift || true
export ANSIBLE_CONFIG="$root/ansible.cfg"
export PATH="$root/.venv/bin:$PATH"
export KIMH_STACK_ID="${KIMH_STACK_ID:-dev}"
export KIMH_BASE_IMAGE="${KIMH_BASE_IMAGE:-$("$root/tests/harness/base-image/build.sh" --print-tag)}"
mkdir -p "$(dirname "$junit")"
cd "$root"
exec "$root/.venv/bin/python" -m pytest -p no:cacheprovider -v --junitxml="$junit" "$here" "$@"
