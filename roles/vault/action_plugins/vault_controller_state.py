"""Read-only check of the vault role's controller-side files, in the controller process.

The role fetches the server binary and keeps a CA and one server certificate per host on
the controller. On a run that changes nothing, every one of those tasks still costs a module
run. This action plugin runs no module: it reads the files with hashlib, os.stat and the
`cryptography` package and reports whether each part is already what the tasks would
produce, so that the role can skip them. It never writes anything and returns no key
material.

Parts, each checked only when its argument is given (a part not asked for reports false):

- `directories`: every path exists, is a directory and has mode 0700 -> `dirs_ok`.
- `binary`: the cached server binary exists; its sha256 equals `sha256` when given; the
  archive it came from (`archive`) exists with mode `archive_mode` and the sha256
  `archive_sha256` when given -> `binary_ok`, plus `binary_sha256` and `binary_sha1` of the
  binary as read now ("" when it cannot be read).
- `tls`: CA key and server key load (unencrypted PEM) as EC keys on the requested curves,
  mode 0600; CA and server certificate load (PEM), mode 0644, hold the public key of
  their key, have exactly the subject and extensions the signing request asks for (as
  community.crypto compares them, plus the subject and authority key identifiers it adds),
  are signed by the CA, and are valid now and `renew_days` from now -> `tls_ok`.

`reasons` names every check that failed: the file and what is wrong with it.
"""

from __future__ import annotations

import hashlib
import ipaddress
import os
import re
import stat
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from ansible.errors import AnsibleActionFail
from ansible.module_utils.common.arg_spec import ArgumentSpecValidator
from ansible.module_utils.errors import NoLogError, UnsupportedError
from ansible.plugins.action import ActionBase
from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.types import CertificatePublicKeyTypes
from cryptography.x509.oid import ExtendedKeyUsageOID, ExtensionOID, NameOID, ObjectIdentifier

DIRECTORY_MODE = 0o700
KEY_MODE = 0o600
CERT_MODE = 0o644

REQUEST_OPTIONS: dict[str, dict[str, Any]] = {
    "curve": {"type": "str", "required": True},
    "common_name": {"type": "str", "required": True},
    "subject_alt_name": {"type": "list", "elements": "str", "default": []},
    "use_common_name_for_san": {"type": "bool", "default": True},
    "key_usage": {"type": "list", "elements": "str", "default": []},
    "key_usage_critical": {"type": "bool", "default": False},
    "extended_key_usage": {"type": "list", "elements": "str", "default": []},
    "extended_key_usage_critical": {"type": "bool", "default": False},
    "basic_constraints": {"type": "list", "elements": "str", "default": []},
    "basic_constraints_critical": {"type": "bool", "default": False},
}

ARGUMENT_SPEC: dict[str, dict[str, Any]] = {
    "directories": {"type": "list", "elements": "path"},
    "binary": {
        "type": "dict",
        "options": {
            "path": {"type": "path", "required": True},
            "sha256": {"type": "str", "default": ""},
            "archive": {"type": "path", "default": ""},
            "archive_sha256": {"type": "str", "default": ""},
            "archive_mode": {"type": "str", "default": ""},
        },
    },
    "tls": {
        "type": "dict",
        "options": {
            "ca_cert": {"type": "path", "required": True},
            "ca_key": {"type": "path", "required": True},
            "cert": {"type": "path", "required": True},
            "key": {"type": "path", "required": True},
            "renew_days": {"type": "int", "required": True},
            "ca": {"type": "dict", "required": True, "options": REQUEST_OPTIONS},
            "server": {"type": "dict", "required": True, "options": REQUEST_OPTIONS},
        },
    },
}

