"""Keep what the controller compiles on disk, so that forked workers and later runs reuse it.

Two kinds of work are thrown away after every task or run, and redone the same way:

- Jinja templates. Ansible runs each task in a worker process forked from the main
  process; the worker compiles every template and conditional the task uses (Jinja parses
  the text, generates Python source, compiles it) and the code dies with the worker. A
  no-change `site.yml` on the local inventory compiles about 1,900 templates that way, on
  every run.
- Mitogen's module scan. Before a module's first use in a run, Mitogen's mux process
  compiles the module and every module_utils file it imports, to find what to send to the
  host: about 2.5 s of a no-change `site.yml`, spent while the task waits.

This plugin wraps both so that each result is written once to a private cache directory
and read from there afterwards.

- A compiled template's key holds everything its code depends on: the template text, its
  name, the lexer settings, the Python, Jinja, ansible-core and ansible versions, and
  Ansible's embedded-template setting. Jinja resolves the filters and tests a template
  uses when it compiles it (how to pass them their context), so an entry also records
  them and is used only while they resolve the same way; otherwise the template is
  compiled as before, which also reports an unknown filter as before. Only code is
  cached, never what a template renders.
- A module scan's entry records the size and modification time of the module, of every
  file the scan found and of the directories it searched; it is used only while all of
  them are unchanged.

The directories are under `$XDG_CACHE_HOME/ki-mail-helper/` (default `~/.cache/...`), mode
0700 and owned by the user running Ansible; the plugin uses no directory that other users
could write. `KIMH_COMPILE_CACHE=0` turns it off. Any failure of the cache itself falls back
to compiling, silently except at -vvv.

Ansible loads it by itself for every playbook in this directory (plugins next to a
playbook), before the first worker or Mitogen's mux process forks.
"""

from __future__ import annotations

import contextlib
import contextvars
import hashlib
import importlib.metadata
import importlib.util
import json
import marshal
import os
import stat
import sys
import tempfile
import types
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ansible.plugins.callback import CallbackBase

DOCUMENTATION = """
name: kimh_compile_cache
type: aggregate
short_description: reuse compiled Jinja templates and Mitogen's module scans across runs
description:
  - Caches the code Jinja compiles from each template, and the module_utils Mitogen finds
    for each module, in private directories, so that forked workers and later runs load
    them instead of compiling again.
  - C(KIMH_COMPILE_CACHE=0) turns it off.
"""

ENV_SWITCH = "KIMH_COMPILE_CACHE"
NOT_USABLE = "cannot be created, or is not owned and writable by this user alone"
# A store removes the entries of other version sets when a run starts; this many entries of
# the current set empty it (templates that changed leave their old entries behind).
MAX_ENTRIES = 20000

Uses = tuple[tuple[str, str, str], ...]

_expression_source: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "kimh_expression_source", default=None
)


