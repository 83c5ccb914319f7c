"""site.yml deploys the whole stack onto separate hosts, and a second run changes nothing."""

from __future__ import annotations

import json
import time

import requests

from stacklib import RESULTS, TIMINGS, Api, Stack, imap_subjects, run_playbook


def test_every_app_host_is_healthy_after_the_cold_deploy(deployed: Stack) -> None:
    for host in ("app1", "app2"):
        assert deployed.app_healthy(host), f"{host}: /health is not 200"


def test_the_background_package_installs_ran_to_the_end(deployed: Stack) -> None:
    """packages_ahead.yml's background jobs (their results in the async job files) succeeded:
    the apt job of each host that lacked packages, and on the app, workers and Flower hosts
    the job that built the release's virtualenv. The tiers found their packages and the
    release installed, not a fallback install of their own after a failed job."""
    read = (
        "import glob, json; print(json.dumps([json.load(open(f))"
        " for f in glob.glob('/root/.ansible_async/*')]))"
    )
    expected = {"data1": 1, "imap1": 1, "app1": 2, "app2": 2, "worker1": 2, "vault1": 0}
    for host, count in expected.items():
        jobs = json.loads(deployed.exec(host, ["python3", "-c", read]).stdout)
        assert len(jobs) == count, f"{host}: {len(jobs)} background jobs, expected {count}"
        failed = [job.get("stderr", job) for job in jobs if job.get("failed") or job.get("rc")]
        assert not failed, f"{host}: {failed}"
        assert all(job.get("changed") for job in jobs), f"{host}: a job did not finish: {jobs}"


def test_postgresql_installed_before_the_other_packages(deployed: Stack) -> None:
    """On data1 the job ran PostgreSQL's transaction to the end before Redis's began (the
    database tier, which comes first, waits only for its own packages): dpkg's log has
    PostgreSQL installed before it starts on redis-server."""
    log = deployed.exec("data1", ["cat", "/var/log/dpkg.log"]).stdout.splitlines()

    def first(event: str) -> int:
        found = [number for number, line in enumerate(log) if f" {event}:amd64 " in line]
        assert found, f"data1: no '{event}' in /var/log/dpkg.log"
        return found[0]

    postgresql_done = first("status installed postgresql-15")
    redis_started = first("install redis-server")
    assert postgresql_done < redis_started, f"{log[redis_started]}\n{log[postgresql_done]}"


def test_second_site_run_reports_no_change(deployed: Stack) -> None:
    start = time.monotonic()
    result = run_playbook("playbooks/site.yml", log="site-second")
    TIMINGS["site.yml second (no change)"] = time.monotonic() - start
    assert result.returncode == 0, result.tail()
    assert set(result.recap) >= {"vault1", "data1", "app1", "app2", "worker1", "imap1"}, (
        result.recap
    )
    changed = {
        host: counts["changed"] for host, counts in result.recap.items() if counts["changed"]
    }
    assert not changed, "\n".join(result.changed_tasks())


def test_check_mode_previews_a_change_and_applies_none(deployed: Stack) -> None:
    """`site.yml --check --diff`, as an operator previews a change: it runs through, shows the
    configuration diffs and the restarts they would cause, and changes nothing: the hosts keep
    their files, and a check run without the change reports changed=0."""
    result = run_playbook(
        "playbooks/site.yml",
        "--check",
        "--diff",
        "-e",
        "redis_maxmemory=600mb",
        "-e",
        "mail_app_gunicorn_timeout=31",
        log="site-check",
    )
    assert result.returncode == 0, result.tail()
    changed = "\n".join(result.changed_tasks())
    assert "redis : Restart redis" in changed, changed
    assert "mail_app : Restart mail-helper" in changed, changed
    assert "+maxmemory 600mb" in result.output
    assert "+  --timeout 31" in result.output
    conf = deployed.exec("data1", ["grep", "^maxmemory ", "/etc/redis/redis.conf"]).stdout
    assert conf.strip() == "maxmemory 512mb"
    again = run_playbook("playbooks/site.yml", "--check", log="site-check-unchanged")
    assert again.returncode == 0, again.tail()
    assert not any(counts["changed"] for counts in again.recap.values()), "\n".join(
        again.changed_tasks()
    )


def test_a_secret_id_vault_no_longer_accepts_is_replaced(deployed: Stack) -> None:
    """playbooks/tasks/vault_client.yml: the host's own login check (library/
    kimh_approle_check.py) finds that Flower's secret_id is refused, a new one is issued and
    written, Flower restarts with it and answers with the credentials it reads from Vault; the
    next run keeps it (changed=0)."""
    secret_file = "/etc/mail-helper/flower-credentials/vault-secret-id"
    deployed.exec("worker1", ["sh", "-c", f"echo not-a-secret-id > {secret_file}"])
    result = run_playbook("playbooks/flower.yml", log="flower-reissue")
    assert result.returncode == 0, result.tail()
    changed = "\n".join(result.changed_tasks())
    assert "Issue a new secret_id where the old one does not log in" in changed, changed
    assert "flower : Restart flower" in changed, changed
    new_secret = deployed.exec("worker1", ["cat", secret_file]).stdout.strip()
    assert new_secret
    assert new_secret != "not-a-secret-id"
    creds = deployed.vault().secrets.kv.v2.read_secret_version(
        path="mailhelper/flower", mount_point="kv", raise_on_deleted_version=True
    )["data"]["data"]
    base = f"http://{deployed.ip('worker1')}:5555"
    deadline = time.monotonic() + 60
    status = 0
    while status != 200 and time.monotonic() < deadline:
        try:
            status = requests.get(
                f"{base}/api/workers", auth=(creds["username"], creds["password"]), timeout=10
            ).status_code
        except requests.ConnectionError:
            status = 0
        time.sleep(1)
    assert status == 200
    again = run_playbook("playbooks/flower.yml", log="flower-reissue-again")
    assert again.returncode == 0, again.tail()
    assert again.recap["worker1"]["changed"] == 0, "\n".join(again.changed_tasks())
    assert deployed.exec("worker1", ["cat", secret_file]).stdout.strip() == new_secret


def test_site_prints_where_the_app_and_flower_answer(deployed: Stack) -> None:
    output = (RESULTS / "stack-site-second.log").read_text()
    assert f"App:    http://{deployed.ip('app1')}:8000" in output
    assert f"Flower: http://{deployed.ip('worker1')}:5555" in output
    assert "Vault CA, init output and deployer credentials:" in output


def test_the_deploy_leaves_a_demo_login_with_its_mailbox_synced(deployed: Stack) -> None:
    """playbooks/demo_login.yml: the app user of the demo mailbox exists, logs in with the
    generated password, and the cold deploy synced every message of the mailbox."""
    password = (deployed.state_dir / "demo_login").read_text().strip()
    # A token, not the login's session: its cookie is Secure, and the test talks plain HTTP.
    token = requests.post(
        deployed.app_url("app2", "/api/v1/auth/token"),
        json={"email": "demo@example.org", "password": password},
        timeout=30,
    )
    assert token.status_code == 201, token.text
    api = Api(deployed.app_url("app2", "/api/v1"), token.json()["token"])
    accounts = api.get("/accounts").json()
    assert [(a["host"], a["username"]) for a in accounts["accounts"]] == [("imap1", "demo")]
    synced = accounts["accounts"][0]["message_count"]
    assert synced == len(imap_subjects(deployed, "demo")) > 0
    output = (RESULTS / "stack-site-cold.log").read_text()
    assert f"Demo login demo@example.org: {synced} messages synced from demo@imap1" in output
