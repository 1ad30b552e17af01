"""Build the stand-in base images (tests/docker/standins) once per machine.

No image registry is reachable here, so the images our Dockerfiles and compose file name
(python, postgres, MinIO) are made locally from Debian: debootstrap a bookworm rootfs, import
it, then build each stand-in over it. Each stand-in has a content key (its own files, its
parent's key, and for the Debian layer the host's CA bundle, which the builds reach the
registries through), recorded beside the image id it built in a cache file: a tag whose image
and key match the record is reused as is. The key is kept out of the image itself so that a
rebuild with unchanged files gives the same image id, and the project's images stay cached.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
STANDINS = HERE / "standins"
CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")
# Set by debian.Dockerfile, inherited by every stand-in: tells ours from a real image of that name.
STANDIN_LABEL = "credit-risk.standin"
ROOTFS = "credit-risk-standin/debian-rootfs:bookworm"
DEBIAN = "credit-risk-standin/debian:bookworm"
S3 = "credit-risk-standin/s3:3.7.1"
# Tag the project's files use -> the stand-in's Dockerfile in standins/.
PYTHON = "python:3.11.14-slim-bookworm"
POSTGRES = "postgres:16-bookworm"
# Tag -> (its Dockerfile and the files it copies, under standins/), Debian first: the others build on it.
IMAGES = {
    DEBIAN: ["debian.Dockerfile"],
    PYTHON: ["python.Dockerfile"],
    POSTGRES: ["postgres.Dockerfile", "postgres-entrypoint.sh"],
    S3: ["s3.Dockerfile", "s3/package.json", "s3/package-lock.json", "s3/minio-standin.js", "s3/mc"],
}
MIRROR = "http://deb.debian.org/debian"
CACHE = Path.home() / ".cache" / "credit-risk-standins"
RECORD = CACHE / "images.json"

log = logging.getLogger(__name__)


@dataclass
class StandinReport:
    """What ensure_standins did: seconds per step, and which tags it (re)built."""

    seconds: dict[str, float]
    built: list[str]


def content_key(tag: str) -> str:
    """SHA256 over the stand-in's files and its parent's key (Debian's: the host's CA bundle)."""
    digest = hashlib.sha256()
    for name in IMAGES[tag]:
        digest.update(name.encode() + b"\0" + (STANDINS / name).read_bytes() + b"\0")
    parent = CA_BUNDLE.read_bytes() if tag == DEBIAN else content_key(DEBIAN).encode()
    digest.update(parent)
    return digest.hexdigest()


def image_id(tag: str) -> str | None:
    """The id of a local image, None when there is none."""
    result = subprocess.run(
        ["docker", "image", "inspect", "--format", "{{.Id}}", tag], capture_output=True, text=True
    )
    return result.stdout.strip() if result.returncode == 0 else None


def run(command: list[str], **kwargs) -> subprocess.CompletedProcess:
    """Run a command; on failure raise with the end of its output (not just the exit status)."""
    result = subprocess.run(command, capture_output=True, text=True, **kwargs)
    if result.returncode != 0:
        tail = (result.stdout + result.stderr)[-3000:]
        raise RuntimeError(f"{' '.join(command[:4])} ... exited {result.returncode}:\n{tail}")
    return result


def image_label(tag: str, label: str) -> str | None:
    """A label of a local image; None when there is no such image, "" when it lacks the label."""
    result = subprocess.run(
        ["docker", "image", "inspect", "--format", f'{{{{ index .Config.Labels "{label}" }}}}', tag],
        capture_output=True,
        text=True,
    )
    if result.returncode != 0:
        return None
    value = result.stdout.strip()
    return "" if value == "<no value>" else value


def _import_rootfs() -> None:
    """debootstrap --variant=minbase bookworm, imported as ROOTFS (~30 s)."""
    with tempfile.TemporaryDirectory(prefix="credit-risk-rootfs-", dir="/var/tmp") as tmp:
        root = Path(tmp) / "rootfs"
        run(["debootstrap", "--variant=minbase", "bookworm", str(root), MIRROR])
        tar = subprocess.Popen(["tar", "-C", str(root), "-c", "."], stdout=subprocess.PIPE)
        imported = subprocess.run(["docker", "import", "-", ROOTFS], stdin=tar.stdout, capture_output=True)
        if tar.wait() != 0 or imported.returncode != 0:
            raise RuntimeError(f"importing the debootstrap rootfs failed: {imported.stderr[-2000:]!r}")


def _s3_node_modules() -> Path:
    """s3rver and its dependencies from standins/s3/package-lock.json (npm ci on the host, cached)."""
    lock = STANDINS / "s3" / "package-lock.json"
    target = CACHE / f"s3-{hashlib.sha256(lock.read_bytes()).hexdigest()[:16]}"
    if not (target / "node_modules" / "s3rver").is_dir():
        target.mkdir(parents=True, exist_ok=True)
        for name in ["package.json", "package-lock.json"]:
            shutil.copy(STANDINS / "s3" / name, target / name)
        run(["npm", "ci", "--omit=dev", "--no-audit", "--no-fund"], cwd=target)
    return target / "node_modules"


def ensure_standins() -> StandinReport:
    """Make sure every stand-in exists and matches its content key; build what does not."""
    seconds: dict[str, float] = {}
    built: list[str] = []
    if image_id(ROOTFS) is None:
        start = time.monotonic()
        _import_rootfs()
        seconds["debootstrap + import"] = time.monotonic() - start
        built.append(ROOTFS)
    record = json.loads(RECORD.read_text()) if RECORD.is_file() else {}
    # An image of a project name that we did not make (a real one, pulled): used, never overwritten.
    foreign = [tag for tag in (PYTHON, POSTGRES) if image_label(tag, STANDIN_LABEL) == ""]
    for tag in foreign:
        log.info("using the existing image %s (not a stand-in)", tag)
    wanted = {tag: {"key": content_key(tag), "id": image_id(tag)} for tag in IMAGES if tag not in foreign}
    stale = [tag for tag, want in wanted.items() if want["id"] is None or record.get(tag) != want]
    if not stale:
        return StandinReport(seconds, built)
    with tempfile.TemporaryDirectory(prefix="credit-risk-standins-") as tmp:
        context = Path(tmp)
        shutil.copytree(STANDINS, context, dirs_exist_ok=True)
        shutil.copy(CA_BUNDLE, context / "ca-certificates.crt")
        if S3 in stale:
            shutil.copytree(_s3_node_modules(), context / "s3" / "node_modules")
        for tag in stale:
            start = time.monotonic()
            run(
                ["docker", "build", "-t", tag, "-f", str(context / IMAGES[tag][0]), str(context)],
                # Debian's engine has no buildx: the classic builder, which docker-compose 1.29 uses too.
                env={**os.environ, "DOCKER_BUILDKIT": "0"},
            )
            seconds[tag] = time.monotonic() - start
            built.append(tag)
            record[tag] = {"key": wanted[tag]["key"], "id": image_id(tag)}
            CACHE.mkdir(parents=True, exist_ok=True)
            RECORD.write_text(json.dumps(record, indent=2))
    return StandinReport(seconds, built)