def cache_root() -> Path:
    """The bundle's cache directory on the controller (not created here)."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "ki-mail-helper"


def distribution_version(distribution: str) -> str:
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return "-"


def version_salt(*extra: str) -> str:
    """A name shared by every entry made by this interpreter with these packages."""
    parts = [importlib.util.MAGIC_NUMBER.hex(), sys.version, *extra]
    return hashlib.sha256("\0".join(parts).encode()).hexdigest()[:24]


def private_directory(path: Path) -> bool:
    """Create `path` (0700) if needed; true only if it is ours and no one else can write it."""
    try:
        path.mkdir(mode=0o700, parents=True, exist_ok=True)
        info = path.lstat()
    except OSError:
        return False
    return (
        stat.S_ISDIR(info.st_mode)
        and info.st_uid == os.geteuid()
        and not info.st_mode & (stat.S_IWGRP | stat.S_IWOTH)
    )


def digest(*parts: Any) -> str:
    return hashlib.sha256(repr(parts).encode("utf-8", "surrogatepass")).hexdigest()


class EntryStore:
    """Byte strings by key, one file each, written atomically; one directory per version set."""

    def __init__(self, kind_directory: Path, salt: str) -> None:
        self.directory = kind_directory / salt
        self.salt = salt

    def open(self) -> bool:
        """Create the directories; prune; false if they are not private to this user."""
        if not (private_directory(self.directory.parent) and private_directory(self.directory)):
            return False
        for entry in os.scandir(self.directory.parent):
            if entry.name != self.salt and entry.is_dir(follow_symlinks=False):
                remove_entries(Path(entry.path), remove_directory=True)
        with os.scandir(self.directory) as entries:
            count = sum(1 for _ in entries)
        if count > MAX_ENTRIES:
            remove_entries(self.directory, remove_directory=False)
        return True

    def get(self, key: str) -> bytes | None:
        try:
            return (self.directory / key).read_bytes()
        except OSError:
            return None

    def put(self, key: str, data: bytes) -> None:
        try:
            handle, temporary = tempfile.mkstemp(dir=self.directory, prefix=".tmp-")
        except OSError:
            return
        try:
            with os.fdopen(handle, "wb") as stream:
                stream.write(data)
            os.replace(temporary, self.directory / key)
        except OSError:
            with contextlib.suppress(OSError):
                os.unlink(temporary)


def remove_entries(directory: Path, remove_directory: bool) -> None:
    for entry in os.scandir(directory):
        with contextlib.suppress(OSError):
            os.unlink(entry.path)
    if remove_directory:
        with contextlib.suppress(OSError):
            directory.rmdir()


# --- Jinja templates --------------------------------------------------------------------


def pass_arg(environment: Any, kind: str, name: str) -> str:
    """How Jinja passes context to this filter or test; '' when the name does not resolve."""
    from jinja2.utils import _PassArg

    mapping = environment.filters if kind == "filter" else environment.tests
    try:
        function = mapping.get(name)
    except Exception:  # a plugin that fails to load: compiling as before reports it
        return ""
    if function is None:
        return ""
    arg = _PassArg.from_obj(function)
    return arg.name if arg is not None else "-"


def template_uses(environment: Any, tree: Any) -> Uses:
    """The filters and tests a parsed template uses, with how each resolves now."""
    from jinja2 import nodes

    names = {("filter", node.name) for node in tree.find_all(nodes.Filter)}
    names |= {("test", node.name) for node in tree.find_all(nodes.Test)}
    return tuple((kind, name, pass_arg(environment, kind, name)) for kind, name in sorted(names))


def uses_hold(environment: Any, uses: Uses) -> bool:
    """True while every filter and test an entry recorded resolves as it did then."""
    return all(arg and pass_arg(environment, kind, name) == arg for kind, name, arg in uses)


def load_code(data: bytes | None) -> tuple[types.CodeType, Uses] | None:
    if data is None:
        return None
    try:
        # S302: the data comes from a directory only this user can write (private_directory)
        code, uses = marshal.loads(data)  # noqa: S302
        uses = tuple((str(kind), str(name), str(arg)) for kind, name, arg in uses)
    except (EOFError, ValueError, TypeError):
        return None
    return (code, uses) if isinstance(code, types.CodeType) else None


def install_template_cache(store: EntryStore) -> None:
    """Route AnsibleEnvironment.compile (and compile_expression) through `store`."""
    from ansible._internal._templating._jinja_bits import (
        _TEMPLATE_OVERRIDE_FIELD_NAMES,
        AnsibleEnvironment,
        _TemplateCompileContext,
    )

    if getattr(AnsibleEnvironment.compile, "kimh_compile_cache", False):
        return
    original_compile = AnsibleEnvironment.compile
    original_compile_expression = AnsibleEnvironment.compile_expression

    def signature(environment: Any) -> tuple[Any, ...]:
        context = _TemplateCompileContext.current(optional=True)
        return (
            tuple(getattr(environment, name) for name in _TEMPLATE_OVERRIDE_FIELD_NAMES),
            type(environment).__qualname__,
            environment.optimized,
            environment.is_async,
            environment.autoescape,
            tuple(sorted(environment.extensions)),
            getattr(environment.finalize, "__qualname__", repr(environment.finalize)),
            None if context is None else context.escape_backslashes,
        )

    def compile_expression(self: Any, source: str, *args: Any, **kwargs: Any) -> Any:
        token = _expression_source.set(source)
        try:
            return original_compile_expression(self, source, *args, **kwargs)
        finally:
            _expression_source.reset(token)

    def compile(
        self: Any,
        source: Any,
        name: str | None = None,
        filename: str | None = None,
        raw: bool = False,
        defer_init: bool = False,
    ) -> Any:
        if raw or self._debuggable_template_source:
            return original_compile(self, source, name, filename, raw, defer_init)
        if isinstance(source, str):
            text, kind = str(source), "template"
        else:  # compile_expression hands over the parsed expression; its text is the key
            text, kind = _expression_source.get(), "expression"
            _expression_source.set(None)  # templates compiled from within are not it
            if text is None:
                return original_compile(self, source, name, filename, raw, defer_init)
        try:
            key = digest(kind, name, filename, defer_init, signature(self), text)
            cached = load_code(store.get(key))
            if cached is not None and uses_hold(self, cached[1]):
                return cached[0]
        except Exception:  # the cache never fails a compile: compile as without it
            return original_compile(self, source, name, filename, raw, defer_init)
        try:
            tree = self._parse(source, name, filename) if kind == "template" else source
            code = original_compile(self, tree, name, filename, raw, defer_init)
        except Exception:  # compile again so that Jinja reports it exactly as without us
            return original_compile(self, source, name, filename, raw, defer_init)
        with contextlib.suppress(Exception):
            uses = template_uses(self, tree)
            if all(arg for _, _, arg in uses):
                store.put(key, marshal.dumps((code, [list(use) for use in uses])))
        return code

    compile.kimh_compile_cache = True  # type: ignore[attr-defined]
    AnsibleEnvironment.compile = compile
    AnsibleEnvironment.compile_expression = compile_expression


# --- Mitogen's module scan --------------------------------------------------------------


def file_state(path: str) -> list[Any]:
    try:
        info = os.stat(path)
    except OSError:
        return [path, None, None]
    return [path, info.st_mtime_ns, info.st_size]


def scan_inputs(module_path: str, search_path: tuple[str, ...], found: list[Any]) -> list[str]:
    """What a scan's result depends on: the files it read and the directories it searched."""
    paths = {module_path, *search_path}
    for _, origin, is_package in found:
        paths.add(origin)
        paths.add(os.path.dirname(origin))
        if is_package:
            paths.add(os.path.dirname(os.path.dirname(origin)))
    return sorted(paths)


