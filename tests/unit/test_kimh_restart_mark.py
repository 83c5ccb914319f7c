"""The kimh_restart_mark module (roles/kimh_files): the restart mark of celery_worker and
flower in one module run, on the controller itself (connection local). It records
`current`'s resolved target and the sha1 of the config file and CA (none when missing),
byte for byte as the `stat` + `copy` pair it replaces did, writes only when that or owner
and mode differ, supports check mode and --diff, and refuses bad input naming the path."""

from __future__ import annotations

import json
import os
import stat
import sys
from pathlib import Path

import pytest
from controller_play import output_of, run_playbook

HEADER = "# Managed by Ansible (role celery_worker): what the worker units were started with."
CONFIG = "broker = redis://localhost\n"
CONFIG_SHA1 = "8d358dc298ce6f6a60ccf7afc1353908b139e54d"  # sha1sum of CONFIG
OTHER_CONFIG = "broker = redis://elsewhere\n"
OTHER_CONFIG_SHA1 = "609c929e234e9c175dc99540aaec128ddce7a0eb"
CA = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"
CA_SHA1 = "f810aad0cd31d99523850ed550ee742eff2f5272"

# The two tasks the module replaces (roles/celery_worker/tasks/restart_mark.yml before it),
# with {root} for the test's tree.
OLD_TASKS = """
    - name: Read the release, configuration and Vault CA the units run with
      ansible.builtin.stat:
        path: "{{{{ item }}}}"
        get_checksum: true
      loop:
        - "{root}/opt/current"
        - "{root}/etc/mailhelper.conf"
        - "{root}/etc/vault-ca.pem"
      register: __celery_worker_inputs
    - name: Record them (restarts the units when they changed)
      ansible.builtin.copy:
        dest: "{root}/etc/worker.deployed"
        owner: root
        group: root
        mode: "0644"
        content: |
          # Managed by Ansible (role celery_worker): what the worker units were started with.
          release={{{{ __celery_worker_inputs.results[0].stat.lnk_source | default('none') }}}}
          config={{{{ __celery_worker_inputs.results[1].stat.checksum | default('none') }}}}
          vault_ca={{{{ __celery_worker_inputs.results[2].stat.checksum | default('none') }}}}
"""


def play(tasks: str) -> str:
    return (
        "- hosts: localhost\n  connection: local\n  gather_facts: false\n"
        f"  vars: {{ansible_python_interpreter: {sys.executable}}}\n"
        "  roles: [kimh_files]\n  tasks:\n" + tasks
    )


def mark_task(root: Path, **extra: str) -> str:
    """The new task as the role writes it (`extra`: options to add or replace), then a debug
    line with its result."""
    extra = {"dest": f"{root}/etc/worker.deployed"} | extra
    options = "".join(f"        {key}: {value}\n" for key, value in extra.items())
    return (
        "    - name: Mark\n      kimh_restart_mark:\n"
        f'        header: "{HEADER}"\n'
        "        inputs:\n"
        f"          - {{name: release, path: {root}/opt/current, kind: link}}\n"
        f"          - {{name: config, path: {root}/etc/mailhelper.conf, kind: checksum}}\n"
        f"          - {{name: vault_ca, path: {root}/etc/vault-ca.pem, kind: checksum}}\n"
        f"{options}"
        "      register: out\n"
        "    - name: Show\n"
        '      ansible.builtin.debug: {msg: "RESULT={{ out | to_json }}"}\n'
    )


def run_mark(tmp_path: Path, root: Path, *args: str, **extra: str) -> tuple[int, str, dict]:
    """(return code, output, the module's result) of one run of the new task."""
    result = run_playbook(tmp_path, play(mark_task(root, **extra)), *args)
    output = output_of(result)
    lines = [x for x in output.splitlines() if '"msg": "RESULT=' in x]
    if not lines:
        return result.returncode, output, {}
    message = json.loads(lines[0].split('"msg": ', 1)[1])  # the debug message, a JSON string
    return result.returncode, output, json.loads(message.removeprefix("RESULT="))


def recap(output: str) -> str:
    return next(x for x in output.splitlines() if x.startswith("localhost"))


