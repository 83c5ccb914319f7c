#!/usr/bin/env bash
# Create or refresh a virtualenv from a pinned requirements file. Skips all work when the
# venv already matches the file (stamp = sha256 of the file and of the Python version).
# Usage: ensure-venv.sh VENV_DIR REQUIREMENTS_FILE [extra pip args...]
set -euo pipefail
venv=$1; reqs=$2; shift 2
# The interpreter to build from, resolved before the venv (which may be first on PATH) is
# removed: a venv's python3 is a symlink to its base interpreter.
python=$(readlink -f "$(command -v "${KIMH_PYTHON:-python3}")")
case "$python" in "$(readlink -f "$venv" 2>/dev/null || echo "$venv")"/*) python=/usr/bin/python3 ;; esac

stamp_of() { { sha256sum "$reqs" "$@"; "$python" -V; } | sha256sum | cut -c1-16; }
want=$(stamp_of "$@" 2>/dev/null || stamp_of)
if [ -f "$venv/.kimh-stamp" ] && [ "$(cat "$venv/.kimh-stamp")" = "$want" ]; then
  exit 0
fi

if ! "$python" -c 'import venv, ensurepip' 2>/dev/null; then
  echo "installing python3-venv (Debian)"
  "$(dirname "$0")/apt-install.sh" python3-venv
fi
echo "creating virtualenv $venv from $reqs"
rm -rf "$venv"
"$python" -m venv "$venv"
"$venv/bin/pip" install -q --upgrade pip
"$venv/bin/pip" install -q -r "$reqs" "$@"
echo "$want" >"$venv/.kimh-stamp"
