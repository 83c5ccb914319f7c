"""Web: HTML pages and the JSON API, sessions and tokens, CSRF, per-user isolation on every
endpoint that takes an id, /health and /metrics."""

from __future__ import annotations

import re
import secrets
import time
from pathlib import Path

import pytest
from flask import Flask
from flask.testing import FlaskClient
from mailhelper import users
from mailhelper.config import load_settings
from mailhelper.models import JobRun, Message
from mailhelper.runtime import Runtime, build_runtime
from mailhelper.web import create_app
from sqlalchemy import select

from tests.conftest import Mailbox, make_mailbox
from tests.mailgen import message
from tests.servers import DovecotServer


@pytest.fixture
def app(runtime: Runtime) -> Flask:
    app = create_app(runtime)
    app.config["TESTING"] = True
    return app


def token_for(client: FlaskClient, email: str, password: str) -> dict[str, str]:
    resp = client.post("/api/v1/auth/token", json={"email": email, "password": password})
    assert resp.status_code == 201, resp.json
    return {"Authorization": f"Bearer {resp.json['token']}"}


def register(client: FlaskClient) -> tuple[str, str, dict[str, str]]:
    email, password = f"{secrets.token_hex(4)}@example.org", secrets.token_urlsafe(14)
    resp = client.post("/api/v1/auth/register", json={"email": email, "password": password})
    assert resp.status_code == 201
    return email, password, token_for(client, email, password)


def csrf_of(html: str) -> str:
    match = re.search(r'name="csrf_token" value="([^"]+)"', html)
    assert match
    return match.group(1)


def poll_job(client: FlaskClient, auth: dict[str, str], job_id: int) -> dict:
    deadline = time.monotonic() + 120  # generous: CI runs this beside container suites
    while time.monotonic() < deadline:
        job = client.get(f"/api/v1/jobs/{job_id}", headers=auth).json
        if job["status"] in ("success", "failed"):
            return job
        time.sleep(0.05)
    raise AssertionError(f"job {job_id} did not finish: {job}")


def test_api_account_lifecycle_sync_and_messages(app: Flask, dovecot: DovecotServer) -> None:
    c = app.test_client()
    _, _, auth = register(c)
    assert c.get("/api/v1/me", headers=auth).status_code == 200
    imap_user, imap_pw = dovecot.add_user()
    bad = c.post(
        "/api/v1/accounts",
        headers=auth,
        json={"host": "localhost", "port": 0, "tls": "none", "username": "u", "password": "p"},
    )
    assert bad.status_code == 400
    assert "port" in bad.json["detail"]
    resp = c.post(
        "/api/v1/accounts",
        headers=auth,
        json={
            "host": "localhost",
            "port": dovecot.imaps_port,
            "tls": "implicit",
            "username": imap_user,
            "password": imap_pw,
        },
    )
    assert resp.status_code == 201
    account = resp.json
    assert "password" not in account
    raws = [message(i, 1500) for i in range(7)]
    box = Mailbox(dovecot, imap_user, imap_pw, 0, "", account["id"])
    for raw in raws:
        box.append(raw)
    sync = c.post(f"/api/v1/accounts/{account['id']}/sync", headers=auth)
    assert sync.status_code == 202  # accepted: the job runs on the legacy queue (phase 0)
    assert sync.json["job"]["backend"] == "legacy"
    job = poll_job(c, auth, sync.json["job"]["id"])
    assert (job["status"], job["backend"], job["attempts"]) == ("success", "legacy", 1)
    assert job["started_at"]
    assert job["finished_at"]
    page = c.get(f"/api/v1/accounts/{account['id']}/messages?per_page=3&page=2", headers=auth).json
    assert (page["total"], page["page"], len(page["messages"])) == (7, 2, 3)
    assert (
        c.get(f"/api/v1/accounts/{account['id']}/messages?folder=Nope", headers=auth).json["total"]
        == 0
    )
    first = page["messages"][0]
    assert first["subject"].startswith("Test ")
    one = c.get(f"/api/v1/messages/{first['id']}", headers=auth).json
    assert one["sender"].startswith("Sender ")
    assert "meeting" in one["body"] or one["body"]
    raw = c.get(f"/api/v1/messages/{first['id']}/raw", headers=auth)
    assert raw.data in raws
    got = c.get(f"/api/v1/accounts/{account['id']}", headers=auth).json
    assert got["message_count"] == 7
    patched = c.patch(f"/api/v1/accounts/{account['id']}", headers=auth, json={"password": "wrong"})
    assert patched.status_code == 200
    failed = c.post(f"/api/v1/accounts/{account['id']}/sync", headers=auth)
    assert failed.status_code == 202
    job = poll_job(c, auth, failed.json["job"]["id"])
    assert (job["status"], job["attempts"]) == ("failed", 1)  # permanent: no retry
    assert job["error"].startswith("AuthenticationError")
    assert c.delete(f"/api/v1/accounts/{account['id']}", headers=auth).status_code == 204
    assert c.get(f"/api/v1/accounts/{account['id']}", headers=auth).status_code == 404
    assert c.get("/api/v1/accounts", headers=auth).json == {"accounts": []}


