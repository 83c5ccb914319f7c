"""Ansible module: is a self-signed certificate and its key already what the community.crypto
tasks would make? One module run that changes nothing.

A role that makes its own self-signed certificate on the host runs three community.crypto
modules (openssl_privatekey, openssl_csr_pipe, x509_certificate selfsigned) on every run,
about 0.7 s each over a Docker connection, only to learn that nothing is to be done. This
module reads the key and the certificate once and answers `current: true` only when those
tasks would find nothing to change:

- the key exists as a regular file with the owner, group and mode, and is an EC key on the
  curve asked for;
- the certificate exists likewise, holds the key's public key, is self-signed (its issuer
  is its subject and its signature verifies with the key), has exactly the common name and
  the subject alternative names (in order) of the signing request, and is valid now.

Anything else (a missing file, a file it cannot parse, python3-cryptography missing) gives
`current: false` with the `reasons`, and the role's community.crypto tasks run as they
would without this check. It never returns key material.
"""

import datetime
import ipaddress
import os
import stat

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.kimh_file_ops import RefusedError, gid_of, parse_mode, uid_of

try:
    from cryptography import x509
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    HAVE_CRYPTOGRAPHY = True
except ImportError:  # the caller's tasks install python3-cryptography before they need it
    HAVE_CRYPTOGRAPHY = False

DOCUMENTATION = r"""
module: kimh_selfsigned_check
short_description: Tell whether a self-signed certificate and its key need any work
options:
  key_path: {type: path, required: true}
  cert_path: {type: path, required: true}
  curve: {type: str, default: secp384r1, description: The EC curve of the key.}
  common_name: {type: str, required: true}
  subject_alt_name:
    type: list
    elements: str
    required: true
    description: DNS:name and IP:address entries, in the order of the signing request.
  key_owner: {type: str, default: root}
  key_group: {type: str, default: root}
  key_mode: {type: str, default: "0600"}
  cert_owner: {type: str, default: root}
  cert_group: {type: str, default: root}
  cert_mode: {type: str, default: "0644"}
"""

_OPTIONS = {
    "key_path": {"type": "path", "required": True},
    "cert_path": {"type": "path", "required": True},
    "curve": {"type": "str", "default": "secp384r1"},
    "common_name": {"type": "str", "required": True},
    "subject_alt_name": {"type": "list", "elements": "str", "required": True},
    "key_owner": {"type": "str", "default": "root"},
    "key_group": {"type": "str", "default": "root"},
    "key_mode": {"type": "str", "default": "0600"},
    "cert_owner": {"type": "str", "default": "root"},
    "cert_group": {"type": "str", "default": "root"},
    "cert_mode": {"type": "str", "default": "0644"},
}


def normalise_san(entry: str) -> str:
    """`DNS:Name` -> `DNS:name`, `IP:0:0::1` -> `IP:::1`; anything else is refused."""
    kind, _, value = entry.partition(":")
    if kind == "DNS" and value:
        return f"DNS:{value.lower()}"
    if kind == "IP":
        try:
            return f"IP:{ipaddress.ip_address(value)}"
        except ValueError:
            pass
    raise RefusedError(f"subject_alt_name: {entry!r} is neither DNS:<name> nor IP:<address>")


