"""Verify the vault role: a TLS-only, audited OpenBao whose identities get what they need only.

Runs on the controller. API checks use hvac against the instance's bridge address, verified
against the CA the role generated in the controller directory (molecule's ephemeral dir).
"""

import base64
import json
import os
import re
import shlex
import subprocess
from pathlib import Path

import hvac
import pytest
import requests
from hvac.exceptions import Forbidden, InvalidRequest

EPHEMERAL = Path(os.environ["MOLECULE_EPHEMERAL_DIRECTORY"])
CONTROLLER_DIR = EPHEMERAL / "vault"
REPO = Path(__file__).resolve().parents[5]
SERVICE = "openbao"
PORT = 8200
CA_ON_HOST = "/usr/local/share/ca-certificates/mailhelper-vault-ca.crt"
IDENTITIES = ["app", "worker", "flower", "rotator", "migrator", "deployer"]
CONTEXT = base64.b64encode(b"user-42").decode()
STACK_SECRETS = {
    "mailhelper/postgresql": {"app_password"},
    "mailhelper/postgresql-migrator": {"password"},
    "mailhelper/redis": {"app_password"},
    "mailhelper/flask": {"secret_key"},
    "mailhelper/flower": {"username", "password"},
}


def bao(host, *args: str):
    env = f"BAO_ADDR=https://127.0.0.1:{PORT} BAO_CACERT={CA_ON_HOST}"
    return host.run(f"{env} bao " + " ".join(shlex.quote(a) for a in args))


@pytest.fixture(scope="module")
def addr(host) -> str:
    ip = host.run("hostname -I").stdout.split()[0]
    return f"https://{ip}:{PORT}"


@pytest.fixture(scope="module")
def ca() -> str:
    return str(CONTROLLER_DIR / "tls" / "ca.crt")


@pytest.fixture(scope="module")
def init_data() -> dict:
    return json.loads((CONTROLLER_DIR / "init.json").read_text())


@pytest.fixture(scope="module")
def deployer_creds() -> dict:
    return json.loads((CONTROLLER_DIR / "deployer.json").read_text())


def login(addr: str, ca: str, role_id: str, secret_id: str) -> hvac.Client:
    client = hvac.Client(url=addr, verify=ca)
    client.auth.approle.login(role_id=role_id, secret_id=secret_id)
    assert client.is_authenticated()
    return client


@pytest.fixture(scope="module")
def deployer(addr, ca, deployer_creds) -> hvac.Client:
    return login(addr, ca, deployer_creds["role_id"], deployer_creds["secret_id"])


@pytest.fixture(scope="module")
def clients(addr, ca, deployer) -> dict[str, hvac.Client]:
    """One logged-in client per identity, with a fresh secret_id issued by the deployer."""
    result = {"deployer": deployer}
    for name in IDENTITIES[:-1]:
        role = f"mailhelper-{name}"
        role_id = deployer.auth.approle.read_role_id(role)["data"]["role_id"]
        secret_id = deployer.auth.approle.generate_secret_id(role)["data"]["secret_id"]
        result[name] = login(addr, ca, role_id, secret_id)
    return result


@pytest.fixture(scope="module")
def wrapped_key(clients) -> str:
    resp = clients["app"].write("transit/datakey/plaintext/mailhelper", context=CONTEXT)
    return resp["data"]["ciphertext"]


def test_service_enabled_and_running(host):
    service = host.service(SERVICE)
    assert service.is_enabled
    assert service.is_running


def test_status_unsealed_on_raft(host):
    out = bao(host, "status", "-format=json")
    status = json.loads(out.stdout)
    assert status["initialized"] is True
    assert status["sealed"] is False
    assert status["storage_type"] == "raft"
    assert (status["t"], status["n"]) == (3, 5)


def test_plain_http_is_refused(addr):
    plain = addr.replace("https://", "http://")
    try:
        resp = requests.get(f"{plain}/v1/sys/health", timeout=5)
    except requests.ConnectionError:
        return
    assert resp.status_code == 400
    assert "HTTPS" in resp.text
    assert "initialized" not in resp.text


def test_tls_verifies_only_against_the_bundle_ca(addr, ca):
    assert requests.get(f"{addr}/v1/sys/health", verify=ca, timeout=5).status_code == 200
    with pytest.raises(requests.exceptions.SSLError):
        requests.get(f"{addr}/v1/sys/health", verify=True, timeout=5)