def cached_scan(data: bytes | None) -> list[tuple[Any, ...]] | None:
    """An entry's scan result, if every file and directory it recorded is unchanged."""
    if data is None:
        return None
    try:
        entry = json.loads(data)
        if all(file_state(state[0]) == state for state in entry["inputs"]):
            return [tuple(found) for found in entry["found"]]
    except (ValueError, KeyError, TypeError, IndexError):
        pass
    return None


def install_scan_cache(store: EntryStore, finder: Any) -> None:
    """Route Mitogen's module_finder.scan through `store`."""
    if getattr(finder.scan, "kimh_compile_cache", False):
        return
    original_scan: Callable[..., list[Any]] = finder.scan

    def scan(module_name: str, module_path: str, search_path: tuple[str, ...]) -> list[Any]:
        search_path = tuple(search_path)
        key = None
        with contextlib.suppress(Exception):  # the cache never fails a scan
            key = digest(module_name, module_path, search_path)
            cached = cached_scan(store.get(key))
            if cached is not None:
                return cached
        found = original_scan(module_name, module_path, search_path)
        if key is not None:
            with contextlib.suppress(Exception):
                inputs = [file_state(path) for path in scan_inputs(module_path, search_path, found)]
                entry = {"inputs": inputs, "found": [list(item) for item in found]}
                store.put(key, json.dumps(entry).encode())
        return found

    scan.kimh_compile_cache = True  # type: ignore[attr-defined]
    finder.scan = scan


def enable() -> list[str]:
    """Install both caches unless switched off; say what happened (for -vvv)."""
    if os.environ.get(ENV_SWITCH, "1") == "0":
        return [f"off ({ENV_SWITCH}=0)"]
    from ansible._internal._templating._jinja_common import _TemplateConfig

    states = []
    jinja = EntryStore(
        cache_root() / "jinja-code",
        version_salt(
            distribution_version("jinja2"),
            distribution_version("ansible-core"),
            distribution_version("ansible"),
            f"embedded templates: {_TemplateConfig.allow_embedded_templates}",
        ),
    )
    if jinja.open():
        install_template_cache(jinja)
        states.append(f"templates in {jinja.directory}")
    else:
        states.append(f"templates not cached: {jinja.directory} {NOT_USABLE}")
    try:
        import ansible_mitogen.module_finder as finder
    except ImportError:
        return states
    scans = EntryStore(
        cache_root() / "mitogen-scan",
        version_salt(distribution_version("mitogen"), distribution_version("ansible-core")),
    )
    if scans.open():
        install_scan_cache(scans, finder)
        states.append(f"module scans in {scans.directory}")
    else:
        states.append(f"module scans not cached: {scans.directory} {NOT_USABLE}")
    return states


class CallbackModule(CallbackBase):
    CALLBACK_VERSION = 2.0
    CALLBACK_TYPE = "aggregate"
    CALLBACK_NAME = "kimh_compile_cache"
    CALLBACK_NEEDS_ENABLED = False

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        try:
            states = enable()
        except Exception as exc:  # a speed-up must never fail a run
            states = [f"off ({type(exc).__name__}: {exc})"]
        for state in states:
            self._display.vvv(f"kimh_compile_cache: {state}")