def _file_problems(path: str, owner: tuple) -> "list[str]":
    """What is wrong with the file itself (missing, not regular, owner, mode)."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return [f"{path} is missing"]
    if not stat.S_ISREG(st.st_mode):
        return [f"{path} is not a regular file"]
    uid, gid, mode = owner
    problems = []
    if (st.st_uid, st.st_gid) != (uid, gid):
        problems.append(f"{path}: owner {st.st_uid}:{st.st_gid}, wanted {uid}:{gid}")
    if stat.S_IMODE(st.st_mode) != mode:
        problems.append(f"{path}: mode {stat.S_IMODE(st.st_mode):04o}, wanted {mode:04o}")
    return problems


def _load_key(path: str, curve: str) -> "tuple[object | None, list[str]]":
    try:
        with open(path, "rb") as handle:
            key = serialization.load_pem_private_key(handle.read(), password=None)
    except (OSError, ValueError, TypeError) as exc:
        return None, [f"{path}: not a readable unencrypted PEM private key ({type(exc).__name__})"]
    if not isinstance(key, ec.EllipticCurvePrivateKey) or key.curve.name != curve:
        return None, [f"{path}: not an EC key on {curve}"]
    return key, []


def _san_list(cert: "x509.Certificate") -> "list[str]":
    try:
        names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return []
    entries = []
    for name in names:
        if isinstance(name, x509.DNSName):
            entries.append(f"DNS:{name.value.lower()}")
        elif isinstance(name, x509.IPAddress):
            entries.append(f"IP:{name.value}")
        else:
            entries.append(f"other:{name.value}")
    return entries


def _cert_problems(params: dict, key: object) -> "list[str]":
    path = params["cert_path"]
    try:
        with open(path, "rb") as handle:
            cert = x509.load_pem_x509_certificate(handle.read())
    except (OSError, ValueError) as exc:
        return [f"{path}: not a readable PEM certificate ({type(exc).__name__})"]
    problems = []
    public = key.public_key()
    pem = serialization.PublicFormat.SubjectPublicKeyInfo
    der = serialization.Encoding.DER
    if cert.public_key().public_bytes(der, pem) != public.public_bytes(der, pem):
        problems.append(f"{path}: holds another key's public key")
    elif cert.issuer != cert.subject:
        problems.append(f"{path}: not self-signed (issuer differs from subject)")
    else:
        # Debian 12's cryptography (38) has no verify_directly_issued_by: verify by hand.
        try:
            public.verify(
                cert.signature,
                cert.tbs_certificate_bytes,
                ec.ECDSA(cert.signature_hash_algorithm),
            )
        except (InvalidSignature, ValueError, TypeError):
            problems.append(f"{path}: the signature does not verify with the key")
    common_names = [a.value for a in cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)]
    if common_names != [params["common_name"]]:
        problems.append(f"{path}: common name {common_names}, wanted {params['common_name']!r}")
    wanted = [normalise_san(e) for e in params["subject_alt_name"]]
    if _san_list(cert) != wanted:
        problems.append(f"{path}: subject alternative names {_san_list(cert)}, wanted {wanted}")
    # naive UTC datetimes: cryptography 38 (Debian 12) has no not_valid_*_utc
    now = datetime.datetime.now(datetime.UTC).replace(tzinfo=None)
    if hasattr(cert, "not_valid_after_utc"):
        not_before = cert.not_valid_before_utc.replace(tzinfo=None)
        not_after = cert.not_valid_after_utc.replace(tzinfo=None)
    else:
        not_before, not_after = cert.not_valid_before, cert.not_valid_after
    if not not_before <= now < not_after:
        problems.append(f"{path}: not valid now (until {not_after:%Y-%m-%d})")
    return problems


def check(params: dict) -> "list[str]":
    """The reasons the certificate or key need work; empty when they need none."""
    key_owner = (
        uid_of(params["key_owner"]),
        gid_of(params["key_group"]),
        parse_mode(params["key_mode"], params["key_path"]),
    )
    cert_owner = (
        uid_of(params["cert_owner"]),
        gid_of(params["cert_group"]),
        parse_mode(params["cert_mode"], params["cert_path"]),
    )
    for entry in params["subject_alt_name"]:
        normalise_san(entry)  # bad input is refused, not reported as "needs work"
    if not HAVE_CRYPTOGRAPHY:
        return ["python3-cryptography is not installed on the host"]
    reasons = _file_problems(params["key_path"], key_owner)
    reasons += _file_problems(params["cert_path"], cert_owner)
    if any(r.endswith(("is missing", "is not a regular file")) for r in reasons):
        return reasons
    key, key_reasons = _load_key(params["key_path"], params["curve"])
    if key is None:
        return reasons + key_reasons
    return reasons + _cert_problems(params, key)


def main() -> None:
    module = AnsibleModule(argument_spec=_OPTIONS, supports_check_mode=True)
    try:
        reasons = check(module.params)
    except RefusedError as exc:
        module.fail_json(msg=str(exc))
    module.exit_json(changed=False, current=not reasons, reasons=reasons)


if __name__ == "__main__":
    main()