@pytest.fixture
def root(tmp_path: Path) -> Path:
    """A deployment: releases 1 and 2, `current` -> releases/1 (relative), config and CA."""
    tree = (tmp_path / "root").resolve()
    for release in ("1", "2"):
        (tree / "opt/releases" / release).mkdir(parents=True)
    (tree / "opt/current").symlink_to("releases/1")
    (tree / "etc").mkdir()
    (tree / "etc/mailhelper.conf").write_text(CONFIG)
    (tree / "etc/vault-ca.pem").write_text(CA)
    return tree


def expected_mark(root: Path, release: str = "1", config: str = CONFIG_SHA1) -> str:
    """The mark the old template wrote, written out."""
    return (
        "# Managed by Ansible (role celery_worker): what the worker units were started with.\n"
        f"release={root}/opt/releases/{release}\n"
        f"config={config}\n"
        f"vault_ca={CA_SHA1}\n"
    )


def switch_release(root: Path, release: str) -> None:
    (root / "opt/current.new").symlink_to(f"releases/{release}")
    os.replace(root / "opt/current.new", root / "opt/current")


def test_first_run_writes_the_mark_and_the_second_changes_nothing(
    tmp_path: Path, root: Path
) -> None:
    mark = root / "etc/worker.deployed"
    rc, output, result = run_mark(tmp_path, root)
    assert rc == 0, output
    assert result["changed"] is True
    assert result["changes"] == ["created"]
    assert result["values"] == {
        "release": f"{root}/opt/releases/1",
        "config": CONFIG_SHA1,
        "vault_ca": CA_SHA1,
    }
    assert mark.read_text() == expected_mark(root)
    st = mark.stat()
    assert (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)) == (0, 0, 0o644)

    mtime = st.st_mtime_ns
    rc, output, result = run_mark(tmp_path, root)
    assert rc == 0, output
    assert "changed=0" in recap(output), output
    assert result["changes"] == []
    assert mark.stat().st_mtime_ns == mtime
    assert not [p for p in (root / "etc").iterdir() if p.name.startswith(".kimh_restart_mark.")]


def test_a_new_release_a_new_config_or_a_missing_file_change_the_mark(
    tmp_path: Path, root: Path
) -> None:
    mark = root / "etc/worker.deployed"
    assert run_mark(tmp_path, root)[0] == 0

    switch_release(root, "2")
    rc, output, result = run_mark(tmp_path, root)
    assert rc == 0, output
    assert "changed=1" in recap(output), output
    assert result["changes"] == ["content"]
    assert mark.read_text() == expected_mark(root, release="2")

    (root / "etc/mailhelper.conf").write_text(OTHER_CONFIG)
    rc, output, result = run_mark(tmp_path, root)
    assert rc == 0, output
    assert result["changes"] == ["content"]
    assert mark.read_text() == expected_mark(root, release="2", config=OTHER_CONFIG_SHA1)

    (root / "etc/vault-ca.pem").unlink()
    (root / "opt/current").unlink()
    rc, output, result = run_mark(tmp_path, root)
    assert rc == 0, output
    assert result["changes"] == ["content"]
    assert mark.read_text() == (
        f"{HEADER}\nrelease=none\nconfig={OTHER_CONFIG_SHA1}\nvault_ca=none\n"
    )


def test_mode_and_owner_drift_is_put_right(tmp_path: Path, root: Path) -> None:
    mark = root / "etc/worker.deployed"
    assert run_mark(tmp_path, root)[0] == 0
    os.chmod(mark, 0o600)
    rc, output, result = run_mark(tmp_path, root)
    assert rc == 0, output
    assert result["changes"] == ["mode"]
    assert stat.S_IMODE(mark.stat().st_mode) == 0o644

    os.chown(mark, 65534, 65534)
    rc, output, result = run_mark(tmp_path, root)
    assert rc == 0, output
    assert result["changes"] == ["owner"]
    assert (mark.stat().st_uid, mark.stat().st_gid) == (0, 0)
    assert mark.read_text() == expected_mark(root)


