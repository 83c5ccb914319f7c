"""Ansible module: record what a service was (re)started with, in one module run.

A role restarts its units when the release (`current`'s target) or a file they read (the
configuration, a CA) changed, whoever changed it. It keeps what the units run with in a
mark file: a header line, then one `name=value` line per input. A change of the mark
notifies the restarts. Done with `stat` (one run per input) and `copy` (four round trips
even when nothing changes) that costs a handful of round trips on every run; this module
reads the inputs, compares the mark and writes it (atomically, only when it differs) in one.

The recorded values are the ones the `stat` + `copy` pair recorded, so that the mark of a
deployment made with it does not change (and restarts nothing) after the switch:

- `link`: the resolved absolute target of a symbolic link, as stat's `lnk_source`
  (`os.path.realpath`); `none` when the path is missing or not a link;
- `checksum`: the sha1 of a regular file's content, as stat's `checksum` (links are not
  followed); `none` when the path is missing, not a regular file or not readable.
"""

import hashlib
import os
import re
import stat

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.kimh_file_ops import (
    RefusedError,
    attribute_changes,
    gid_of,
    parse_mode,
    uid_of,
    write_atomically,
)

DOCUMENTATION = r"""
module: kimh_restart_mark
short_description: Record a release link and file checksums in a mark file, in one module run
options:
  dest:
    type: path
    required: true
    description: The mark file; its directory must exist.
  header:
    type: str
    default: ""
    description: The first line of the mark (a comment), without the newline; none if empty.
  inputs:
    type: list
    elements: dict
    required: true
    description: >-
      What to record, in this order: name (the key of the line), path, kind (link: the
      link's resolved target; checksum: the sha1 of the file). A missing path records none.
  owner:
    type: str
    default: root
  group:
    type: str
    default: root
  mode:
    type: str
    default: "0644"
    description: Octal digits.
"""

MISSING = "none"
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
_INPUT_OPTIONS = {
    "name": {"type": "str", "required": True},
    "path": {"type": "path", "required": True},
    "kind": {"type": "str", "required": True, "choices": ["link", "checksum"]},
}


def link_target(path: str) -> str:
    """The resolved absolute target of the link at `path` (stat's lnk_source), or none."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return MISSING
    if not stat.S_ISLNK(st.st_mode):
        return MISSING
    return os.path.realpath(path)


def file_checksum(path: str) -> str:
    """The sha1 of the regular file at `path` (stat's checksum, links not followed), or none."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return MISSING
    if not stat.S_ISREG(st.st_mode) or not os.access(path, os.R_OK):
        return MISSING
    digest = hashlib.sha1()  # noqa: S324 - not for security: the mark must match stat's sha1
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(64 * 1024), b""):
            digest.update(block)
    return digest.hexdigest()


_READERS = {"link": link_target, "checksum": file_checksum}


def read_inputs(inputs: list, dest: str) -> dict:
    """name -> recorded value, in the order of `inputs`."""
    values = {}
    for item in inputs:
        name = item["name"]
        if not _NAME.match(name):
            raise RefusedError(f"{dest}: input name {name!r} is not a word (letters, digits, _)")
        if name in values:
            raise RefusedError(f"{dest}: input name {name!r} is given twice")
        values[name] = _READERS[item["kind"]](item["path"])
    return values


def render(header: str, values: dict, dest: str) -> str:
    """The mark's text: the header line (if any), then `name=value` lines."""
    if "\n" in header:
        raise RefusedError(f"{dest}: header must be one line")
    lines = [header] if header else []
    lines += [f"{name}={value}" for name, value in values.items()]
    return "".join(f"{line}\n" for line in lines)


def _read_mark(path: str) -> "tuple[os.stat_result | None, bytes | None]":
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return None, None
    if not stat.S_ISREG(st.st_mode):
        raise RefusedError(f"{path} exists and is not a regular file (links are not followed)")
    with open(path, "rb") as handle:
        return st, handle.read()


def ensure_mark(path: str, text: str, owner: tuple, check: bool) -> "tuple[list, bytes | None]":
    """(what changed: created, content, owner, mode; the old content or None) for the mark.
    `owner`: (uid, gid, mode). In check mode a missing directory is one a task before this
    one would have made: the mark counts as created."""
    uid, gid, mode = owner
    data = text.encode("utf-8")
    parent = os.path.dirname(path) or "/"
    if not os.path.isdir(parent):
        if check:
            return ["created"], None
        raise RefusedError(f"{path}: the directory {parent} does not exist")
    st, old = _read_mark(path)
    if st is None:
        changes = ["created"]
    elif old != data:
        changes = ["content"]
    else:
        changes = attribute_changes(st, uid, gid, mode)
    if changes and not check:
        write_atomically(path, data, uid, gid, mode)
    return changes, old


def main() -> None:
    module = AnsibleModule(
        argument_spec={
            "dest": {"type": "path", "required": True},
            "header": {"type": "str", "default": ""},
            "inputs": {
                "type": "list",
                "elements": "dict",
                "required": True,
                "options": _INPUT_OPTIONS,
            },
            "owner": {"type": "str", "default": "root"},
            "group": {"type": "str", "default": "root"},
            "mode": {"type": "str", "default": "0644"},
        },
        supports_check_mode=True,
    )
    params = module.params
    dest = params["dest"]
    try:
        owner = (uid_of(params["owner"]), gid_of(params["group"]), parse_mode(params["mode"], dest))
        values = read_inputs(params["inputs"], dest)
        text = render(params["header"], values, dest)
        changes, old = ensure_mark(dest, text, owner, module.check_mode)
    except RefusedError as exc:
        module.fail_json(msg=str(exc))
    except OSError as exc:
        module.fail_json(msg=f"{exc.filename or dest}: {exc.strerror}")
    result = {"changed": bool(changes), "changes": changes, "values": values, "dest": dest}
    if module._diff and ("content" in changes or "created" in changes):
        result["diff"] = {
            "before_header": dest,
            "after_header": dest,
            "before": "" if old is None else old.decode("utf-8", errors="replace"),
            "after": text,
        }
    module.exit_json(**result)


if __name__ == "__main__":
    main()
