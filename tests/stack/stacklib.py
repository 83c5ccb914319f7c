"""Helpers of the stack scenario: the containers, playbook runs, the app's API and Vault."""

from __future__ import annotations

import email.header
import imaplib
import json
import os
import re
import ssl
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import hvac
import requests
import testinfra

USERS = ("alice", "bob")
ROOT = Path(__file__).resolve().parents[2]
INVENTORY = ROOT / "tests" / "stack" / "inventory"
RESULTS = ROOT / "tests" / ".results"
# Wall times of the scenario's steps, printed at the end of the session.
TIMINGS: dict[str, float] = {}
RECAP = re.compile(
    r"^(?P<host>\S+)\s+: ok=(?P<ok>\d+)\s+changed=(?P<changed>\d+)"
    r"\s+unreachable=(?P<unreachable>\d+)"
    r"\s+failed=(?P<failed>\d+)",
    re.MULTILINE,
)


@dataclass
class PlaybookResult:
    returncode: int
    output: str
    seconds: float
    recap: dict[str, dict[str, int]] = field(default_factory=dict)

    def tail(self, lines: int = 60) -> str:
        return "\n".join(self.output.splitlines()[-lines:])

    def changed_tasks(self) -> list[str]:
        """Names of the tasks that reported `changed` (for a readable idempotence failure)."""
        names, current = [], ""
        for line in self.output.splitlines():
            if line.startswith(("TASK [", "RUNNING HANDLER [")):
                current = line.split("[", 1)[1].rsplit("]", 1)[0]
            elif line.startswith("changed:"):
                names.append(f"{current}: {line}")
        return names


def run_playbook(playbook: str, *args: str, log: str | None = None) -> PlaybookResult:
    """ansible-playbook against the stack inventory; output kept in tests/.results."""
    env = dict(
        os.environ, ANSIBLE_CONFIG=str(ROOT / "ansible.cfg"), NO_COLOR="1", ANSIBLE_FORCE_COLOR="0"
    )
    argv = ["ansible-playbook", "-i", str(INVENTORY), playbook, *args]
    start = time.monotonic()
    proc = subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True, check=False)
    output = proc.stdout + proc.stderr
    if log:
        RESULTS.mkdir(parents=True, exist_ok=True)
        (RESULTS / f"stack-{log}.log").write_text(output)
    recap = {
        m["host"]: {k: int(m[k]) for k in ("ok", "changed", "unreachable", "failed")}
        for m in RECAP.finditer(output)
    }
    return PlaybookResult(proc.returncode, output, time.monotonic() - start, recap)