def test_check_mode_reports_and_writes_nothing(tmp_path: Path, root: Path) -> None:
    mark = root / "etc/worker.deployed"
    rc, output, result = run_mark(tmp_path, root, "--check")
    assert rc == 0, output
    assert "changed=1" in recap(output), output
    assert result["changes"] == ["created"]
    assert not mark.exists()

    assert run_mark(tmp_path, root)[0] == 0
    switch_release(root, "2")
    os.chmod(mark, 0o600)
    rc, output, result = run_mark(tmp_path, root, "--check", "--diff")
    assert rc == 0, output
    assert result["changes"] == ["content"]
    assert f"-release={root}/opt/releases/1" in output
    assert f"+release={root}/opt/releases/2" in output
    assert mark.read_text() == expected_mark(root, release="1")
    assert stat.S_IMODE(mark.stat().st_mode) == 0o600


def test_check_mode_counts_a_missing_directory_as_made_by_an_earlier_task(
    tmp_path: Path, root: Path
) -> None:
    rc, output, result = run_mark(tmp_path, root, "--check", dest=f"{root}/new/worker.deployed")
    assert rc == 0, output
    assert result["changes"] == ["created"]
    assert not (root / "new").exists()


@pytest.mark.parametrize(
    "state",
    ["deployed", "no ca", "config is a link", "current is a directory", "current dangles"],
)
def test_the_mark_is_the_one_the_stat_and_copy_pair_wrote(
    tmp_path: Path, root: Path, state: str
) -> None:
    """After the switch, a deployment's mark stays as it is: no restart."""
    if state == "no ca":
        (root / "etc/vault-ca.pem").unlink()
    elif state == "config is a link":  # stat does not follow it: no checksum
        (root / "etc/mailhelper.conf").rename(root / "etc/real.conf")
        (root / "etc/mailhelper.conf").symlink_to("real.conf")
    elif state == "current is a directory":
        (root / "opt/current").unlink()
        (root / "opt/current").mkdir()
    elif state == "current dangles":
        switch_release(root, "3")
    old = run_playbook(tmp_path, play(OLD_TASKS.format(root=root)))
    assert old.returncode == 0, output_of(old)
    written = (root / "etc/worker.deployed").read_bytes()
    if state == "deployed":
        assert written == expected_mark(root).encode()

    rc, output, result = run_mark(tmp_path, root)
    assert rc == 0, output
    assert "changed=0" in recap(output), (written, output)
    assert result["changes"] == []
    assert (root / "etc/worker.deployed").read_bytes() == written


def test_bad_input_is_refused_naming_the_cause(tmp_path: Path, root: Path) -> None:
    (root / "etc/link.deployed").symlink_to("worker.deployed")
    cases = {
        f"{root}/missing/worker.deployed": {"dest": f"{root}/missing/worker.deployed"},
        f"{root}/etc/link.deployed exists and is not a regular file": {
            "dest": f"{root}/etc/link.deployed"
        },
        "no user 'nosuchuser'": {"owner": "nosuchuser"},
        "mode must be octal": {"mode": "u=rw"},
    }
    for expected, extra in cases.items():
        result = run_playbook(tmp_path, play(mark_task(root, **extra)))
        output = output_of(result)
        assert result.returncode != 0, output
        assert expected in output, output
    assert not (root / "etc/worker.deployed").exists()
    assert not (root / "missing").exists()


def test_an_input_name_that_is_no_word_or_twice_is_refused(tmp_path: Path, root: Path) -> None:
    dest = f"{root}/etc/worker.deployed"
    for inputs, expected in (
        ('[{name: "a=b", path: /x, kind: link}]', f"{dest}: input name 'a=b' is not a word"),
        (
            "[{name: a, path: /x, kind: link}, {name: a, path: /y, kind: checksum}]",
            f"{dest}: input name 'a' is given twice",
        ),
    ):
        task = (
            f"    - name: Mark\n      kimh_restart_mark:\n        dest: {dest}\n"
            f"        inputs: {inputs}\n"
        )
        result = run_playbook(tmp_path, play(task))
        output = output_of(result)
        assert result.returncode != 0, output
        assert expected in output, output
    assert not Path(dest).exists()
