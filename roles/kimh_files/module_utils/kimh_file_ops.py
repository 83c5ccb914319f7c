"""What the modules of the kimh_files role share: owners and modes as the host knows them,
the attribute drift of a path, and an atomic write (a temporary file in the same directory,
renamed over the old one)."""

import grp
import os
import pwd
import stat
import tempfile


class RefusedError(Exception):
    """Input or host state a module will not act on; the message names the path."""


def uid_of(name: str) -> int:
    try:
        return int(name) if name.isdigit() else pwd.getpwnam(name).pw_uid
    except KeyError:
        raise RefusedError(f"no user {name!r} on the host") from None


def gid_of(name: str) -> int:
    try:
        return int(name) if name.isdigit() else grp.getgrnam(name).gr_gid
    except KeyError:
        raise RefusedError(f"no group {name!r} on the host") from None


def parse_mode(text: str, path: str) -> int:
    if not text or any(c not in "01234567" for c in text) or len(text) > 4:
        raise RefusedError(f"{path}: mode must be octal digits such as 0640, got {text!r}")
    return int(text, 8)


def attribute_changes(st: os.stat_result, uid: int, gid: int, mode: int) -> list:
    """`owner` and/or `mode` where the path's differ from the wanted ones."""
    changes = []
    if (st.st_uid, st.st_gid) != (uid, gid):
        changes.append("owner")
    if stat.S_IMODE(st.st_mode) != mode:
        changes.append("mode")
    return changes


def write_atomically(path: str, data: bytes, uid: int, gid: int, mode: int) -> None:
    fd, tmp = tempfile.mkstemp(prefix=".kimh_files.", dir=os.path.dirname(path))
    try:
        os.fchown(fd, uid, gid)
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
