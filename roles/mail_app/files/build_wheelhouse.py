#!/usr/bin/env python3
"""Build (or reuse) the wheelhouse of the mailhelper app on the controller.

The wheels are resolved and built inside a container of the target distribution's image, so
environment markers and compiled wheels match the targets' Python, not the controller's.
The result is cached under CACHE/<release>/ (release = <version>-<hash>, the hash covers the
lock file, the app's sources and the builder image) together with CACHE/<release>.tar, the
archive the role copies to the hosts. Prints one JSON object; "changed" is true only when a
build ran.

Usage: build_wheelhouse.py --source APP_DIR --cache DIR --image IMAGE [--engine docker]
"""

from __future__ import annotations

import argparse
import ast
import hashlib
import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tomllib
from pathlib import Path

RECIPE = "1"  # bump when the build steps below change in a way that changes the result
SKIP_DIRS = {"__pycache__", "build", "dist", ".pytest_cache", ".mypy_cache"}

BUILD_SCRIPT = r"""
set -eu
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq >/dev/null
apt-get install -y -qq --no-install-recommends python3-pip python3-venv python3-wheel >/dev/null
cp -r /src /tmp/app
rm -rf /tmp/app/build /tmp/app/src/*.egg-info
python3 -m pip wheel --no-cache-dir --disable-pip-version-check -q \
  -w /out/wheels -r /tmp/app/requirements.lock /tmp/app
cp /tmp/app/requirements.lock /out/wheels/requirements.lock
python3 -c 'import sys; print("%d.%d.%d" % sys.version_info[:3])' > /out/python-version
chown -R "$OUT_UID:$OUT_GID" /out
"""


def source_files(source: Path) -> list[Path]:
    files = [source / "requirements.lock", source / "pyproject.toml"]
    for root, dirs, names in os.walk(source / "src"):
        dirs[:] = sorted(d for d in dirs if d not in SKIP_DIRS and not d.endswith(".egg-info"))
        files += [Path(root) / n for n in sorted(names) if not n.endswith((".pyc", ".pyo"))]
    return files


def image_identity(image: str, engine: str) -> str:
    """The image's content ID: the same image under another tag (`latest` and the recipe
    hash tag `make` exports) must give the same release. The name when the engine does not
    know the image (the build then says so)."""
    result = subprocess.run(  # noqa: S603 - argv of the configured engine, no shell
        [engine, "image", "inspect", "--format", "{{.Id}}", image],
        capture_output=True,
        text=True,
        check=False,
    )
    return result.stdout.strip() if result.returncode == 0 and result.stdout.strip() else image


def source_hash(source: Path, image_id: str) -> str:
    digest = hashlib.sha256(f"recipe={RECIPE}\nimage={image_id}\n".encode())
    for path in source_files(source):
        digest.update(str(path.relative_to(source)).encode() + b"\0")
        digest.update(hashlib.sha256(path.read_bytes()).digest())
    return digest.hexdigest()


def known_settings(source: Path) -> list[str]:
    """The KNOWN_VARIABLES set of mailhelper.config (what its config file may contain)."""
    tree = ast.parse((source / "src/mailhelper/config.py").read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.Assign) and any(
            isinstance(t, ast.Name) and t.id == "KNOWN_VARIABLES" for t in node.targets
        ):
            return sorted(
                n.value
                for n in ast.walk(node.value)
                if isinstance(n, ast.Constant) and isinstance(n.value, str)
            )
    raise SystemExit("KNOWN_VARIABLES not found in src/mailhelper/config.py")


def write_archive(directory: Path, archive: Path) -> None:
    """A reproducible tar of the release directory (sorted, no owners, fixed times)."""
    tmp = archive.with_suffix(".tar.tmp")
    with tarfile.open(tmp, "w", format=tarfile.PAX_FORMAT) as tar:
        for path in sorted(directory.rglob("*")):
            info = tar.gettarinfo(str(path), str(path.relative_to(directory)))
            info.uid = info.gid = 0
            info.uname = info.gname = "root"
            info.mtime = 0
            info.mode = 0o755 if path.is_dir() else 0o644
            if path.is_file():
                with path.open("rb") as fh:
                    tar.addfile(info, fh)
            else:
                tar.addfile(info)
    tmp.replace(archive)


def build(source: Path, image: str, engine: str, out: Path) -> None:
    out.mkdir(parents=True)
    cmd = [
        engine, "run", "--rm", "--network", "host",
        "-e", f"OUT_UID={os.getuid()}", "-e", f"OUT_GID={os.getgid()}",
        "-v", f"{source}:/src:ro", "-v", f"{out}:/out",
        "--entrypoint", "/bin/sh", image, "-c", BUILD_SCRIPT,
    ]  # fmt: skip
    result = subprocess.run(cmd, capture_output=True, text=True, check=False)  # noqa: S603
    if result.returncode != 0:
        sys.stderr.write(result.stdout[-4000:] + result.stderr[-4000:])
        raise SystemExit(f"wheel build in {image} failed (exit {result.returncode})")


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--source", required=True, type=Path)
    ap.add_argument("--cache", required=True, type=Path)
    ap.add_argument("--image", required=True)
    ap.add_argument("--engine", default="docker")
    args = ap.parse_args()
    source = args.source.resolve()
    version = tomllib.loads((source / "pyproject.toml").read_text())["project"]["version"]
    digest = source_hash(source, image_identity(args.image, args.engine))
    release = f"{version}-{digest[:12]}"
    target = args.cache / release
    archive = args.cache / f"{release}.tar"
    changed = False
    if not (target / ".complete").is_file() or not archive.is_file():
        changed = True
        args.cache.mkdir(parents=True, exist_ok=True, mode=0o700)
        tmp = args.cache / f".tmp-{release}-{os.getpid()}"
        try:
            build(source, args.image, args.engine, tmp)
            (tmp / "known-settings.json").write_text(json.dumps(known_settings(source)) + "\n")
            (tmp / "release.json").write_text(
                json.dumps({"release": release, "version": version, "source_hash": digest}) + "\n"
            )
            sums = io.StringIO()
            for wheel in sorted((tmp / "wheels").iterdir()):
                sums.write(f"{hashlib.sha256(wheel.read_bytes()).hexdigest()}  {wheel.name}\n")
            (tmp / "wheels" / "SHA256SUMS").write_text(sums.getvalue())
            shutil.rmtree(target, ignore_errors=True)
            tmp.rename(target)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        write_archive(target, archive)
        (target / ".complete").write_text(release + "\n")
    info = json.loads((target / "release.json").read_text())
    print(
        json.dumps(
            {
                "changed": changed,
                "release": release,
                "version": version,
                "archive": str(archive),
                "python": (target / "python-version").read_text().strip(),
                "known_settings": json.loads((target / "known-settings.json").read_text()),
                "source_hash": info["source_hash"],
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
