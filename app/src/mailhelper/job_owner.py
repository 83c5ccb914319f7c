"""Who holds a job in an in-process (legacy) queue, and whether that process still exists.

An owner is `hostname|boot id|pid namespace|pid|start ticks`: the boot id (Linux
`/proc/sys/kernel/random/boot_id`), the pid namespace (containers sharing a kernel) and the
process start time (field 22 of `/proc/PID/stat`, clock ticks since boot) make it unique
even when the pid is reused or the host rebooted. On the owner's own host the answer is
exact; for an owner on another host, in another container or before a reboot (several web
hosts may share one database) only the job's age can tell (`None` here).
"""

from __future__ import annotations

import functools
import os
import socket
from pathlib import Path

_SEP = "|"
_PROC = Path("/proc")


def _boot_id() -> str:
    try:
        return (_PROC / "sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return "-"


def _pid_namespace() -> str:
    try:
        return os.readlink(_PROC / "self/ns/pid")
    except OSError:
        return "-"


def _start_ticks(pid: int) -> str | None:
    """Start time of `pid` since boot, None when there is no such process."""
    try:
        stat = (_PROC / str(pid) / "stat").read_text()
    except FileNotFoundError:
        return None
    except OSError:  # no /proc: existence only
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return None
        except PermissionError:
            pass
        return "-"
    # the command name (field 2) may contain spaces and parentheses: split after the last ")"
    return stat.rsplit(")", 1)[1].split()[19]


@functools.cache
def _machine() -> tuple[str, str, str]:
    return socket.gethostname(), _boot_id(), _pid_namespace()


def current_owner() -> str:
    """The owner string of this process (computed per call: a forked child differs)."""
    pid = os.getpid()
    return _SEP.join((*_machine(), str(pid), _start_ticks(pid) or "-"))


def owner_alive(owner: str) -> bool | None:
    """True/False for an owner on this host, None when this process cannot tell."""
    parts = owner.split(_SEP)
    if len(parts) != 5 or not parts[3].isdigit():
        return None
    if tuple(parts[:3]) != _machine():
        return None  # another host, container or boot: only the job's age can tell
    pid, ticks = int(parts[3]), parts[4]
    now = _start_ticks(pid)
    return now is not None and (ticks == "-" or now == "-" or now == ticks)
