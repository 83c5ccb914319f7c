"""The kimh_files module (roles/kimh_files): several files and directories in one module
run, on the controller itself (connection local). It writes what differs and nothing else,
fixes owner and mode drift, shows diffs but never a secret, supports check mode, and
refuses bad input naming the path, leaving nothing half written."""

from __future__ import annotations

import base64
import json
import os
import stat
import sys
from pathlib import Path

from controller_play import output_of, run_playbook

SECRET = "s3cret-value-QpZr81"


def play(tmp_path: Path, body: str) -> str:
    """A play on localhost that loads the kimh_files role (its module) and runs `body`."""
    return (
        "- hosts: localhost\n  connection: local\n  gather_facts: false\n"
        f"  vars: {{ansible_python_interpreter: {sys.executable}}}\n"
        "  roles: [kimh_files]\n  tasks:\n"
        "    - name: Bulk\n      kimh_files:\n"
        + "".join(f"        {line}\n" for line in body.strip("\n").splitlines())
        + "      register: out\n"
        "    - name: Show\n"
        '      ansible.builtin.debug: {msg: "PATHS={{ out.changed_paths | to_json }}"}\n'
    )


def files_body(root: Path, value: str = "1", secret: str = SECRET, mode: str = "0640") -> str:
    return f"""
directories:
  - {{path: {root}/etc/app, mode: "0750"}}
files:
  - {{dest: {root}/etc/app/app.conf, content: "value={value}\\n", mode: "{mode}"}}
  - {{dest: {root}/etc/app/other.conf, content: "other\\n", mode: "0644", owner: nobody}}
secret_files:
  - {{dest: {root}/etc/app/token, content_base64: "{b64(secret + chr(10))}", mode: "0600"}}
"""


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def changed_paths(output: str) -> dict[str, list[str]]:
    line = next(x for x in output.splitlines() if '"msg": "PATHS=' in x)
    message = json.loads(line.split('"msg": ', 1)[1])  # the debug message, a JSON string
    return json.loads(message.removeprefix("PATHS="))


def recap(output: str) -> str:
    return next(x for x in output.splitlines() if x.startswith("localhost"))


def test_writes_what_differs_and_nothing_else(tmp_path: Path) -> None:
    root = tmp_path / "root"
    (root / "etc").mkdir(parents=True)
    first = run_playbook(tmp_path, play(tmp_path, files_body(root)))
    assert first.returncode == 0, output_of(first)
    app = root / "etc/app"
    assert stat.S_IMODE(app.stat().st_mode) == 0o750
    assert (app / "app.conf").read_text() == "value=1\n"
    assert stat.S_IMODE((app / "app.conf").stat().st_mode) == 0o640
    assert (app / "other.conf").stat().st_uid == 65534  # nobody
    assert (app / "token").read_text() == f"{SECRET}\n"
    assert stat.S_IMODE((app / "token").stat().st_mode) == 0o600
    assert changed_paths(output_of(first))[str(app / "token")] == ["created"]

    again = run_playbook(tmp_path, play(tmp_path, files_body(root)))
    assert "changed=0" in recap(output_of(again)), output_of(again)

    other_mtime = (app / "other.conf").stat().st_mtime_ns
    third = run_playbook(tmp_path, play(tmp_path, files_body(root, value="2")))
    assert "changed=1" in recap(output_of(third)), output_of(third)
    assert changed_paths(output_of(third)) == {str(app / "app.conf"): ["content"]}
    assert (app / "app.conf").read_text() == "value=2\n"
    assert stat.S_IMODE((app / "app.conf").stat().st_mode) == 0o640
    assert (app / "other.conf").stat().st_mtime_ns == other_mtime
    assert not [p for p in app.iterdir() if p.name.startswith(".kimh_files.")]


def test_owner_and_mode_drift_is_put_right(tmp_path: Path) -> None:
    root = tmp_path / "root"
    (root / "etc").mkdir(parents=True)
    assert run_playbook(tmp_path, play(tmp_path, files_body(root))).returncode == 0
    conf = root / "etc/app/app.conf"
    os.chmod(conf, 0o604)
    os.chown(root / "etc/app/other.conf", 0, 0)
    result = run_playbook(tmp_path, play(tmp_path, files_body(root)))
    assert result.returncode == 0, output_of(result)
    assert changed_paths(output_of(result)) == {
        str(conf): ["mode"],
        str(root / "etc/app/other.conf"): ["owner"],
    }
    assert stat.S_IMODE(conf.stat().st_mode) == 0o640
    assert (root / "etc/app/other.conf").stat().st_uid == 65534


def test_check_mode_reports_and_writes_nothing(tmp_path: Path) -> None:
    root = tmp_path / "root"
    (root / "etc").mkdir(parents=True)
    result = run_playbook(tmp_path, play(tmp_path, files_body(root)), "--check")
    assert result.returncode == 0, output_of(result)
    assert "changed=1" in recap(output_of(result))
    assert not (root / "etc/app").exists()


def test_diff_shows_files_but_never_a_secret(tmp_path: Path) -> None:
    root = tmp_path / "root"
    (root / "etc").mkdir(parents=True)
    assert run_playbook(tmp_path, play(tmp_path, files_body(root))).returncode == 0
    other_secret = "an0ther-secret-Wx93"
    result = run_playbook(
        tmp_path, play(tmp_path, files_body(root, value="7", secret=other_secret)), "--diff", "-vvv"
    )
    output = output_of(result)
    assert result.returncode == 0, output
    assert "+value=7" in output
    assert "-value=1" in output
    for secret in (SECRET, other_secret):
        assert secret not in output
        assert b64(secret + "\n") not in output  # the form the module receives
    assert (root / "etc/app/token").read_text() == f"{other_secret}\n"


def test_bad_input_is_refused_naming_the_cause(tmp_path: Path) -> None:
    root = tmp_path / "root"
    root.mkdir()
    (root / "link").symlink_to(root / "elsewhere")
    cases = {
        f"{root}/missing/app.conf": (
            f'- {{dest: {root}/missing/app.conf, content: "x", mode: "0644"}}'
        ),
        f"{root}/link": f'- {{dest: {root}/link, content: "x", mode: "0644"}}',
        "no user 'nosuchuser'": (
            f'- {{dest: {root}/a.conf, content: "x", mode: "0644", owner: nosuchuser}}'
        ),
        "mode must be octal": f'- {{dest: {root}/b.conf, content: "x", mode: "u=rw"}}',
    }
    for expected, item in cases.items():
        result = run_playbook(tmp_path, play(tmp_path, f"files:\n  {item}\n"))
        output = output_of(result)
        assert result.returncode != 0, output
        assert expected in output, output
    assert sorted(p.name for p in root.iterdir()) == ["link"]  # nothing written
