"""A process holding jobs on its legacy queue (tests): `python -m tests.legacy_holder N`
submits N `test_hold` jobs through the dispatcher (configuration from the environment),
prints their ids as one JSON line, then waits to be killed."""

from __future__ import annotations

import json
import sys
import time

from mailhelper.runtime import build_runtime

import tests.worker_tasks  # noqa: F401 - registers the `test_hold` job kind


def main() -> None:
    rt = build_runtime()
    ids = [rt.jobs.submit("test_hold").id for _ in range(int(sys.argv[1]))]
    print(json.dumps(ids), flush=True)
    while True:
        time.sleep(60)


if __name__ == "__main__":
    main()
