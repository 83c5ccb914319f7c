"""The callback plugin that keeps compiled Jinja templates and Mitogen's module scans on disk
(playbooks/callback_plugins/kimh_compile_cache.py): an entry is used only while what it was
made from still holds, errors read as without it, and a run that finds everything cached
compiles nothing and renders the same."""

from __future__ import annotations

import importlib.util
import os
import sys
import types
from pathlib import Path

import jinja2
import pytest
from ansible._internal._templating._jinja_bits import AnsibleEnvironment
from controller_play import ROOT, output_of, run_playbook

PLUGIN = ROOT / "playbooks" / "callback_plugins" / "kimh_compile_cache.py"
TEMPLATE = "{{ x | default(1) | int }}{% if y is defined %} and {{ y | upper }}{% endif %}"


def load_plugin() -> types.ModuleType:
    spec = importlib.util.spec_from_file_location("kimh_compile_cache", PLUGIN)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def plugin(monkeypatch):
    # install_template_cache replaces two methods of AnsibleEnvironment: put them back after.
    monkeypatch.setattr(AnsibleEnvironment, "compile", AnsibleEnvironment.compile)
    monkeypatch.setattr(
        AnsibleEnvironment, "compile_expression", AnsibleEnvironment.compile_expression
    )
    return load_plugin()


@pytest.fixture
def generated(monkeypatch) -> list[str]:
    """Every template Jinja generates code for (what a cache hit skips)."""
    calls: list[str] = []
    original = jinja2.Environment._generate

    def spy(self, source, name, filename, defer_init=False):
        calls.append(name or "<string>")
        return original(self, source, name, filename, defer_init)

    monkeypatch.setattr(jinja2.Environment, "_generate", spy)
    return calls


def open_store(plugin, tmp_path: Path):
    store = plugin.EntryStore(tmp_path / "jinja-code", "set-1")
    assert store.open()
    plugin.install_template_cache(store)
    return store


def entries(store) -> list[Path]:
    return sorted(store.directory.iterdir())


def test_a_template_compiles_once_then_loads_the_same_code(plugin, generated, tmp_path):
    uncached = AnsibleEnvironment().compile(TEMPLATE)
    store = open_store(plugin, tmp_path)
    generated.clear()
    first = AnsibleEnvironment().compile(TEMPLATE)
    assert len(generated) == 1
    assert len(entries(store)) == 1
    # A new environment, as in the next worker: loaded from disk, not generated again.
    second = AnsibleEnvironment().compile(TEMPLATE)
    assert len(generated) == 1
    assert first == uncached
    assert second == uncached


def test_expressions_are_keyed_by_their_text(plugin, generated, tmp_path):
    store = open_store(plugin, tmp_path)
    generated.clear()
    AnsibleEnvironment().compile_expression("a + 1")
    AnsibleEnvironment().compile_expression("a + 2")
    assert len(generated) == 2
    assert len(entries(store)) == 2
    AnsibleEnvironment().compile_expression("a + 1")
    assert len(generated) == 2


def test_an_entry_whose_filter_is_gone_is_not_used(plugin, tmp_path):
    store = open_store(plugin, tmp_path)
    with_filter = AnsibleEnvironment()
    with_filter.filters["kimh_probe"] = lambda value: value
    with_filter.compile("{{ x | kimh_probe }}")
    assert len(entries(store)) == 1
    # Without the filter, Jinja's own compile-time error, as without the cache.
    with pytest.raises(jinja2.TemplateAssertionError, match="No filter named 'kimh_probe'"):
        AnsibleEnvironment().compile("{{ x | kimh_probe }}")


def test_an_entry_is_not_used_once_its_filter_wants_the_context(plugin, tmp_path):
    source = "{{ x | kimh_probe }}"

    def plain(value):
        return value

    @jinja2.pass_context
    def with_context(context, value):
        return value

    # Reference code, compiled before the cache is installed.
    plain_environment, context_environment = AnsibleEnvironment(), AnsibleEnvironment()
    plain_environment.filters["kimh_probe"] = plain
    context_environment.filters["kimh_probe"] = with_context
    expected_plain = plain_environment.compile(source)
    expected_context = context_environment.compile(source)
    assert expected_plain != expected_context  # Jinja passes the context in the code

    open_store(plugin, tmp_path)
    assert plain_environment.compile(source) == expected_plain
    assert context_environment.compile(source) == expected_context


def test_a_damaged_entry_is_compiled_again_and_replaced(plugin, generated, tmp_path):
    store = open_store(plugin, tmp_path)
    expected = AnsibleEnvironment().compile(TEMPLATE)
    (entry,) = entries(store)
    entry.write_bytes(b"\x00not marshal data")
    generated.clear()
    assert AnsibleEnvironment().compile(TEMPLATE) == expected
    assert len(generated) == 1
    assert entry.read_bytes() != b"\x00not marshal data"


