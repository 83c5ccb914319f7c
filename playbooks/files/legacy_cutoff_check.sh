#!/bin/sh
# Phase 3 proof on one host: print every trace of the legacy queue that is left (nothing
# printed and exit 0 = clean): the module file, code that imports it, the flag in the
# configuration, and an import check with the release's own Python.
set -eu
venv=${1:-/opt/mail-helper/current/venv}
conf=${2:-/etc/mail-helper/mailhelper.conf}
pkg=$("$venv/bin/python" -c 'import mailhelper, os; print(os.path.dirname(mailhelper.__file__))')
find "$pkg" -name 'legacy_jobs*' -print
grep -rlE --include='*.py' \
  '^[[:space:]]*(import mailhelper\.legacy_jobs|from mailhelper\.legacy_jobs import|from mailhelper import legacy_jobs|from \. import legacy_jobs)' \
  "$pkg" || true
grep -H '^USE_LEGACY_JOBS=\|^LEGACY_FALLBACK=' "$conf" || true
"$venv/bin/python" - <<'PY'
import importlib.util
import sys

import mailhelper.cli  # noqa: F401  (every entry point's imports)
import mailhelper.dispatcher  # noqa: F401
import mailhelper.tasks  # noqa: F401
import mailhelper.web  # noqa: F401

if importlib.util.find_spec("mailhelper.legacy_jobs") is not None:
    print("mailhelper.legacy_jobs is importable")
if "mailhelper.legacy_jobs" in sys.modules:
    print("mailhelper.legacy_jobs was imported")
PY
