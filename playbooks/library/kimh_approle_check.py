"""Ansible module: trust the Vault CA and check a host's AppRole credentials, in one run.

A play makes a host a Vault client for an AppRole (tasks/vault_client.yml). On a run that
changes nothing that used to take five module runs per AppRole: copy the CA into the trust
store, read the role_id and the secret_id files, log in with them and revoke the token of
that login. This module does all of it on the host:

- writes the CA (`ca_pem`) to `ca_path` when it differs (root:root 0644, atomically);
- reads `role_id_path` and `secret_id_path`;
- logs in from the host itself (a secret_id can be bound to the host's address), verifying
  the server against that CA, and revokes the token of the login at once.

It returns `valid` and, only then, the credentials (the task must be no_log). A login that
Vault refuses (400/403), or missing files, are an answer (`valid: false` with a `reason`),
not a failure. Anything else is returned as `error` (unreachable server, TLS, another
status), never as a module failure: a failure of a no_log task would hide its message, so
the play checks `error` in a task of its own and shows it.
"""

import json
import os
import ssl
import tempfile
import urllib.error
import urllib.request

from ansible.module_utils.basic import AnsibleModule

DOCUMENTATION = r"""
module: kimh_approle_check
short_description: Trust the Vault CA and check a host's AppRole credentials in one run
options:
  vault_addr:
    type: str
    required: true
    description: The cluster's address as the host reaches it (https://host:8200).
  mount:
    type: str
    default: approle
    description: The AppRole auth mount.
  ca_pem:
    type: str
    required: true
    description: The Vault CA certificate (PEM); written to ca_path and used to verify TLS.
  ca_path:
    type: path
    required: true
    description: Where the CA goes in the host's trust store.
  role_id_path:
    type: path
    required: true
  secret_id_path:
    type: path
    required: true
  timeout:
    type: int
    default: 30
"""

_OPTIONS = {
    "vault_addr": {"type": "str", "required": True},
    "mount": {"type": "str", "default": "approle"},
    "ca_pem": {"type": "str", "required": True},
    "ca_path": {"type": "path", "required": True},
    "role_id_path": {"type": "path", "required": True},
    "secret_id_path": {"type": "path", "required": True},
    "timeout": {"type": "int", "default": 30},
}


class VaultError(Exception):
    """Vault could not answer the question (unreachable, TLS, unexpected status)."""


def _ensure_ca(path: str, pem: str, check_mode: bool) -> bool:
    """Write the CA when the file differs; True when it did (or would)."""
    wanted = pem.strip().encode() + b"\n"
    try:
        with open(path, "rb") as handle:
            current = handle.read()
        st = os.stat(path)
        if current == wanted and st.st_uid == 0 and st.st_gid == 0 and st.st_mode & 0o7777 == 0o644:
            return False
    except FileNotFoundError:
        pass
    if check_mode:
        return True
    directory = os.path.dirname(path)
    if not os.path.isdir(directory):
        raise VaultError(f"{directory} does not exist on the host (is ca-certificates installed?)")
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".kimh-ca-")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(wanted)
        os.chown(tmp, 0, 0)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return True


def _read_credential(path: str) -> str | None:
    try:
        with open(path, encoding="utf-8") as handle:
            return handle.read().strip()
    except FileNotFoundError:
        return None


def _post(
    url: str, body: dict | None, headers: dict, context: ssl.SSLContext, timeout: int
) -> tuple[int, dict]:
    """POST JSON; (status, parsed body). Raises VaultError when there is no HTTP answer."""
    data = json.dumps(body or {}).encode()
    # the scheme is checked in run(): http(s) only
    request = urllib.request.Request(  # noqa: S310
        url, data=data, method="POST", headers={"Content-Type": "application/json", **headers}
    )
    try:
        with urllib.request.urlopen(request, context=context, timeout=timeout) as response:  # noqa: S310
            return response.status, _json(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, _json(exc.read())
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise VaultError(f"no answer from {url}: {reason}") from None


def _json(raw: bytes) -> dict:
    try:
        value = json.loads(raw or b"{}")
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def _login_check(params: dict, role_id: str, secret_id: str) -> tuple[bool, str]:
    """(valid, reason). A valid login's token is revoked before returning."""
    try:
        context = ssl.create_default_context(cadata=params["ca_pem"])
    except ssl.SSLError as exc:
        raise VaultError(f"ca_pem is not a usable CA certificate: {exc}") from None
    addr = params["vault_addr"].rstrip("/")
    timeout = params["timeout"]
    status, answer = _post(
        f"{addr}/v1/auth/{params['mount']}/login",
        {"role_id": role_id, "secret_id": secret_id},
        {},
        context,
        timeout,
    )
    if status in (400, 403):
        errors = "; ".join(str(e) for e in answer.get("errors", [])) or "no details"
        return False, f"Vault refused the login (HTTP {status}: {errors})"
    token = answer.get("auth", {}).get("client_token") if status == 200 else None
    if not token:
        raise VaultError(f"unexpected answer to the AppRole login at {addr}: HTTP {status}")
    status, _ = _post(
        f"{addr}/v1/auth/token/revoke-self", None, {"X-Vault-Token": token}, context, timeout
    )
    if status != 204:
        raise VaultError(f"could not revoke the token of the check at {addr}: HTTP {status}")
    return True, "the credentials log in"


def run(module: AnsibleModule) -> dict:
    params = module.params
    result: dict = {"changed": False, "valid": False}
    if not params["vault_addr"].startswith(("https://", "http://")):
        module.fail_json(msg=f"vault_addr must be an http(s) URL, not {params['vault_addr']!r}")
    try:
        result["changed"] = _ensure_ca(params["ca_path"], params["ca_pem"], module.check_mode)
        role_id = _read_credential(params["role_id_path"])
        secret_id = _read_credential(params["secret_id_path"])
        files = ((params["role_id_path"], role_id), (params["secret_id_path"], secret_id))
        missing = [path for path, value in files if not value]
        if missing:
            result["reason"] = "missing or empty: " + ", ".join(missing)
            return result
        result["valid"], result["reason"] = _login_check(params, role_id, secret_id)
        if result["valid"]:
            result["role_id"], result["secret_id"] = role_id, secret_id
    except (VaultError, ssl.SSLError, OSError) as exc:
        result["error"] = str(exc)
    return result


def main() -> None:
    module = AnsibleModule(argument_spec=_OPTIONS, supports_check_mode=True)
    module.exit_json(**run(module))


if __name__ == "__main__":
    main()
