"""Load the plugins every task needs once, in the controller's main process.

Ansible runs each task in a worker process forked from the main process. Plugins the main
process has not loaded (the connection plugin, the action plugins of template, copy, uri...)
are loaded again in every fork: about 0.08 s per task over the Docker connection (measured
with the plain linear strategy). The same holds for Jinja's filters and tests: the first
template a worker renders imports and wraps every filter and test module of ansible-core,
in every fork. Loading them before the first fork lets every worker inherit them. It
changes no result and prints only at -vvv.

Ansible loads it by itself for every playbook in this directory (plugins next to a
playbook); a plugin that cannot be loaded here is simply loaded by the worker as before.
"""

from __future__ import annotations

from typing import Any

from ansible.plugins.callback import CallbackBase
from ansible.plugins.loader import (
    action_loader,
    connection_loader,
    filter_loader,
    lookup_loader,
    shell_loader,
    test_loader,
)

DOCUMENTATION = """
name: kimh_warm_plugins
type: aggregate
short_description: load connection and action plugins before the first worker forks
description:
  - Loads the connection, action and lookup plugins the bundle's playbooks use, and
    ansible-core's Jinja filters and tests, in the main process, so that forked workers
    inherit them instead of importing them for every task.
"""

CONNECTIONS = (
    "community.docker.docker",  # the local and stack inventories (`docker`) without Mitogen
    "community.docker.docker_api",  # tests/bench/task_cost.py
    "ansible.builtin.ssh",
    "ansible.builtin.local",
)
ACTIONS = (
    "ansible.builtin.normal",  # every module without an action plugin of its own
    "ansible.builtin.template",
    "ansible.builtin.copy",
    "ansible.builtin.uri",
    "ansible.builtin.command",
    "ansible.builtin.assert",
    "ansible.builtin.set_fact",
    "ansible.builtin.debug",
    "ansible.builtin.fail",
    "ansible.builtin.package",
    "ansible.builtin.service",
    "ansible.builtin.unarchive",
    "ansible.builtin.validate_argument_spec",
    "ansible.builtin.gather_facts",
)
LOOKUPS = (
    "ansible.builtin.env",
    "ansible.builtin.file",
    "ansible.builtin.fileglob",
    "ansible.builtin.password",
    "ansible.builtin.pipe",
    "ansible.builtin.template",
    "ansible.builtin.varnames",
    "ansible.builtin.vars",
)
# One name each: looking up any builtin filter (test) wraps all of ansible-core's at once.
JINJA = ((filter_loader, "ansible.builtin.to_json"), (test_loader, "ansible.builtin.file"))


def warm_plugins() -> list[str]:
    """Load the plugins above; return the names that could not be loaded (for -vvv)."""
    missing: list[str] = []
    for name in CONNECTIONS:
        if connection_loader.get(name, class_only=True) is None:
            missing.append(name)
    for name in ACTIONS:
        if action_loader.get(name, class_only=True) is None:
            missing.append(name)
    for name in LOOKUPS:
        if lookup_loader.get(name, class_only=True) is None:
            missing.append(name)
    for loader, name in JINJA:
        if loader.get(name) is None:
            missing.append(name)
    shell_loader.get("ansible.builtin.sh")
    return missing


class CallbackModule(CallbackBase):
    CALLBACK_VERSION = 2.0
    CALLBACK_TYPE = "aggregate"
    CALLBACK_NAME = "kimh_warm_plugins"
    CALLBACK_NEEDS_ENABLED = False

    def v2_playbook_on_start(self, playbook: Any) -> None:
        try:
            missing = warm_plugins()
        except Exception as exc:  # a speed-up must never fail a run
            self._display.vvv(f"kimh_warm_plugins: not preloaded ({type(exc).__name__}: {exc})")
            return
        if missing:
            self._display.vvv(f"kimh_warm_plugins: not found: {', '.join(missing)}")
        loaded = len(CONNECTIONS) + len(ACTIONS) + len(LOOKUPS) + len(JINJA) - len(missing)
        self._display.vvv(f"kimh_warm_plugins: {loaded} plugins loaded before the first fork")