@dataclass
class Stack:
    stack_id: str
    state_dir: Path

    @classmethod
    def from_env(cls) -> Stack:
        stack_id = os.environ.get("KIMH_STACK_ID", "dev")
        default_state = Path.home() / ".cache" / "ki-mail-helper" / f"stack-{stack_id}"
        return cls(stack_id, Path(os.environ.get("KIMH_STACK_STATE", default_state)))

    # Containers -------------------------------------------------------------------------
    def container(self, host: str) -> str:
        return f"kimh-stack-{self.stack_id}-{host}"

    def is_up(self) -> bool:
        proc = subprocess.run(
            ["docker", "inspect", "-f", "{{.State.Running}}", self.container("vault1")],
            capture_output=True,
            text=True,
            check=False,
        )
        return proc.stdout.strip() == "true"

    def ip(self, host: str) -> str:
        fmt = "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}"
        out = subprocess.run(
            ["docker", "inspect", "-f", fmt, self.container(host)],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        assert out, f"{host} has no address"
        return out

    def exec(
        self, host: str, argv: list[str], stdin: str | None = None, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        """Run a command in a host (stdin, not the command line, carries secrets)."""
        proc = subprocess.run(
            ["docker", "exec", "-i", self.container(host), *argv],
            input=stdin or "",
            capture_output=True,
            text=True,
            check=False,
        )
        if check and proc.returncode != 0:
            raise AssertionError(f"{host}: {argv} exited {proc.returncode}: {proc.stderr.strip()}")
        return proc

    def host(self, host: str) -> Any:
        return testinfra.get_host(f"docker://{self.container(host)}")

    # The app ----------------------------------------------------------------------------
    def app_url(self, host: str, path: str = "") -> str:
        return f"http://{self.ip(host)}:8000{path}"

    def app_healthy(self, host: str) -> bool:
        try:
            return requests.get(self.app_url(host, "/health"), timeout=5).status_code == 200
        except (requests.RequestException, subprocess.CalledProcessError):
            return False

    def admin(self, host: str, args: list[str], stdin: str | None = None) -> str:
        return self.exec(host, ["/usr/local/sbin/mail-helper-admin", *args], stdin=stdin).stdout

    # Vault ------------------------------------------------------------------------------
    def vault(self) -> hvac.Client:
        """A client logged in as the deployer, from the controller (as the playbooks are)."""
        creds = json.loads((self.state_dir / "vault" / "deployer.json").read_text())
        client = hvac.Client(
            url=f"https://{self.ip('vault1')}:8200",
            verify=str(self.state_dir / "vault" / "tls" / "ca.crt"),
        )
        client.auth.approle.login(role_id=creds["role_id"], secret_id=creds["secret_id"])
        return client

    def stack_secrets(self) -> dict[str, str]:
        """Every generated stack secret, by name (KV) plus the services' AppRole secret_ids."""
        client = self.vault()
        found: dict[str, str] = {}
        for path in ("postgresql", "postgresql-migrator", "redis", "flask", "flower"):
            data = client.secrets.kv.v2.read_secret_version(
                path=f"mailhelper/{path}", mount_point="kv", raise_on_deleted_version=True
            )["data"]["data"]
            for key, value in data.items():
                if key != "username":
                    found[f"kv/mailhelper/{path}.{key}"] = value
        for host, path in (
            ("app1", "/etc/mail-helper/credentials/vault-secret-id"),
            ("app2", "/etc/mail-helper/credentials/vault-secret-id"),
            ("app1", "/etc/mail-helper/credentials/vault-migrator-secret-id"),
            ("app2", "/etc/mail-helper/credentials/vault-migrator-secret-id"),
            ("worker1", "/etc/mail-helper/worker-credentials/vault-secret-id"),
            ("worker1", "/etc/mail-helper/flower-credentials/vault-secret-id"),
        ):
            found[f"{host}:{path}"] = self.exec(host, ["cat", path]).stdout.strip()
        return found

    def psql(self, sql: str) -> str:
        """SQL on the database host as postgres (for injecting gate figures in tests)."""
        return self.exec(
            "data1",
            [
                "runuser",
                "-u",
                "postgres",
                "--",
                "psql",
                "-d",
                "mailhelper",
                "-v",
                "ON_ERROR_STOP=1",
                "-tAc",
                sql,
            ],
        ).stdout.strip()

    def health(self, host: str) -> dict[str, Any]:
        return requests.get(self.app_url(host, "/health"), timeout=10).json()

    def state_file(self, host: str) -> dict[str, Any]:
        out = self.exec(host, ["cat", "/etc/ansible/facts.d/mailhelper_phase.fact"], check=False)
        return json.loads(out.stdout) if out.returncode == 0 else {}

    def imap_password(self, user: str) -> str:
        return (self.state_dir / f"imap_{user}").read_text().strip()


def imap_subjects(stack: Stack, user: str) -> list[str]:
    """Ground truth: every subject in the demo mailbox, straight from Dovecot."""
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE  # only the test reads here; the app verifies
    subjects = []
    with imaplib.IMAP4_SSL(stack.ip("imap1"), 993, ssl_context=ctx) as imap:
        imap.login(user, stack.imap_password(user))
        for folder in ("INBOX", "Archive"):
            imap.select(folder, readonly=True)
            _, data = imap.search(None, "ALL")
            for num in data[0].split():
                _, parts = imap.fetch(num, "(BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
                header = parts[0][1].decode().strip()
                raw = " ".join(header.split(":", 1)[1].split())  # unfolded
                subjects.append(str(email.header.make_header(email.header.decode_header(raw))))
    return subjects


class Api:
    def __init__(self, base: str, token: str) -> None:
        self.base, self.headers = base, {"Authorization": f"Bearer {token}"}

    def get(self, path: str) -> requests.Response:
        return requests.get(self.base + path, headers=self.headers, timeout=30)

    def post(self, path: str, body: dict[str, Any] | None = None) -> requests.Response:
        return requests.post(self.base + path, json=body or {}, headers=self.headers, timeout=30)
