"""Ansible module: several read requests against the Vault/OpenBao HTTP API in one go.

The role's reconciliation reads a few dozen paths; one module run instead of one per path
keeps a run short. The token arrives in the module arguments (never on a command line) and
is marked no_log.
"""

import json
import ssl
import urllib.error
import urllib.request

from ansible.module_utils.basic import AnsibleModule

DOCUMENTATION = r"""
module: vault_read_many
short_description: GET several Vault/OpenBao API paths, return status and JSON of each
options:
  addr: {type: str, required: true, description: Base address, e.g. https://127.0.0.1:8200}
  ca_path: {type: path, required: true, description: CA file to verify the server with}
  token: {type: str, required: true, no_log: true, description: Vault token}
  paths:
    type: dict
    required: true
    description: name -> API path below /v1/ (no leading slash)
"""


def get(addr: str, path: str, token: str, context: ssl.SSLContext) -> dict:
    request = urllib.request.Request(  # noqa: S310 - addr is checked to be https:// below
        f"{addr}/v1/{path}", headers={"X-Vault-Token": token}, method="GET"
    )
    try:
        with urllib.request.urlopen(request, context=context, timeout=30) as resp:  # noqa: S310
            body = resp.read()
            status = resp.status
    except urllib.error.HTTPError as exc:
        body = exc.read()
        status = exc.code
    try:
        data = json.loads(body) if body else {}
    except ValueError:
        data = {}
    return {"status": status, "json": data}


def main() -> None:
    module = AnsibleModule(
        argument_spec={
            "addr": {"type": "str", "required": True},
            "ca_path": {"type": "path", "required": True},
            "token": {"type": "str", "required": True, "no_log": True},
            "paths": {"type": "dict", "required": True},
        },
        supports_check_mode=True,
    )
    addr = module.params["addr"].rstrip("/")
    if not addr.startswith("https://"):
        module.fail_json(msg="addr must be an https:// URL")
    context = ssl.create_default_context(cafile=module.params["ca_path"])
    results = {}
    for name, path in module.params["paths"].items():
        try:
            results[name] = get(addr, str(path), module.params["token"], context)
        except (urllib.error.URLError, OSError) as exc:
            module.fail_json(msg=f"request for {name} failed: {exc}")
    module.exit_json(changed=False, responses=results)


if __name__ == "__main__":
    main()