# The names community.crypto's openssl_csr options use, mapped to cryptography's.
KEY_USAGES = {
    "digitalSignature": "digital_signature",
    "nonRepudiation": "content_commitment",
    "keyEncipherment": "key_encipherment",
    "dataEncipherment": "data_encipherment",
    "keyAgreement": "key_agreement",
    "keyCertSign": "key_cert_sign",
    "cRLSign": "crl_sign",
    "encipherOnly": "encipher_only",
    "decipherOnly": "decipher_only",
}
EXTENDED_KEY_USAGES = {
    "serverAuth": ExtendedKeyUsageOID.SERVER_AUTH,
    "clientAuth": ExtendedKeyUsageOID.CLIENT_AUTH,
    "codeSigning": ExtendedKeyUsageOID.CODE_SIGNING,
    "emailProtection": ExtendedKeyUsageOID.EMAIL_PROTECTION,
    "timeStamping": ExtendedKeyUsageOID.TIME_STAMPING,
    "OCSPSigning": ExtendedKeyUsageOID.OCSP_SIGNING,
}
EXTENSION_NAMES = {
    ExtensionOID.SUBJECT_ALTERNATIVE_NAME: "subjectAltName",
    ExtensionOID.KEY_USAGE: "keyUsage",
    ExtensionOID.EXTENDED_KEY_USAGE: "extendedKeyUsage",
    ExtensionOID.BASIC_CONSTRAINTS: "basicConstraints",
    ExtensionOID.SUBJECT_KEY_IDENTIFIER: "subjectKeyIdentifier",
    ExtensionOID.AUTHORITY_KEY_IDENTIFIER: "authorityKeyIdentifier",
}
DOTTED_OID = re.compile(r"^[0-9]+(\.[0-9]+)+$")


Extensions = dict[ObjectIdentifier, x509.Extension[x509.ExtensionType]]


class ArgumentError(Exception):
    """An argument the checks cannot work with; the message names it."""


@dataclass(frozen=True)
class Request:
    """What a signing request asks for: key curve, subject and extensions (by OID)."""

    curve: str
    subject: x509.Name
    extensions: Extensions


@dataclass
class State:
    dirs_ok: bool = False
    binary_ok: bool = False
    binary_sha256: str = ""
    binary_sha1: str = ""
    tls_ok: bool = False


# --- files -------------------------------------------------------------------------------


def mode_reason(path: str, expected: int) -> str | None:
    """Why `path` (a file or directory that exists) does not have mode `expected`, if so."""
    try:
        actual = stat.S_IMODE(os.stat(path).st_mode)
    except OSError as exc:
        return f"{path}: cannot be examined ({exc.strerror})"
    if actual != expected:
        return f"{path}: mode {actual:04o}, expected {expected:04o}"
    return None


def directory_reasons(paths: list[str]) -> list[str]:
    reasons = []
    for path in paths:
        if not os.path.exists(path):
            reasons.append(f"{path}: missing")
        elif not os.path.isdir(path):
            reasons.append(f"{path}: not a directory")
        elif reason := mode_reason(path, DIRECTORY_MODE):
            reasons.append(reason)
    return reasons


def file_digest(path: str, algorithm: str) -> str:
    with open(path, "rb") as handle:
        return hashlib.file_digest(handle, algorithm).hexdigest()


def binary_digests(path: str) -> tuple[str, str]:
    """sha256 and sha1 of `path`; hashlib releases the GIL, so both run at once."""
    with ThreadPoolExecutor(max_workers=2) as pool:
        sha256, sha1 = pool.map(lambda name: file_digest(path, name), ("sha256", "sha1"))
    return sha256, sha1


def parse_mode(text: str, argument: str) -> int | None:
    if not text:
        return None
    if not re.fullmatch(r"0?[0-7]{3,4}", text):
        raise ArgumentError(f"{argument}: {text!r} is not an octal file mode such as '0600'")
    return int(text, 8)


def archive_reasons(spec: dict[str, Any]) -> list[str]:
    path = spec["archive"]
    mode = parse_mode(spec["archive_mode"], "binary.archive_mode")
    if not os.path.isfile(path):
        return [f"{path}: missing"]
    reasons = []
    if mode is not None and (reason := mode_reason(path, mode)):
        reasons.append(reason)
    if spec["archive_sha256"]:
        try:
            digest = file_digest(path, "sha256")
        except OSError as exc:
            return [*reasons, f"{path}: cannot be read ({exc.strerror})"]
        if digest != spec["archive_sha256"]:
            reasons.append(f"{path}: sha256 {digest} differs from the pin {spec['archive_sha256']}")
    return reasons


