#!/usr/bin/env python3
"""What one Ansible task costs over the Docker connection, by kind (issue #6's budget).

A no-change site.yml is a few hundred tasks, so its wall time is about (tasks x cost per
task). This prints that cost for the kinds of task the roles use, measured in one run side
by side on a fresh container of the base image:

- a controller-only task (assert/debug): no round trip to the host;
- a module task (stat): one Docker exec that runs Python with the AnsiballZ payload;
- an unchanged copy, with `ansible_remote_tmp` as `~/.ansible/tmp` and as an absolute path:
  copy (like template and uri) makes a temporary directory first (`echo ~` to expand the
  path, `mkdir`), runs stat and file, and removes the directory again;
- the module and the copy again under the bundle's strategy (ansible.cfg: Mitogen over the
  `docker` connection) beside plain `linear` over the Docker API.

Usage: .venv/bin/python tests/bench/task_cost.py [--tasks 40] [--rounds 2]
Needs the Docker engine and the base image (`make setup`). Prints a table; asserts nothing.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
CONTAINER = f"kimh-bench-tasks-{os.getpid()}"

TASKS = {
    "controller only (assert)": (
        "ansible.builtin.assert:\n        that: true\n        quiet: true"
    ),
    "module (stat)": "ansible.builtin.stat:\n        path: /etc/hostname",
    "unchanged copy": (
        'ansible.builtin.copy:\n        content: "same\\n"\n        dest: /root/bench.txt\n'
        '        owner: root\n        group: root\n        mode: "0644"'
    ),
}


def base_image() -> str:
    tag = os.environ.get("KIMH_BASE_IMAGE")
    if tag:
        return tag
    build = ROOT / "tests/harness/base-image/build.sh"
    return subprocess.run(
        [str(build), "--print-tag"], check=True, capture_output=True, text=True
    ).stdout.strip()


def playbook(body: str, count: int) -> str:
    tasks = "".join(f"    - name: task {i}\n      {body}\n" for i in range(count))
    return f"- name: Bench\n  hosts: all\n  gather_facts: false\n  tasks:\n{tasks}"


# How a case reaches the host: (strategy, connection).
LINEAR = ("linear", "community.docker.docker_api")
MITOGEN = ("mitogen_linear", "docker")


def run(path: Path, inventory: Path, remote_tmp: str, how: tuple[str, str] = LINEAR) -> float:
    env = dict(
        os.environ,
        ANSIBLE_CONFIG=str(ROOT / "ansible.cfg"),
        ANSIBLE_CALLBACK_PLUGINS=str(ROOT / "playbooks/callback_plugins"),
        ANSIBLE_CALLBACKS_ENABLED="ansible.posix.timer",
        ANSIBLE_STRATEGY=how[0],
        NO_COLOR="1",
    )
    cmd = [
        str(ROOT / ".venv/bin/ansible-playbook"),
        "-i",
        str(inventory),
        str(path),
        "-e",
        f"ansible_remote_tmp={remote_tmp}",
        "-e",
        f"ansible_connection={how[1]}",
    ]
    start = time.monotonic()
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    took = time.monotonic() - start
    if done.returncode != 0:
        sys.exit(f"ansible-playbook failed:\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}")
    return took


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=40, help="tasks per playbook")
    parser.add_argument("--rounds", type=int, default=2, help="runs of each case")
    args = parser.parse_args()
    subprocess.run(
        ["docker", "run", "-d", "--name", CONTAINER, base_image(), "sleep", "infinity"],
        check=True,
        capture_output=True,
    )
    try:
        with tempfile.TemporaryDirectory() as tmp:
            work = Path(tmp)
            inventory = work / "hosts.yml"
            inventory.write_text(
                "all:\n  hosts:\n"
                f"    {CONTAINER}:\n"
                "      ansible_python_interpreter: /usr/bin/python3\n"
            )
            absolute = "/root/.ansible/tmp"
            cases = [(name, body, absolute, LINEAR) for name, body in TASKS.items()]
            tilde = ("unchanged copy, remote_tmp ~", TASKS["unchanged copy"], "~/.ansible/tmp")
            cases.append((*tilde, LINEAR))
            for name in ("module (stat)", "unchanged copy"):
                cases.append((f"{name}, Mitogen", TASKS[name], absolute, MITOGEN))
            one = work / "one.yml"
            one.write_text(playbook(TASKS["module (stat)"], 1))
            many = {name: work / f"case{i}.yml" for i, (name, *_) in enumerate(cases)}
            for (_name, body, *_), path in zip(cases, many.values(), strict=True):
                path.write_text(playbook(body, args.tasks))
            run(many["unchanged copy"], inventory, "/root/.ansible/tmp")  # create the file
            results: dict[str, list[float]] = {name: [] for name, *_ in cases}
            startup: dict[tuple[str, str], list[float]] = {LINEAR: [], MITOGEN: []}
            for _ in range(args.rounds):
                for how, times in startup.items():
                    times.append(run(one, inventory, absolute, how))
                for name, _, remote_tmp, how in cases:
                    results[name].append(run(many[name], inventory, remote_tmp, how))
        base = {how: min(times) for how, times in startup.items()}
        print(
            f"ansible-playbook with one stat task: {base[LINEAR]:.2f} s linear, "
            f"{base[MITOGEN]:.2f} s Mitogen (start-up, subtracted)"
        )
        print(f"{'task kind':34} {'per task':>10}   ({args.tasks} tasks, best of {args.rounds})")
        for name, _, _, how in cases:
            per_task = (min(results[name]) - base[how]) / args.tasks
            print(f"{name:34} {per_task * 1000:8.0f} ms")
        load = Path("/proc/loadavg").read_text().split()[:3]
        print(f"load average at the end: {' '.join(load)}")
    finally:
        subprocess.run(["docker", "rm", "-f", CONTAINER], capture_output=True, check=False)


if __name__ == "__main__":
    main()
