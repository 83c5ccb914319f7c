"""End to end through the app's API: two users, their IMAP accounts, a sync on the worker,
messages decrypted for their owner only and stored encrypted in PostgreSQL; Flower."""

from __future__ import annotations

import time
from typing import Any

import pytest
import requests

from stacklib import USERS, Stack, imap_subjects


def test_sync_jobs_finished_on_the_backend_of_the_active_phase(
    deployed: Stack, synced: dict[str, dict[str, Any]]
) -> None:
    backend = requests.get(deployed.app_url("app2", "/health"), timeout=10).json()["jobs"][
        "backend"
    ]
    for user in USERS:
        final = synced[user]["final"]
        assert final["status"] == "success", f"{user}: {final}"
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