def check_binary(spec: dict[str, Any], state: State) -> list[str]:
    if not spec["sha256"] and not spec["archive_sha256"]:
        raise ArgumentError(
            "binary: give sha256 or archive_sha256 (an unpinned binary proves nothing)"
        )
    if spec["archive_sha256"] and not spec["archive"]:
        raise ArgumentError("binary: archive_sha256 needs archive")
    path = spec["path"]
    reasons = []
    if not os.path.isfile(path):
        reasons.append(f"{path}: missing")
    else:
        try:
            state.binary_sha256, state.binary_sha1 = binary_digests(path)
        except OSError as exc:
            reasons.append(f"{path}: cannot be read ({exc.strerror})")
        else:
            if spec["sha256"] and state.binary_sha256 != spec["sha256"]:
                reasons.append(
                    f"{path}: sha256 {state.binary_sha256} differs from the pin {spec['sha256']}"
                )
    if spec["archive"]:
        reasons += archive_reasons(spec)
    return reasons


# --- signing requests --------------------------------------------------------------------


def general_name(text: str, argument: str) -> x509.GeneralName:
    """`DNS:name` or `IP:address` as community.crypto reads it (ASCII DNS names only)."""
    kind, _, value = text.partition(":")
    if kind == "DNS" and value and value.isascii():
        return x509.DNSName(value)
    if kind == "IP" and value:
        try:
            if "/" in value:
                return x509.IPAddress(ipaddress.ip_network(value))
            return x509.IPAddress(ipaddress.ip_address(value))
        except ValueError as exc:
            raise ArgumentError(f"{argument}: {text!r}: {exc}") from exc
    raise ArgumentError(f"{argument}: {text!r} is not DNS:<ASCII name> or IP:<address>")


def key_usage(names: list[str], argument: str) -> x509.KeyUsage:
    flags = dict.fromkeys(KEY_USAGES.values(), False)
    for name in names:
        if name not in KEY_USAGES:
            raise ArgumentError(f"{argument}: unknown key usage {name!r}")
        flags[KEY_USAGES[name]] = True
    return x509.KeyUsage(**flags)


def extended_key_usage(names: list[str], argument: str) -> x509.ExtendedKeyUsage:
    oids = []
    for name in names:
        if name in EXTENDED_KEY_USAGES:
            oids.append(EXTENDED_KEY_USAGES[name])
        elif DOTTED_OID.match(name):
            oids.append(ObjectIdentifier(name))
        else:
            raise ArgumentError(f"{argument}: unknown extended key usage {name!r}")
    return x509.ExtendedKeyUsage(oids)


def basic_constraints(items: list[str], argument: str) -> x509.BasicConstraints:
    ca, path_length = False, None
    for item in items:
        if item in ("CA:TRUE", "CA:FALSE"):
            ca = item == "CA:TRUE"
        elif re.fullmatch(r"pathlen:[0-9]+", item):
            path_length = int(item.split(":")[1])
        else:
            raise ArgumentError(f"{argument}: unknown basic constraint {item!r}")
    return x509.BasicConstraints(ca=ca, path_length=path_length)


def request_extensions(
    options: dict[str, Any], argument: str
) -> list[x509.Extension[x509.ExtensionType]]:
    """The extensions openssl_csr_pipe puts into a request with these options."""
    sans = options["subject_alt_name"]
    if not sans and options["use_common_name_for_san"]:
        sans = [f"DNS:{options['common_name']}"]
    parts: list[tuple[x509.ExtensionType, bool]] = []
    if sans:
        names = [general_name(s, f"{argument}.subject_alt_name") for s in sans]
        parts.append((x509.SubjectAlternativeName(names), False))
    if options["key_usage"]:
        value = key_usage(options["key_usage"], f"{argument}.key_usage")
        parts.append((value, options["key_usage_critical"]))
    if options["extended_key_usage"]:
        value = extended_key_usage(options["extended_key_usage"], f"{argument}.extended_key_usage")
        parts.append((value, options["extended_key_usage_critical"]))
    if options["basic_constraints"]:
        value = basic_constraints(options["basic_constraints"], f"{argument}.basic_constraints")
        parts.append((value, options["basic_constraints_critical"]))
    return [x509.Extension(value.oid, critical, value) for value, critical in parts]


def parse_request(options: dict[str, Any], argument: str) -> Request:
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, options["common_name"])])
    extensions = {ext.oid: ext for ext in request_extensions(options, argument)}
    return Request(curve=options["curve"], subject=subject, extensions=extensions)


# --- keys and certificates ---------------------------------------------------------------


