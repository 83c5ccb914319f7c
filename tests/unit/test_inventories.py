"""The shipped inventories parse, have every tier's group and exactly one beat, and the
playbooks pass Ansible's syntax check against each of them."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
INVENTORIES = ["local", "staging", "production"]
TIERS = {"vault", "postgresql", "redis", "app", "workers", "flower"}
PLAYBOOKS = sorted(p.name for p in (ROOT / "playbooks").glob("*.yml"))


def env() -> dict[str, str]:
    return dict(os.environ, ANSIBLE_CONFIG=str(ROOT / "ansible.cfg"), NO_COLOR="1")


def inventory(name: str) -> dict:
    proc = subprocess.run(
        [str(BIN / "ansible-inventory"), "-i", f"inventories/{name}", "--list"],
        cwd=ROOT,
        env=env(),
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


@pytest.mark.parametrize("name", INVENTORIES)
def test_every_tier_has_hosts(name: str) -> None:
    data = inventory(name)
    for group in TIERS:
        assert data.get(group, {}).get("hosts"), f"{name}: group {group} has no host"


@pytest.mark.parametrize("name", INVENTORIES)
def test_exactly_one_beat(name: str) -> None:
    data = inventory(name)
    hostvars = data["_meta"]["hostvars"]
    beats = [
        h for h in data["workers"]["hosts"] if hostvars.get(h, {}).get("celery_worker_beat_enabled")
    ]
    assert len(beats) == 1, f"{name}: beat on {beats}"


@pytest.mark.parametrize("name", INVENTORIES)
def test_no_plain_secret_in_inventory_files(name: str) -> None:
    for path in (ROOT / "inventories" / name).rglob("*.yml"):
        for line in path.read_text().splitlines():
            if line.lstrip().startswith("#"):
                continue
            key = line.split(":", 1)[0].strip().lower()
            if any(word in key for word in ("password", "secret", "token")) and ":" in line:
                value = line.split(":", 1)[1].strip()
                assert value in ("", ">-") or "lookup(" in value or value.startswith("!vault"), (
                    f"{path}: {line.strip()}"
                )


@pytest.mark.parametrize("name", INVENTORIES)
@pytest.mark.parametrize("playbook", PLAYBOOKS)
def test_playbook_syntax(name: str, playbook: str) -> None:
    proc = subprocess.run(
        [
            str(BIN / "ansible-playbook"),
            "-i",
            f"inventories/{name}",
            "--syntax-check",
            f"playbooks/{playbook}",
        ],
        cwd=ROOT,
        env=env(),
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