def test_ca_is_installed_in_the_host_trust_store(host):
    assert host.file(CA_ON_HOST).exists
    probe = (
        f"import urllib.request; urllib.request.urlopen('https://127.0.0.1:{PORT}/v1/sys/health')"
    )
    assert host.run(f"python3 -c {shlex.quote(probe)}").rc == 0


def test_init_file_only_on_the_controller(host, init_data):
    for path in (CONTROLLER_DIR / "init.json", CONTROLLER_DIR / "deployer.json"):
        assert path.stat().st_mode & 0o777 == 0o600
    assert CONTROLLER_DIR.stat().st_mode & 0o777 == 0o700
    assert len(init_data["keys"]) == 5
    needles = [init_data["root_token"], *init_data["keys"][:2], *init_data["keys_base64"][:2]]
    for needle in needles:
        found = host.run(
            "grep -rlF --exclude-dir=proc --exclude-dir=sys --exclude-dir=dev "
            f"-- {shlex.quote(needle)} / 2>/dev/null"
        )
        assert found.stdout.strip() == "", found.stdout
    assert host.run("find / -xdev -name 'init.json' -path '*vault*'").stdout.strip() == ""


def test_root_token_is_revoked(addr, ca, init_data):
    client = hvac.Client(url=addr, token=init_data["root_token"], verify=ca)
    with pytest.raises(Forbidden):
        client.auth.token.lookup_self()
    assert not client.is_authenticated()


def test_engines_and_auth_methods(deployer):
    mounts = deployer.sys.list_mounted_secrets_engines()["data"]
    assert mounts["kv/"]["type"] == "kv"
    assert mounts["kv/"]["options"]["version"] == "2"
    assert mounts["transit/"]["type"] == "transit"
    assert deployer.sys.list_auth_methods()["data"]["approle/"]["type"] == "approle"


def test_transit_key_is_not_exportable(deployer):
    key = deployer.secrets.transit.read_key("mailhelper")["data"]
    assert key["type"] == "aes256-gcm96"
    assert key["derived"] is True
    assert key["exportable"] is False
    assert key["allow_plaintext_backup"] is False
    assert key["deletion_allowed"] is False


def test_stack_secrets_exist_with_their_fields(deployer):
    for path, fields in STACK_SECRETS.items():
        data = deployer.secrets.kv.v2.read_secret_version(
            path, mount_point="kv", raise_on_deleted_version=True
        )["data"]
        assert set(data["data"]) == fields, path
        assert data["metadata"]["version"] == 1, f"{path} was rewritten"
        for field, value in data["data"].items():
            if field != "username":
                assert re.fullmatch(r"[A-Za-z0-9]{32,}", value), f"{path}:{field}"


def test_policies_on_the_server_match_the_files(deployer):
    files = sorted((REPO / "vault-policies").glob("*.hcl"))
    assert [f.stem for f in files] == sorted(IDENTITIES)
    for path in files:
        on_server = deployer.sys.read_acl_policy(f"mailhelper-{path.stem}")["data"]["policy"]
        assert on_server.strip() == path.read_text().strip(), path.name


def test_approles_and_their_policies(deployer):
    for name in IDENTITIES:
        role = deployer.auth.approle.read_role(f"mailhelper-{name}")["data"]
        assert role["token_policies"] == [f"mailhelper-{name}"]
        assert role["token_ttl"] > 0
        assert role["token_max_ttl"] >= role["token_ttl"]


def attempt(client: hvac.Client, method: str, path: str, **body) -> bool:
    """True when the request is allowed, False when the policy forbids it."""
    try:
        if method == "GET":
            client.adapter.get(f"/v1/{path}")
        else:
            client.adapter.request(method, f"/v1/{path}", json=body)
    except Forbidden:
        return False
    except InvalidRequest as exc:  # allowed by policy, refused by the engine
        return "permission denied" not in str(exc)
    return True