def read_file(path: str, reasons: list[str]) -> bytes | None:
    try:
        with open(path, "rb") as handle:
            return handle.read()
    except FileNotFoundError:
        reasons.append(f"{path}: missing")
    except OSError as exc:
        reasons.append(f"{path}: cannot be read ({exc.strerror})")
    return None


def load_key(path: str, curve: str, reasons: list[str]) -> ec.EllipticCurvePrivateKey | None:
    """The EC key in `path` when it loads; wrong curve or mode only add reasons."""
    data = read_file(path, reasons)
    if data is None:
        return None
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError, UnsupportedAlgorithm):
        # No detail from the parser: it could quote the file, and this is a secret.
        reasons.append(f"{path}: not an unencrypted PEM private key")
        return None
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        reasons.append(f"{path}: not an EC key")
        return None
    if key.curve.name != curve:
        reasons.append(f"{path}: curve {key.curve.name}, expected {curve}")
    if reason := mode_reason(path, KEY_MODE):
        reasons.append(reason)
    return key


def load_certificate(path: str, reasons: list[str]) -> x509.Certificate | None:
    data = read_file(path, reasons)
    if data is None:
        return None
    try:
        cert = x509.load_pem_x509_certificate(data)
    except ValueError:
        reasons.append(f"{path}: not a PEM certificate")
        return None
    if reason := mode_reason(path, CERT_MODE):
        reasons.append(reason)
    return cert


def public_der(key: CertificatePublicKeyTypes) -> bytes:
    return key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def name_text(name: x509.GeneralName) -> str:
    if isinstance(name, x509.DNSName):
        return f"DNS:{name.value}"
    if isinstance(name, x509.IPAddress):
        return f"IP:{name.value}"
    return repr(name)


def value_text(value: x509.ExtensionType) -> str:
    if isinstance(value, x509.SubjectAlternativeName):
        return "[" + ", ".join(name_text(n) for n in value) + "]"
    if isinstance(value, x509.SubjectKeyIdentifier):
        return f"keyid:{value.digest.hex()}"
    if isinstance(value, x509.AuthorityKeyIdentifier) and value.key_identifier is not None:
        return f"keyid:{value.key_identifier.hex()}"
    return repr(value)


def describe(ext: x509.Extension[x509.ExtensionType] | None) -> str:
    if ext is None:
        return "absent"
    return value_text(ext.value) + (" (critical)" if ext.critical else "")


def authority_key_identifier(ca: x509.Certificate) -> x509.AuthorityKeyIdentifier:
    """The identifier community.crypto's ownca provider gives certificates of this CA."""
    try:
        ski = ca.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    except x509.ExtensionNotFound:
        return x509.AuthorityKeyIdentifier.from_issuer_public_key(ca.public_key())
    return x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski)


def expected_extensions(
    cert: x509.Certificate, request: Request, issuer: x509.Certificate
) -> Extensions:
    """The request's extensions plus the key identifiers community.crypto adds when signing
    (the subject key identifier always; the authority key identifier with its own CA)."""
    expected = dict(request.extensions)
    ski = x509.SubjectKeyIdentifier.from_public_key(cert.public_key())
    expected[ski.oid] = x509.Extension(ski.oid, False, ski)
    if issuer is not cert:
        aki = authority_key_identifier(issuer)
        expected[aki.oid] = x509.Extension(aki.oid, False, aki)
    return expected


def extension_reasons(path: str, cert: x509.Certificate, expected: Extensions) -> list[str]:
    actual = {ext.oid: ext for ext in cert.extensions}
    reasons = []
    for oid in sorted(actual.keys() | expected.keys(), key=lambda o: o.dotted_string):
        if actual.get(oid) != expected.get(oid):
            name = EXTENSION_NAMES.get(oid, oid.dotted_string)
            reasons.append(
                f"{path}: {name} is {describe(actual.get(oid))}, "
                f"expected {describe(expected.get(oid))}"
            )
    return reasons


def validity_reason(
    path: str, cert: x509.Certificate, now: datetime, until: datetime
) -> str | None:
    not_before, not_after = cert.not_valid_before_utc, cert.not_valid_after_utc
    if not_before > now:
        return f"{path}: not valid before {not_before.isoformat()}"
    if not_after < until:
        return f"{path}: expires {not_after.isoformat()}, before {until.isoformat()}"
    return None


