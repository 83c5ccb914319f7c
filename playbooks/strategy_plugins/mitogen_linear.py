"""Ansible's linear strategy with Mitogen's connection layer (the `mitogen` package).

The bundle's ansible.cfg selects this strategy. Mitogen keeps one Python interpreter per host
for the whole run and runs each module in it, instead of one `docker exec` (or SSH command)
plus a fresh interpreter per task: a no-change `site.yml` on the local inventory takes about
half as long (tests/bench/local_deploy.sh). Task order, results and `changed` are Ansible's;
only the transport differs. Mitogen accelerates the connections it knows by their short
names (`ssh`, `docker`, `local`, ...); any other connection runs as with plain `linear`.

To run without Mitogen: `ANSIBLE_STRATEGY=linear ansible-playbook ...`.
"""

from __future__ import annotations

from ansible.errors import AnsibleError

try:
    import ansible_mitogen.loaders
    import ansible_mitogen.strategy
except ImportError as exc:
    raise AnsibleError(
        "strategy mitogen_linear needs the `mitogen` package of the controller's virtualenv "
        f"({exc}); run `make setup`, or run without it: ANSIBLE_STRATEGY=linear"
    ) from exc

DOCUMENTATION = """
name: mitogen_linear
short_description: linear strategy over Mitogen connections
description:
  - Ansible's linear strategy, with the connection and action plugins wrapped by Mitogen.
"""

_Linear = ansible_mitogen.loaders.strategy_loader.get("linear", class_only=True)


class StrategyModule(ansible_mitogen.strategy.StrategyMixin, _Linear):
    """Linear task order; modules run in Mitogen's per-host interpreter."""
