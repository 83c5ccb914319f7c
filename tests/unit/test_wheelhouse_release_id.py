"""The release ID of a wheelhouse (roles/mail_app/files/build_wheelhouse.py) follows the
builder image's content, not its tag: `make` names the base image by its recipe's hash and a
plain ansible-playbook run by `latest`, and alternating them must not install the same code
again as a new release (and restart every unit)."""

from __future__ import annotations

import importlib.util
import os
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "roles/mail_app/files/build_wheelhouse.py"
BASE_IMAGE = subprocess.run(
    [str(ROOT / "tests/harness/base-image/build.sh"), "--print-tag"],
    capture_output=True,
    text=True,
    check=True,
).stdout.strip()


def load_script():
    spec = importlib.util.spec_from_file_location("build_wheelhouse", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_two_tags_of_one_image_give_one_release() -> None:
    script = load_script()
    alias = f"kimh-test-alias:{os.getpid()}"
    subprocess.run(["docker", "tag", BASE_IMAGE, alias], check=True)
    try:
        first = script.image_identity(BASE_IMAGE, "docker")
        second = script.image_identity(alias, "docker")
    finally:
        subprocess.run(["docker", "rmi", alias], capture_output=True, check=False)
    assert first.startswith("sha256:")
    assert first == second
    source = ROOT / "app"
    assert script.source_hash(source, first) == script.source_hash(source, second)


def test_another_image_gives_another_release() -> None:
    script = load_script()
    source = ROOT / "app"
    assert script.source_hash(source, "sha256:" + "0" * 64) != script.source_hash(
        source, script.image_identity(BASE_IMAGE, "docker")
    )


def test_an_unknown_image_is_named_as_given() -> None:
    script = load_script()
    assert script.image_identity("kimh-no-such-image:never", "docker") == "kimh-no-such-image:never"
