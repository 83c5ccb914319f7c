"""Ansible module: a self-signed certificate and its EC key on the host, made or mended in one
module run, or only checked.

A role that makes its own self-signed certificate ran three community.crypto modules for it
(openssl_privatekey, openssl_csr_pipe, x509_certificate selfsigned), about 0.3-0.9 s each
over a Docker connection on a first deploy, and needed a check beforehand not to run them
on every later run. This module reads the key and the certificate once. They are `current`
only when:

- the key exists as a regular file with the owner, group and mode, and is an EC key on the
  curve asked for;
- the certificate exists likewise, holds the key's public key, is self-signed (its issuer
  is its subject and its signature verifies with the key), has exactly the common name and
  the subject alternative names (in order) asked for, and is valid now.

With `make: true` (the default) it then does the least that makes them current: a key that
is missing, unreadable or of another type or curve is replaced by a new one (and so is the
certificate); a certificate that does not match is made anew from the key (ECDSA with
SHA-256, valid from now for `valid_days`); a wrong owner, group or mode is set. Files are
written atomically. With `make: false`, or in check mode, it only reports (`changed` then
says whether it would write). A path that exists but is no regular file (a symlink, a
directory) is refused, never replaced. It never returns key material.
"""

import datetime
import ipaddress
import os
import stat

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.kimh_file_ops import (
    RefusedError,
    attribute_changes,
    gid_of,
    parse_mode,
    uid_of,
    write_atomically,
)

try:
    from cryptography import x509
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    HAVE_CRYPTOGRAPHY = True
except ImportError:  # the roles install python3-cryptography before they need it
    HAVE_CRYPTOGRAPHY = False

DOCUMENTATION = r"""
module: kimh_selfsigned
short_description: Make or mend a self-signed certificate and its EC key, or only check them
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
  valid_days: {type: int, default: 3650, description: Validity of a new certificate.}
  make: {type: bool, default: true, description: false only reports (current, reasons).}
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
    "valid_days": {"type": "int", "default": 3650},
    "make": {"type": "bool", "default": True},
}

_CURVES = {"secp256r1": "SECP256R1", "secp384r1": "SECP384R1", "secp521r1": "SECP521R1"}


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
    """What is wrong with the file itself (missing, owner, mode); _validate has refused a
    path that is there but no regular file."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return [f"{path} is missing"]
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


def _owners(params: dict) -> "tuple[tuple, tuple]":
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
    return key_owner, cert_owner


def _validate(params: dict) -> None:
    """Bad input is refused, not reported as "needs work"."""
    if params["curve"] not in _CURVES:
        raise RefusedError(f"curve: {params['curve']!r} is not one of {sorted(_CURVES)}")
    if params["valid_days"] < 1:
        raise RefusedError(f"valid_days: {params['valid_days']} is not a positive number of days")
    for entry in params["subject_alt_name"]:
        normalise_san(entry)
    for path in (params["key_path"], params["cert_path"]):
        if os.path.lexists(path) and not stat.S_ISREG(os.lstat(path).st_mode):
            raise RefusedError(f"{path} exists and is not a regular file; not replacing it")


def check(params: dict) -> "list[str]":
    """The reasons the certificate or key need work; empty when they need none."""
    key_owner, cert_owner = _owners(params)
    _validate(params)
    if not HAVE_CRYPTOGRAPHY:
        return ["python3-cryptography is not installed on the host"]
    reasons = _file_problems(params["key_path"], key_owner)
    reasons += _file_problems(params["cert_path"], cert_owner)
    if any(r.endswith("is missing") for r in reasons):
        return reasons
    key, key_reasons = _load_key(params["key_path"], params["curve"])
    if key is None:
        return reasons + key_reasons
    return reasons + _cert_problems(params, key)


def _usable_key(params: dict) -> "object | None":
    if not os.path.exists(params["key_path"]):
        return None
    key, _ = _load_key(params["key_path"], params["curve"])
    return key


def _new_certificate(params: dict, key: object) -> bytes:
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, params["common_name"])])
    sans = []
    for entry in params["subject_alt_name"]:
        kind, _, value = normalise_san(entry).partition(":")
        sans.append(
            x509.DNSName(value) if kind == "DNS" else x509.IPAddress(ipaddress.ip_address(value))
        )
    now = datetime.datetime.now(datetime.UTC).replace(tzinfo=None)
    public = key.public_key()
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(public)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(now + datetime.timedelta(days=params["valid_days"]))
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(public), critical=False)
        .sign(key, hashes.SHA256())
    )
    return cert.public_bytes(serialization.Encoding.PEM)


def make(params: dict, check_mode: bool) -> "list[str]":
    """Write what the check found wrong; returns what was (or would be) done."""
    key_owner, cert_owner = _owners(params)
    done = []
    key = _usable_key(params)
    if key is None:
        done.append("new key")
        key = ec.generate_private_key(getattr(ec, _CURVES[params["curve"]])())
        if not check_mode:
            pem = key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
            write_atomically(params["key_path"], pem, *key_owner)
    elif attribute_changes(os.stat(params["key_path"]), *key_owner):
        done.append("key owner/mode")
        if not check_mode:
            os.chown(params["key_path"], key_owner[0], key_owner[1])
            os.chmod(params["key_path"], key_owner[2])
    cert_exists = os.path.exists(params["cert_path"])
    if "new key" in done or not cert_exists or _cert_problems(params, key):
        done.append("new certificate")
        if not check_mode:
            write_atomically(params["cert_path"], _new_certificate(params, key), *cert_owner)
    elif attribute_changes(os.stat(params["cert_path"]), *cert_owner):
        done.append("certificate owner/mode")
        if not check_mode:
            os.chown(params["cert_path"], cert_owner[0], cert_owner[1])
            os.chmod(params["cert_path"], cert_owner[2])
    return done


def main() -> None:
    module = AnsibleModule(argument_spec=_OPTIONS, supports_check_mode=True)
    try:
        reasons = check(module.params)
        done = []
        if reasons and module.params["make"]:
            if not HAVE_CRYPTOGRAPHY:
                raise RefusedError(
                    "python3-cryptography is not installed on the host: install it first"
                )
            done = make(module.params, module.check_mode)
    except RefusedError as exc:
        module.fail_json(msg=str(exc))
    except OSError as exc:
        module.fail_json(msg=f"could not write the key or certificate: {exc}")
    module.exit_json(changed=bool(done), current=not reasons, reasons=reasons, done=done)


if __name__ == "__main__":
    main()
