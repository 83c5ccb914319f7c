"""Ansible module: put several small files (and their directories) in place in one run.

`ansible.builtin.copy` and `template` cost four round trips per file even when nothing
changes (make a temporary directory, stat, file, remove it). A role that writes a dozen
configuration files spends most of a no-change run on that. This module takes every file's
content in its arguments (rendered on the controller, e.g. with the template lookup),
compares it and the owner, group and mode with what is on the host, and writes only what
differs, atomically (a temporary file in the same directory, renamed over the old one).

`secret_files` are `files` whose content is never shown: not in the module's logged
arguments (no_log), not in diffs.
"""

import base64
import hashlib
import os
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
module: kimh_files
short_description: Write several small files and directories in one module run
options:
  files:
    type: list
    elements: dict
    default: []
    description: Files to put in place; each has dest, content, owner, group, mode.
  secret_files:
    type: list
    elements: dict
    default: []
    description: >-
      As files, with content_base64 (the content, base64-encoded) instead of content; never
      logged or shown in a diff.
  directories:
    type: list
    elements: dict
    default: []
    description: Directories (path, owner, group, mode), made with missing parents first.
"""

_FILE_OPTIONS = {
    "dest": {"type": "path", "required": True},
    "content": {"type": "str", "required": True},
    "owner": {"type": "str", "default": "root"},
    "group": {"type": "str", "default": "root"},
    "mode": {"type": "str", "required": True},
}
# A secret's content arrives base64-encoded: AnsibleModule logs every invocation to the host's
# journal as str() of the arguments, where a content with a newline (escaped as \\n) would
# no longer match the no_log value it has to mask; a base64 string always does.
_SECRET_FILE_OPTIONS = {key: value for key, value in _FILE_OPTIONS.items() if key != "content"} | {
    "content_base64": {"type": "str", "required": True, "no_log": True}
}
_DIRECTORY_OPTIONS = {
    "path": {"type": "path", "required": True},
    "owner": {"type": "str", "default": "root"},
    "group": {"type": "str", "default": "root"},
    "mode": {"type": "str", "required": True},
}


def _wanted(item: dict) -> tuple:
    path = item.get("dest") or item["path"]
    return uid_of(item["owner"]), gid_of(item["group"]), parse_mode(item["mode"], path)


def ensure_directory(item: dict, check: bool) -> list:
    """What changed (`created`, `owner`, `mode`) for one directory."""
    path = item["path"]
    uid, gid, mode = _wanted(item)
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        if not check:
            os.makedirs(os.path.dirname(path), mode=0o755, exist_ok=True)  # like mkdir -p
            os.mkdir(path, mode)
            os.chown(path, uid, gid)
            os.chmod(path, mode)
        return ["created"]
    if not stat.S_ISDIR(st.st_mode):
        raise RefusedError(f"{path} exists and is not a directory")
    changes = attribute_changes(st, uid, gid, mode)
    if changes and not check:
        os.chown(path, uid, gid)
        os.chmod(path, mode)
    return changes


def ensure_file(item: dict, check: bool, planned_dirs: set) -> tuple:
    """(what changed, the old content or None) for one file. `planned_dirs`: directories
    this run makes (in check mode they do not exist yet)."""
    path = item["dest"]
    uid, gid, mode = _wanted(item)
    if "content_base64" in item:
        try:
            data = base64.b64decode(item["content_base64"], validate=True)
        except ValueError:
            raise RefusedError(f"{path}: content_base64 is not base64") from None
    else:
        data = item["content"].encode("utf-8")
    parent = os.path.dirname(path) or "/"
    if check and parent in planned_dirs:
        return ["created"], None
    if not os.path.isdir(parent):
        raise RefusedError(f"{path}: the directory {parent} does not exist")
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        if not check:
            write_atomically(path, data, uid, gid, mode)
        return ["created"], None
    if not stat.S_ISREG(st.st_mode):
        raise RefusedError(f"{path} exists and is not a regular file (links are not followed)")
    with open(path, "rb") as handle:
        old = handle.read()
    if hashlib.sha256(old).digest() != hashlib.sha256(data).digest():
        if not check:
            write_atomically(path, data, uid, gid, mode)
        return ["content"], old
    changes = attribute_changes(st, uid, gid, mode)
    if changes and not check:
        os.chown(path, uid, gid)
        os.chmod(path, mode)
    return changes, old


def _text(data: "bytes | None") -> str:
    if data is None:
        return ""
    return data.decode("utf-8", errors="replace")


def main() -> None:
    module = AnsibleModule(
        argument_spec={
            "files": {"type": "list", "elements": "dict", "default": [], "options": _FILE_OPTIONS},
            "secret_files": {
                "type": "list",
                "elements": "dict",
                "default": [],
                "options": _SECRET_FILE_OPTIONS,
            },
            "directories": {
                "type": "list",
                "elements": "dict",
                "default": [],
                "options": _DIRECTORY_OPTIONS,
            },
        },
        supports_check_mode=True,
    )
    check = module.check_mode
    changed = {}
    diffs = []
    try:
        planned_dirs = set()
        for item in module.params["directories"]:
            what = ensure_directory(item, check)
            if what:
                changed[item["path"]] = what
            if "created" in what:
                planned_dirs.add(os.path.normpath(item["path"]))
        for secret, key in ((False, "files"), (True, "secret_files")):
            for item in module.params[key]:
                what, old = ensure_file(item, check, planned_dirs)
                if not what:
                    continue
                changed[item["dest"]] = what
                if module._diff and ("content" in what or "created" in what):
                    diffs.append(
                        {
                            "before_header": item["dest"],
                            "after_header": item["dest"],
                            "before": "(secret)\n" if secret and old is not None else _text(old),
                            "after": "(secret)\n" if secret else item["content"],
                        }
                    )
    except RefusedError as exc:
        module.fail_json(msg=str(exc), changed_paths=changed)
    except OSError as exc:
        module.fail_json(msg=f"{exc.filename}: {exc.strerror}", changed_paths=changed)
    result = {"changed": bool(changed), "changed_paths": changed}
    if module._diff and diffs:
        result["diff"] = diffs
    module.exit_json(**result)


if __name__ == "__main__":
    main()
