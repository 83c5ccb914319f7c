"""ansible.cfg sets inject_facts_as_vars = false: facts exist only under ansible_facts.
A role or playbook that reads a fact by its injected name (ansible_hostname instead of
ansible_facts['hostname']) would get an undefined variable under this configuration, so
none may. The fact names are the ones the setup module really returns (on the controller)."""

from __future__ import annotations

import configparser
import json
import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
ROLE_PARTS = ("tasks", "handlers", "templates", "defaults", "vars", "meta")


def injected_fact_names() -> set[str]:
    proc = subprocess.run(
        [str(BIN / "ansible"), "localhost", "-c", "local", "-m", "ansible.builtin.setup", "-o"],
        cwd=ROOT,
        env=dict(
            os.environ,
            ANSIBLE_CONFIG=str(ROOT / "ansible.cfg"),
            NO_COLOR="1",
            ANSIBLE_STRATEGY="linear",
        ),
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    facts = json.loads(proc.stdout.split("=>", 1)[1])["ansible_facts"]
    return {name for name in facts if name.startswith("ansible_")}


def sources() -> list[Path]:
    files = [p for p in (ROOT / "playbooks").rglob("*") if p.suffix in (".yml", ".j2")]
    files += [p for p in (ROOT / "inventories").rglob("*.yml")]
    for role in (ROOT / "roles").iterdir():
        for part in ROLE_PARTS:
            files += [p for p in (role / part).rglob("*") if p.suffix in (".yml", ".j2")]
    return sorted(files)


def test_the_configuration_injects_no_facts() -> None:
    config = configparser.ConfigParser()
    config.read(ROOT / "ansible.cfg")
    assert config.getboolean("defaults", "inject_facts_as_vars") is False


def test_no_role_or_playbook_reads_an_injected_fact_name() -> None:
    names = injected_fact_names()
    assert {"ansible_hostname", "ansible_default_ipv4", "ansible_fqdn"} <= names
    # a quoted name is a key (ansible_facts['ansible_local'] is how local facts are read)
    alternatives = "|".join(sorted(names, key=len, reverse=True))
    pattern = re.compile(r"(?<!['\"\w])(" + alternatives + r")\b")
    found = []
    for path in sources():
        for number, line in enumerate(path.read_text().splitlines(), 1):
            if line.lstrip().startswith("#"):
                continue
            # a setup module's filter names facts, it does not read them
            if re.match(r"\s*filter:", line):
                continue
            for match in pattern.finditer(line):
                found.append(f"{path.relative_to(ROOT)}:{number}: {match.group(1)}")
    assert not found, "read these as ansible_facts['...'] instead:\n" + "\n".join(found)