# operation -> (method, path, body, identities allowed)
MATRIX = {
    "read kv postgresql": (
        "GET",
        "kv/data/mailhelper/postgresql",
        {},
        {"app", "worker", "rotator", "deployer"},
    ),
    # its own path: KV v2 policies are per path, so no other identity may read this one
    "read kv postgresql-migrator": (
        "GET",
        "kv/data/mailhelper/postgresql-migrator",
        {},
        {"migrator", "deployer"},
    ),
    "read kv redis": (
        "GET",
        "kv/data/mailhelper/redis",
        {},
        {"app", "worker", "flower", "deployer"},
    ),
    "read kv flask": ("GET", "kv/data/mailhelper/flask", {}, {"app", "deployer"}),
    "read kv flower": ("GET", "kv/data/mailhelper/flower", {}, {"flower", "deployer"}),
    "write kv": ("POST", "kv/data/mailhelper/molecule-probe", {"data": {"x": "1"}}, {"deployer"}),
    "create data key": (
        "POST",
        "transit/datakey/plaintext/mailhelper",
        {"context": CONTEXT},
        {"app"},
    ),
    "wrapped data key": ("POST", "transit/datakey/wrapped/mailhelper", {"context": CONTEXT}, set()),
    "encrypt": ("POST", "transit/encrypt/mailhelper", {"plaintext": "", "context": CONTEXT}, set()),
    "rotate key": ("POST", "transit/keys/mailhelper/rotate", {}, {"rotator"}),
    "export key": ("GET", "transit/export/encryption-key/mailhelper", {}, set()),
    "backup key": ("GET", "transit/backup/mailhelper", {}, set()),
    "make key exportable": ("POST", "transit/keys/mailhelper/config", {"exportable": True}, set()),
    "write policy": ("PUT", "sys/policies/acl/mailhelper-probe", {"policy": ""}, {"deployer"}),
    "write foreign policy": ("PUT", "sys/policies/acl/probe", {"policy": ""}, set()),
    "read deployer role_id": (
        "GET",
        "auth/approle/role/mailhelper-deployer/role-id",
        {},
        {"deployer"},
    ),
    "issue app secret_id": ("POST", "auth/approle/role/mailhelper-app/secret-id", {}, {"deployer"}),
    "issue migrator secret_id": (
        "POST",
        "auth/approle/role/mailhelper-migrator/secret-id",
        {},
        {"deployer"},
    ),
    "list audit devices": ("GET", "sys/audit", {}, set()),
    "create token": ("POST", "auth/token/create", {}, set()),
    "seal": ("PUT", "sys/seal", {}, set()),
}


@pytest.mark.parametrize("operation", list(MATRIX))
@pytest.mark.parametrize("identity", IDENTITIES)
def test_policy_matrix(clients, identity, operation):
    method, path, body, allowed = MATRIX[operation]
    if operation == "write policy" and identity == "deployer":
        body = {"policy": 'path "kv/data/mailhelper/none" { capabilities = ["deny"] }'}
    assert attempt(clients[identity], method, path, **body) == (identity in allowed), (
        f"{identity} {operation}"
    )


@pytest.mark.parametrize("identity", IDENTITIES)
def test_decrypt_and_rewrap(clients, wrapped_key, identity):
    """Unwrap a stored data key: app and worker; rewrap to the newest version: rotator only."""
    client = clients[identity]
    can_decrypt = attempt(
        client, "POST", "transit/decrypt/mailhelper", ciphertext=wrapped_key, context=CONTEXT
    )
    can_rewrap = attempt(
        client, "POST", "transit/rewrap/mailhelper", ciphertext=wrapped_key, context=CONTEXT
    )
    assert can_decrypt == (identity in {"app", "worker"})
    assert can_rewrap == (identity == "rotator")


def test_rewrapped_key_still_unwraps_to_the_same_key(clients, wrapped_key):
    app, rotator = clients["app"], clients["rotator"]
    first = app.secrets.transit.decrypt_data("mailhelper", wrapped_key, context=CONTEXT)
    rotator.secrets.transit.rotate_key("mailhelper")
    rewrapped = rotator.secrets.transit.rewrap_data("mailhelper", wrapped_key, context=CONTEXT)
    new_ct = rewrapped["data"]["ciphertext"]
    assert new_ct != wrapped_key
    again = app.secrets.transit.decrypt_data("mailhelper", new_ct, context=CONTEXT)
    assert again["data"]["plaintext"] == first["data"]["plaintext"]


def test_audit_log_records_requests_without_secret_values(host, deployer):
    secret = deployer.secrets.kv.v2.read_secret_version(
        "mailhelper/postgresql", mount_point="kv", raise_on_deleted_version=True
    )["data"]["data"]["app_password"]
    log = host.file("/var/log/openbao/audit.log")
    assert log.user == SERVICE
    assert log.mode == 0o600
    content = host.run("cat /var/log/openbao/audit.log").stdout
    lines = [json.loads(line) for line in content.splitlines() if line.strip()]
    assert any(
        e["type"] == "response" and e["request"]["path"] == "kv/data/mailhelper/postgresql"
        for e in lines
    )
    assert secret not in content
    assert "hmac-sha256:" in content