def test_isolation_on_every_endpoint_with_an_id(
    app: Flask, runtime: Runtime, dovecot: DovecotServer
) -> None:
    owner = make_mailbox(runtime, dovecot)
    owner.append(message(1))
    runtime.sync.sync_account(owner.account_id)
    with runtime.sessions() as s:
        msg_id = s.scalar(select(Message.id).where(Message.account_id == owner.account_id))
        job = JobRun(
            kind="sync_user_emails",
            backend="inline",
            status="success",
            user_id=owner.user_id,
            account_id=owner.account_id,
        )
        s.add(job)
        s.commit()
        job_id = job.id
    c = app.test_client()
    _, password, auth = register(c)  # the other user
    a, m = owner.account_id, msg_id
    api = [
        ("get", f"/api/v1/accounts/{a}"),
        ("patch", f"/api/v1/accounts/{a}"),
        ("delete", f"/api/v1/accounts/{a}"),
        ("post", f"/api/v1/accounts/{a}/sync"),
        ("get", f"/api/v1/accounts/{a}/messages"),
        ("get", f"/api/v1/messages/{m}"),
        ("get", f"/api/v1/messages/{m}/raw"),
        ("get", f"/api/v1/jobs/{job_id}"),
    ]
    for method, url in api:
        resp = getattr(c, method)(url, headers=auth, json={"password": "x"})
        assert resp.status_code == 404, (method, url, resp.status_code)
        assert b"Test 1" not in resp.data
    # the same through the HTML UI with a session
    email = c.get("/api/v1/me", headers=auth).json["email"]
    html = c.get("/login").get_data(as_text=True)
    assert (
        c.post(
            "/login", data={"email": email, "password": password, "csrf_token": csrf_of(html)}
        ).status_code
        == 302
    )
    token = csrf_of(c.get("/accounts/").get_data(as_text=True))
    for method, url in [
        ("get", f"/accounts/{a}/messages"),
        ("post", f"/accounts/{a}/delete"),
        ("post", f"/accounts/{a}/sync"),
        ("get", f"/messages/{m}"),
        ("get", f"/messages/{m}/raw"),
    ]:
        resp = getattr(c, method)(url, data={"csrf_token": token})
        assert resp.status_code == 404, (method, url)
    # and the owner still has everything
    with runtime.sessions() as s:
        assert s.scalar(select(Message.id).where(Message.id == m)) == m


def test_html_flow_register_add_sync_read_logout(app: Flask, dovecot: DovecotServer) -> None:
    c = app.test_client()
    assert c.get("/").headers["Location"].endswith("/login")
    assert c.get("/accounts/").status_code == 302
    token = csrf_of(c.get("/register").get_data(as_text=True))
    assert (
        c.post("/register", data={"email": "bad", "password": "x", "csrf_token": token}).status_code
        == 400
    )
    assert (
        c.post(
            "/register", data={"email": "h@example.org", "password": "long-enough-1"}
        ).status_code
        == 400
    )  # no CSRF
    resp = c.post(
        "/register",
        data={"email": "h@example.org", "password": "long-enough-1", "csrf_token": token},
    )
    assert resp.status_code == 302
    page = c.get("/accounts/").get_data(as_text=True)
    assert "No accounts yet" in page
    token = csrf_of(page)
    imap_user, imap_pw = dovecot.add_user()
    box = Mailbox(dovecot, imap_user, imap_pw, 0, "", 0)
    box.append(message(5, subject="<script>alert(1)</script> hello"))
    form = {
        "host": "localhost",
        "port": str(dovecot.imap_port),
        "tls": "starttls",
        "username": imap_user,
        "password": imap_pw,
        "csrf_token": token,
    }
    assert c.post("/accounts/", data={**form, "port": "x"}).status_code == 303
    assert c.post("/accounts/", data=form).status_code == 303
    page = c.get("/accounts/").get_data(as_text=True)
    account_id = int(re.search(r"/accounts/(\d+)/messages", page).group(1))
    assert c.post(f"/accounts/{account_id}/sync", data={"csrf_token": token}).status_code == 303
    page = c.get("/accounts/").get_data(as_text=True)
    job_id = int(re.search(r"sync queued \(job (\d+)\)", page).group(1))
    app.extensions["mailhelper"].jobs.close()  # drains the legacy queue: the job is done
    with app.extensions["mailhelper"].sessions() as s:
        assert s.get(JobRun, job_id).status == "success"
    listing = c.get(f"/accounts/{account_id}/messages").get_data(as_text=True)
    assert "&lt;script&gt;" in listing
    assert "<script>alert" not in listing
    msg_id = int(re.search(r"/messages/(\d+)", listing).group(1))
    shown = c.get(f"/messages/{msg_id}")
    assert shown.status_code == 200
    assert "Sender 5" in shown.get_data(as_text=True)
    assert c.get(f"/messages/{msg_id}/raw").data.startswith(b"From: Sender 5")
    assert c.get(f"/accounts/{account_id}/messages?page=x").status_code == 400
    assert c.post(f"/accounts/{account_id}/delete", data={"csrf_token": token}).status_code == 303
    assert c.post("/logout", data={"csrf_token": token}).status_code == 302
    assert c.get("/accounts/").status_code == 302
    token = csrf_of(c.get("/login").get_data(as_text=True))
    assert (
        c.post(
            "/login", data={"email": "h@example.org", "password": "wrong", "csrf_token": token}
        ).status_code
        == 401
    )
    ok = c.post(
        "/login?next=//evil.example/",
        data={"email": "h@example.org", "password": "long-enough-1", "csrf_token": token},
    )
    assert ok.headers["Location"] == "/accounts/"