def issuer_reason(
    path: str, cert: x509.Certificate, issuer: x509.Certificate, issuer_path: str
) -> str | None:
    try:
        cert.verify_directly_issued_by(issuer)
    except (ValueError, TypeError, InvalidSignature):
        return f"{path}: not issued by {issuer_path} (issuer name or signature)"
    return None


@dataclass(frozen=True)
class Expected:
    """One certificate to check: its files, its request, the CA that must have signed it."""

    cert_path: str
    key_path: str
    request: Request
    issuer_path: str


def certificate_reasons(
    cert: x509.Certificate,
    key: ec.EllipticCurvePrivateKey | None,
    issuer: x509.Certificate,
    expected: Expected,
    window: tuple[datetime, datetime],
) -> list[str]:
    path, reasons = expected.cert_path, []
    if key is not None and public_der(cert.public_key()) != public_der(key.public_key()):
        reasons.append(f"{path}: does not hold the public key of {expected.key_path}")
    if cert.subject != expected.request.subject:
        reasons.append(
            f"{path}: subject {cert.subject.rfc4514_string()}, "
            f"expected {expected.request.subject.rfc4514_string()}"
        )
    reasons += extension_reasons(path, cert, expected_extensions(cert, expected.request, issuer))
    for reason in (
        issuer_reason(path, cert, issuer, expected.issuer_path),
        validity_reason(path, cert, *window),
    ):
        if reason:
            reasons.append(reason)
    return reasons


def check_tls(spec: dict[str, Any], now: datetime) -> list[str]:
    ca = Expected(
        spec["ca_cert"], spec["ca_key"], parse_request(spec["ca"], "tls.ca"), spec["ca_cert"]
    )
    server = Expected(
        spec["cert"], spec["key"], parse_request(spec["server"], "tls.server"), spec["ca_cert"]
    )
    if spec["renew_days"] < 0:
        raise ArgumentError("tls.renew_days: must not be negative")
    window = (now, now + timedelta(days=spec["renew_days"]))
    reasons: list[str] = []
    ca_key = load_key(ca.key_path, ca.request.curve, reasons)
    ca_cert = load_certificate(ca.cert_path, reasons)
    if ca_cert is not None:
        reasons += certificate_reasons(ca_cert, ca_key, ca_cert, ca, window)
    server_key = load_key(server.key_path, server.request.curve, reasons)
    server_cert = load_certificate(server.cert_path, reasons)
    if server_cert is not None and ca_cert is not None:
        reasons += certificate_reasons(server_cert, server_key, ca_cert, server, window)
    return reasons


def check_state(args: dict[str, Any], now: datetime) -> dict[str, Any]:
    state, reasons = State(), []
    if args["directories"] is not None:
        found = directory_reasons(args["directories"])
        state.dirs_ok, reasons = not found, reasons + found
    if args["binary"] is not None:
        found = check_binary(args["binary"], state)
        state.binary_ok, reasons = not found, reasons + found
    if args["tls"] is not None:
        found = check_tls(args["tls"], now)
        state.tls_ok, reasons = not found, reasons + found
    return {**asdict(state), "reasons": reasons}


def validated(task_args: dict[str, Any]) -> dict[str, Any]:
    """The arguments with defaults filled in; every problem in one message."""
    result = ArgumentSpecValidator(ARGUMENT_SPEC).validate(dict(task_args))
    messages = []
    for error in result.errors:
        if isinstance(error, NoLogError):  # same text as the type error reported with it
            continue
        prefix = "unsupported parameters: " if isinstance(error, UnsupportedError) else ""
        messages.append(prefix + error.args[0])
    if messages:
        raise ArgumentError("; ".join(messages))
    return result.validated_parameters


class ActionModule(ActionBase):
    TRANSFERS_FILES = False
    _requires_connection = False
    _supports_check_mode = True

    def run(
        self, tmp: str | None = None, task_vars: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        result = super().run(tmp, task_vars)
        del tmp
        try:
            state = check_state(validated(self._task.args), datetime.now(UTC))
        except ArgumentError as exc:
            raise AnsibleActionFail(f"{self._task.action}: {exc}") from exc
        result.update(state, changed=False)
        return result