def test_first_run_used_root_and_later_runs_the_deployer(host):
    content = host.run("cat /var/log/openbao/audit.log").stdout
    reads = [
        e
        for e in map(json.loads, filter(str.strip, content.splitlines()))
        if e["type"] == "request"
        and e["request"]["path"] == "sys/mounts"
        and e["request"]["operation"] == "read"
    ]
    assert len(reads) >= 2, "converge and idempotence should each have listed the mounts"
    assert reads[0]["auth"]["policies"] == ["root"]
    for entry in reads[1:]:
        assert entry["auth"]["policies"] == ["default", "mailhelper-deployer"]


def test_audit_log_is_rotated(host):
    conf = host.file(f"/etc/logrotate.d/{SERVICE}")
    assert conf.exists
    assert "/var/log/openbao/audit.log" in conf.content_string
    assert "create 0600 openbao openbao" in conf.content_string


def test_secrets_not_in_journal_or_process_list(host, init_data, deployer_creds):
    journal = host.run("journalctl --no-pager -o cat").stdout
    assert journal
    args = host.run("ps -eo args").stdout
    for secret in (init_data["root_token"], deployer_creds["secret_id"], *init_data["keys"]):
        assert secret not in journal
        assert secret not in args


@pytest.mark.parametrize(
    ("prop", "value"),
    [
        ("LimitCORE", "0"),
        ("NoNewPrivileges", "yes"),
        ("ProtectSystem", "strict"),
        ("ProtectHome", "yes"),
        ("PrivateTmp", "yes"),
        ("PrivateDevices", "yes"),
        ("CapabilityBoundingSet", ""),
        ("User", SERVICE),
        ("UMask", "0077"),
    ],
)
def test_unit_hardening(host, prop, value):
    assert host.run(f"systemctl show -p {prop} --value {SERVICE}").stdout.strip() == value


def test_container_quirks_only_in_a_drop_in(host):
    unit = host.file(f"/etc/systemd/system/{SERVICE}.service").content_string
    assert "ProtectProc=invisible" in unit
    assert "PrivateUsers=yes" in unit
    dropin = host.file(f"/etc/systemd/system/{SERVICE}.service.d/container.conf")
    assert dropin.exists
    assert "PrivateUsers=false" in dropin.content_string


@pytest.mark.parametrize(
    ("path", "owner", "group", "mode"),
    [
        ("/etc/openbao/tls/server.key", "root", SERVICE, 0o640),
        ("/etc/openbao/openbao.hcl", "root", SERVICE, 0o640),
        ("/var/lib/openbao", SERVICE, SERVICE, 0o700),
        ("/usr/local/bin/bao", "root", "root", 0o755),
    ],
)
def test_file_ownership(host, path, owner, group, mode):
    f = host.file(path)
    assert (f.user, f.group, f.mode) == (owner, group, mode)


def playbook_command(playbook: Path, *extra: str) -> tuple[list[str], dict[str, str]]:
    env = dict(os.environ, ANSIBLE_ROLES_PATH=str(REPO / "roles"), ANSIBLE_NOCOLOR="1")
    env["ANSIBLE_CONFIG"] = str(REPO / "ansible.cfg")
    env["ANSIBLE_CACHE_PLUGIN_CONNECTION"] = str(EPHEMERAL / "facts")
    cmd = ["ansible-playbook", "-i", str(EPHEMERAL / "inventory"), str(playbook), *extra]
    return cmd, env


def run_playbook(playbook: Path, *extra: str, timeout: int = 300) -> subprocess.CompletedProcess:
    cmd, env = playbook_command(playbook, *extra)
    return subprocess.run(
        cmd, env=env, capture_output=True, text=True, timeout=timeout, check=False
    )


def recap(output: str) -> dict[str, int]:
    line = next(x for x in output.splitlines() if re.match(r"^\S+\s+: ok=", x))
    return {k: int(v) for k, v in re.findall(r"(\w+)=(\d+)", line)}


def test_restart_seals_and_the_playbook_unseals(host, addr, ca, deployer_creds):
    client = login(addr, ca, deployer_creds["role_id"], deployer_creds["secret_id"])
    before = client.secrets.kv.v2.read_secret_version(
        "mailhelper/flask", mount_point="kv", raise_on_deleted_version=True
    )["data"]["data"]
    host.run_expect([0], f"systemctl restart {SERVICE}")
    status = None
    for _ in range(30):
        out = bao(host, "status", "-format=json")
        if out.stdout.strip().startswith("{"):
            status = json.loads(out.stdout)
            break
        host.run("sleep 0.5")
    assert status is not None
    assert status["sealed"] is True

    playbook = REPO / "playbooks" / "vault_unseal.yml"
    first = run_playbook(playbook, "-e", "vault_unseal_hosts=all")
    assert first.returncode == 0, first.stdout + first.stderr
    assert recap(first.stdout)["changed"] > 0
    assert json.loads(bao(host, "status", "-format=json").stdout)["sealed"] is False

    second = run_playbook(playbook, "-e", "vault_unseal_hosts=all")
    assert second.returncode == 0, second.stdout + second.stderr
    assert recap(second.stdout)["changed"] == 0

    client = login(addr, ca, deployer_creds["role_id"], deployer_creds["secret_id"])
    after = client.secrets.kv.v2.read_secret_version(
        "mailhelper/flask", mount_point="kv", raise_on_deleted_version=True
    )["data"]["data"]
    assert after == before