def test_a_failing_cache_still_compiles(plugin, tmp_path, monkeypatch):
    expected = AnsibleEnvironment().compile(TEMPLATE)
    store = open_store(plugin, tmp_path)
    # The directory gone (a clean-up during the run): nothing is read or written, all compiles.
    for entry in entries(store):
        entry.unlink()
    store.directory.rmdir()
    assert AnsibleEnvironment().compile(TEMPLATE) == expected
    # Any error of the cache's own (here: the key) falls back to compiling.
    monkeypatch.setattr(plugin, "digest", lambda *parts: 1 / 0)
    assert AnsibleEnvironment().compile(TEMPLATE) == expected


def test_a_directory_others_can_write_or_own_is_not_used(plugin, tmp_path):
    store = plugin.EntryStore(tmp_path / "jinja-code", "set-1")
    assert store.open()
    store.directory.chmod(0o777)
    assert not store.open()
    store.directory.chmod(0o700)
    assert store.open()
    if os.geteuid() == 0:  # root can hand the directory to another user
        os.chown(store.directory, 65534, -1)
        assert not store.open()


def test_entries_of_other_versions_are_removed(plugin, tmp_path):
    old = plugin.EntryStore(tmp_path / "jinja-code", "set-0")
    assert old.open()
    old.put("key", b"data")
    current = plugin.EntryStore(tmp_path / "jinja-code", "set-1")
    assert current.open()
    assert not old.directory.exists()
    assert current.directory.is_dir()


def test_a_module_scan_is_reused_until_what_it_read_changes(plugin, tmp_path):
    module = tmp_path / "library" / "kimh_probe.py"
    utils = tmp_path / "module_utils"
    module.parent.mkdir()
    utils.mkdir()
    module.write_text("from ansible.module_utils.kimh_util import x\n")
    (utils / "kimh_util.py").write_text("x = 1\n")
    scans: list[str] = []

    def scan(module_name, module_path, search_path):
        scans.append(module_name)
        return [("ansible.module_utils.kimh_util", str(utils / "kimh_util.py"), False)]

    finder = types.SimpleNamespace(scan=scan)
    store = plugin.EntryStore(tmp_path / "mitogen-scan", "set-1")
    assert store.open()
    plugin.install_scan_cache(store, finder)
    arguments = ("kimh_probe", str(module), (str(utils),))

    expected = [("ansible.module_utils.kimh_util", str(utils / "kimh_util.py"), False)]
    assert finder.scan(*arguments) == expected
    assert finder.scan(*arguments) == expected
    assert len(scans) == 1
    stat = (utils / "kimh_util.py").stat()
    os.utime(utils / "kimh_util.py", ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    assert finder.scan(*arguments) == expected
    assert len(scans) == 2
    (utils / "kimh_other.py").write_text("y = 2\n")  # a new file where the scan looked
    assert finder.scan(*arguments) == expected
    assert len(scans) == 3
    assert finder.scan(*arguments) == expected
    assert len(scans) == 3


PLAY = (
    "- hosts: localhost\n  connection: local\n  gather_facts: false\n"
    f"  vars: {{ansible_python_interpreter: {sys.executable}, word: cache}}\n  tasks:\n"
    "    - ansible.builtin.debug:\n"
    "        msg: \"RENDERED={{ word | upper }}-{{ [3, 1, 2] | sort | join(',') }}\"\n"
    "      when: word is defined and word | length > 2\n"
)


def run(tmp_path: Path, cache_home: Path, switch: str = "1") -> str:
    result = run_playbook(
        tmp_path,
        PLAY,
        "-vvv",
        extra_env={"XDG_CACHE_HOME": str(cache_home), "KIMH_COMPILE_CACHE": switch},
    )
    output = output_of(result)
    assert result.returncode == 0, output
    assert '"msg": "RENDERED=CACHE-1,2,3"' in output, output
    return output


def files(directory: Path) -> set[tuple[str, int, int]]:
    return {(p.name, p.stat().st_ino, p.stat().st_mtime_ns) for p in directory.rglob("*")}


def test_a_second_run_compiles_nothing_and_renders_the_same(tmp_path):
    (tmp_path / "callback_plugins").symlink_to(ROOT / "playbooks" / "callback_plugins")
    cache_home = tmp_path / "cache"
    output = run(tmp_path, cache_home)
    code = cache_home / "ki-mail-helper" / "jinja-code"
    assert f"kimh_compile_cache: templates in {code}" in output, output
    first = files(code)
    # the version set's directory, the message and the condition (one expression each)
    assert len(first) >= 3
    assert sum(1 for p in code.rglob("*") if p.is_file()) >= 2
    run(tmp_path, cache_home)
    assert files(code) == first  # every template loaded; none written again


def test_switched_off_it_leaves_no_cache(tmp_path):
    (tmp_path / "callback_plugins").symlink_to(ROOT / "playbooks" / "callback_plugins")
    output = run(tmp_path, tmp_path / "cache", switch="0")
    assert "kimh_compile_cache: off (KIMH_COMPILE_CACHE=0)" in output, output
    assert not (tmp_path / "cache").exists()