def test_api_session_auth_needs_csrf_and_tokens_can_be_revoked(app: Flask) -> None:
    c = app.test_client()
    email, password, auth = register(c)
    assert c.get("/api/v1/accounts").status_code == 401
    assert c.get("/api/v1/accounts", headers={"Authorization": "Bearer nope"}).status_code == 401
    assert (
        c.post("/api/v1/auth/login", json={"email": email, "password": "wrong-one"}).status_code
        == 401
    )
    assert (
        c.post("/api/v1/auth/token", json={"email": email, "password": "wrong-one"}).status_code
        == 401
    )
    assert c.post("/api/v1/auth/register", data="x").status_code == 400
    dup = c.post("/api/v1/auth/register", json={"email": email, "password": password})
    assert dup.status_code == 400
    login = c.post("/api/v1/auth/login", json={"email": email, "password": password})
    csrf = login.json["csrf_token"]
    assert c.get("/api/v1/accounts").status_code == 200
    body = {"host": "h", "port": 993, "tls": "implicit", "username": "u", "password": "p"}
    assert c.post("/api/v1/accounts", json=body).status_code == 400  # no CSRF header
    assert c.post("/api/v1/accounts", json=body, headers={"X-CSRF-Token": csrf}).status_code == 201
    assert c.post("/api/v1/auth/logout", headers={"X-CSRF-Token": csrf}).status_code == 204
    assert c.get("/api/v1/accounts").status_code == 401
    assert c.delete("/api/v1/auth/token", headers=auth).status_code == 204
    assert c.get("/api/v1/me", headers=auth).status_code == 401


def test_health_and_metrics(app: Flask, runtime: Runtime) -> None:
    c = app.test_client()
    ok = c.get("/health")
    assert ok.status_code == 200
    assert ok.json["checks"] == {"database": {"status": "ok"}, "key_provider": {"status": "ok"}}
    metrics = c.get("/metrics")
    assert metrics.status_code == 200
    assert metrics.content_type.startswith("text/plain")
    assert b"mailhelper_http_requests_total" in metrics.data
    assert b"mailhelper_sync_runs_total" in metrics.data
    assert ok.headers["X-Frame-Options"] == "DENY"


def test_the_web_app_makes_the_unknown_address_hash_at_start(runtime: Runtime) -> None:
    # So that the first login with an unknown address costs what every later one does.
    users._dummy_hash.cache_clear()
    create_app(runtime)
    assert users._dummy_hash.cache_info().currsize == 1


def test_health_is_503_when_database_or_key_file_fail(
    base_env: dict[str, str], tmp_path: Path
) -> None:
    url = f"sqlite:///{tmp_path / 'gone' / 'db.sqlite'}"
    rt = build_runtime(load_settings({**base_env, "DATABASE_URL": url}))
    try:
        (tmp_path / "gone" / "db.sqlite").unlink(missing_ok=True)
        (tmp_path / "gone").rmdir()
        rt.settings.local_key_file.unlink()
        resp = create_app(rt).test_client().get("/health")
        assert resp.status_code == 503
        assert resp.json["checks"]["key_provider"]["status"] == "fail"
        assert resp.json["checks"]["database"]["status"] == "fail"
    finally:
        rt.close()


def test_metrics_in_gunicorn_multiprocess_mode(
    app: Flask, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path))
    resp = app.test_client().get("/metrics")
    assert resp.status_code == 200


def test_wsgi_entry_point_builds_the_app_from_the_environment(
    base_env: dict[str, str], sqlite_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    import importlib
    import sys

    for key, value in {**base_env, "DATABASE_URL": sqlite_url}.items():
        monkeypatch.setenv(key, value)
    sys.modules.pop("mailhelper.wsgi", None)
    wsgi = importlib.import_module("mailhelper.wsgi")
    try:
        assert wsgi.app.test_client().get("/health").status_code == 200
    finally:
        wsgi.app.extensions["mailhelper"].close()
        sys.modules.pop("mailhelper.wsgi", None)


def test_registration_can_be_closed(base_env: dict[str, str], sqlite_url: str) -> None:
    rt = build_runtime(
        load_settings({**base_env, "DATABASE_URL": sqlite_url, "MAILHELPER_REGISTRATION": "closed"})
    )
    try:
        c = create_app(rt).test_client()
        assert c.get("/register").status_code == 403
        resp = c.post(
            "/api/v1/auth/register", json={"email": "a@example.org", "password": "x" * 12}
        )
        assert resp.status_code == 403
        assert "closed" in resp.json["detail"]
    finally:
        rt.close()