BAD_INPUT = {
    "threshold above shares": (
        {"vault_init_secret_shares": 3, "vault_init_secret_threshold": 4},
        "vault_init_secret_threshold",
    ),
    "unknown option": ({"vault_tls_generat": False}, "vault_tls_generat"),
    "hashicorp without checksum": (
        {"vault_flavour": "hashicorp", "vault_hashicorp_url": "https://example.invalid/v.zip"},
        "vault_hashicorp_sha256",
    ),
    "bad flavour": ({"vault_flavour": "consul"}, "vault_flavour"),
    "wrong type": ({"vault_port": "not-a-port"}, "vault_port"),
    "approle with unknown policy": (
        {"vault_approles": [{"name": "mailhelper-deployer", "policies": ["mailhelper-nope"]}]},
        "vault_approles",
    ),
}


@pytest.fixture(scope="module")
def bad_input_results(tmp_path_factory) -> dict[str, tuple[int, str, str]]:
    """Run every bad-input case at once (each is a short, failing ansible-playbook run)."""
    path = tmp_path_factory.mktemp("bad") / "bad_input.yml"
    path.write_text(
        "- name: Bad input\n  hosts: all\n  gather_facts: true\n  roles:\n    - role: vault\n"
    )
    procs = {}
    for case, (extra, _) in BAD_INPUT.items():
        cmd, env = playbook_command(path, "-e", json.dumps(extra))
        procs[case] = subprocess.Popen(
            cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
    results = {}
    for case, proc in procs.items():
        out, err = proc.communicate(timeout=300)
        results[case] = (proc.returncode, out, err)
    return results


@pytest.mark.parametrize("case", list(BAD_INPUT))
def test_bad_input_fails_early_naming_the_variable(bad_input_results, case):
    variable = BAD_INPUT[case][1]
    returncode, stdout, stderr = bad_input_results[case]
    output = stdout + stderr
    assert returncode != 0, output
    assert variable in output, output
    assert recap(stdout)["changed"] == 0


def test_an_old_shared_migrator_field_is_retired(host, addr, ca, deployer_creds):
    """A deployment from before the migrator's own path kept `migrator_password` in
    mailhelper/postgresql, which the app, worker and rotator may read. The next run writes a
    new version without it (app_password unchanged, the migrator's own path untouched),
    and the run after that changes nothing. Runs last: it adds versions to the secret."""
    deployer = login(addr, ca, deployer_creds["role_id"], deployer_creds["secret_id"])
    kv = deployer.secrets.kv.v2

    def read(path: str) -> dict:
        return kv.read_secret_version(path, mount_point="kv", raise_on_deleted_version=True)["data"]

    app_password = read("mailhelper/postgresql")["data"]["app_password"]
    migrator = read("mailhelper/postgresql-migrator")
    kv.create_or_update_secret(
        "mailhelper/postgresql",
        {"app_password": app_password, "migrator_password": "old-shared-migrator-pw"},
        mount_point="kv",
    )
    old_version = read("mailhelper/postgresql")["metadata"]["version"]

    converge = Path(__file__).resolve().parents[1] / "converge.yml"
    first = run_playbook(converge, timeout=900)
    assert first.returncode == 0, first.stdout + first.stderr
    assert recap(first.stdout)["changed"] > 0
    assert "old-shared-migrator-pw" not in first.stdout + first.stderr
    now = read("mailhelper/postgresql")
    assert now["data"] == {"app_password": app_password}
    assert now["metadata"]["version"] == old_version + 1
    assert read("mailhelper/postgresql-migrator") == migrator

    second = run_playbook(converge, timeout=900)
    assert second.returncode == 0, second.stdout + second.stderr
    assert recap(second.stdout)["changed"] == 0, second.stdout
    assert read("mailhelper/postgresql")["metadata"]["version"] == old_version + 1
