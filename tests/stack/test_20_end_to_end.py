"""End to end through the app's API: two users, their IMAP accounts, a sync on the worker,
messages decrypted for their owner only and stored encrypted in PostgreSQL; Flower."""

from __future__ import annotations

import imaplib
import ssl
import time
from typing import Any

import pytest
import requests

from stacklib import Stack

USERS = ("alice", "bob")


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
                subjects.append(header.split(":", 1)[1].strip())
    return subjects


class Api:
    def __init__(self, base: str, token: str) -> None:
        self.base, self.headers = base, {"Authorization": f"Bearer {token}"}

    def get(self, path: str) -> requests.Response:
        return requests.get(self.base + path, headers=self.headers, timeout=30)

    def post(self, path: str, body: dict[str, Any] | None = None) -> requests.Response:
        return requests.post(self.base + path, json=body or {}, headers=self.headers, timeout=30)


@pytest.fixture(scope="module")
def synced(deployed: Stack) -> dict[str, dict[str, Any]]:
    """Both users created, an account each added through app1, synced by the worker."""
    out: dict[str, dict[str, Any]] = {}
    for user in USERS:
        email, password = f"{user}@example.org", f"stack-test-{user}-pw"
        deployed.admin("app1", ["create-user", "--email", email], stdin=f"{password}\n{password}\n")
        token = requests.post(
            deployed.app_url("app1", "/api/v1/auth/token"),
            json={"email": email, "password": password},
            timeout=30,
        )
        assert token.status_code == 201, token.text
        # The second app host serves the same users (shared database and Vault).
        api = Api(deployed.app_url("app2", "/api/v1"), token.json()["token"])
        account = api.post(
            "/accounts",
            {
                "host": "imap1",
                "port": 993,
                "tls": "implicit",
                "username": user,
                "password": deployed.imap_password(user),
            },
        )
        assert account.status_code == 201, account.text
        job = api.post(f"/accounts/{account.json()['id']}/sync")
        assert job.status_code == 202, job.text
        out[user] = {"api": api, "account": account.json()["id"], "job": job.json()["job"]}
    deadline = time.monotonic() + 180
    for user in USERS:
        while True:
            state = out[user]["api"].get(f"/jobs/{out[user]['job']['id']}").json()
            if state["status"] in ("done", "failed") or time.monotonic() > deadline:
                break
            time.sleep(1)
        out[user]["final"] = state
    return out


def test_sync_jobs_finished_on_the_backend_of_the_active_phase(
    deployed: Stack, synced: dict[str, dict[str, Any]]
) -> None:
    backend = requests.get(deployed.app_url("app2", "/health"), timeout=10).json()["jobs"][
        "backend"
    ]
    for user in USERS:
        final = synced[user]["final"]
        assert final["status"] == "done", f"{user}: {final}"
        assert final["backend"] == backend, f"{user}: {final}"


def test_every_message_arrived_and_decrypts_for_its_owner(
    deployed: Stack, synced: dict[str, dict[str, Any]]
) -> None:
    for user in USERS:
        api, account = synced[user]["api"], synced[user]["account"]
        expected = sorted(imap_subjects(deployed, user))
        listing = api.get(f"/accounts/{account}/messages?per_page=100").json()
        assert listing["total"] == len(expected) > 0
        subjects = []
        for item in listing["messages"]:
            full = api.get(f"/messages/{item['id']}")
            assert full.status_code == 200, full.text
            subjects.append(full.json()["subject"])
        assert sorted(subjects) == expected


def test_users_cannot_read_each_others_messages(synced: dict[str, dict[str, Any]]) -> None:
    alice, bob = synced["alice"], synced["bob"]
    first = alice["api"].get(f"/accounts/{alice['account']}/messages").json()["messages"][0]
    assert bob["api"].get(f"/messages/{first['id']}").status_code == 404
    assert bob["api"].get(f"/accounts/{alice['account']}/messages").status_code == 404


def test_messages_are_stored_encrypted(deployed: Stack, synced: dict[str, dict[str, Any]]) -> None:
    dump = deployed.exec(
        "data1",
        [
            "runuser",
            "-u",
            "postgres",
            "--",
            "pg_dump",
            "--data-only",
            "--table=messages",
            "mailhelper",
        ],
    ).stdout
    rows = [
        line for line in dump.splitlines() if line and not line.startswith(("--", "SET", "SELECT"))
    ]
    assert len(rows) > 25, "the dump holds no message rows"
    for user in USERS:
        for subject in imap_subjects(deployed, user)[:10]:
            assert subject not in dump, f"plain subject {subject!r} found in the messages table"


def test_health_is_ok_on_every_app_host(deployed: Stack) -> None:
    for host in ("app1", "app2"):
        health = requests.get(deployed.app_url(host, "/health"), timeout=10)
        assert health.status_code == 200, health.text


def test_flower_requires_credentials_and_lists_the_worker(deployed: Stack) -> None:
    base = f"http://{deployed.ip('worker1')}:5555"
    assert requests.get(f"{base}/api/workers", timeout=10).status_code == 401
    creds = deployed.vault().secrets.kv.v2.read_secret_version(
        path="mailhelper/flower", mount_point="kv", raise_on_deleted_version=True
    )["data"]["data"]
    deadline = time.monotonic() + 60
    while True:
        workers = requests.get(
            f"{base}/api/workers?refresh=1", auth=(creds["username"], creds["password"]), timeout=30
        )
        assert workers.status_code == 200, workers.text
        if any("worker1" in name for name in workers.json()) or time.monotonic() > deadline:
            break
        time.sleep(2)
    assert any("worker1" in name for name in workers.json()), workers.json()


def test_flower_is_not_published_on_the_app_hosts(deployed: Stack) -> None:
    for host in ("app1", "app2"):
        with pytest.raises(requests.ConnectionError):
            requests.get(f"http://{deployed.ip(host)}:5555/", timeout=5)
