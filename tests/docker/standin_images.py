"""Build the stand-in base images (tests/docker/standins) once per machine.

No image registry is reachable here, so the images our Dockerfiles and compose file name
(python, postgres, MinIO) are made locally from Debian: debootstrap a bookworm rootfs, import
it, then build each stand-in over it. Every stand-in is labelled with a content key (the files
of standins/ plus the host's CA bundle, which the builds reach the registries through); a tag
that carries the current key is reused as is.
"""

from __future__ import annotations

import hashlib
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
KEY_LABEL = "credit-risk.standin-key"
ROOTFS = "credit-risk-standin/debian-rootfs:bookworm"
DEBIAN = "credit-risk-standin/debian:bookworm"
S3 = "credit-risk-standin/s3:3.7.1"
# Tag the project's files use -> the stand-in's Dockerfile in standins/.
PYTHON = "python:3.11.14-slim-bookworm"
POSTGRES = "postgres:16-bookworm"
IMAGES = {
    DEBIAN: "debian.Dockerfile",
    PYTHON: "python.Dockerfile",
    POSTGRES: "postgres.Dockerfile",
    S3: "s3.Dockerfile",
}
MIRROR = "http://deb.debian.org/debian"
NODE_CACHE = Path.home() / ".cache" / "credit-risk-standins"

log = logging.getLogger(__name__)


@dataclass
class StandinReport:
    """What ensure_standins did: seconds per step, and which tags it (re)built."""

    seconds: dict[str, float]
    built: list[str]


def content_key() -> str:
    """SHA256 over every file of standins/ and the host's CA bundle."""
    digest = hashlib.sha256()
    for path in sorted(p for p in STANDINS.rglob("*") if p.is_file()):
        digest.update(str(path.relative_to(STANDINS)).encode() + b"\0" + path.read_bytes() + b"\0")
    digest.update(CA_BUNDLE.read_bytes())
    return digest.hexdigest()


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
    target = NODE_CACHE / f"s3-{hashlib.sha256(lock.read_bytes()).hexdigest()[:16]}"
    if not (target / "node_modules" / "s3rver").is_dir():
        target.mkdir(parents=True, exist_ok=True)
        for name in ["package.json", "package-lock.json"]:
            shutil.copy(STANDINS / "s3" / name, target / name)
        run(["npm", "ci", "--omit=dev", "--no-audit", "--no-fund"], cwd=target)
    return target / "node_modules"


def ensure_standins() -> StandinReport:
    """Make sure every stand-in exists with the current content key; build what is missing."""
    seconds: dict[str, float] = {}
    built: list[str] = []
    key = content_key()
    if image_label(ROOTFS, "org.opencontainers.image.title") is None:
        start = time.monotonic()
        _import_rootfs()
        seconds["debootstrap + import"] = time.monotonic() - start
        built.append(ROOTFS)
    labels = {tag: image_label(tag, KEY_LABEL) for tag in IMAGES}
    # An image of a project name that we did not make (a real one, pulled): used, never overwritten.
    foreign = [tag for tag in (PYTHON, POSTGRES) if labels[tag] == ""]
    for tag in foreign:
        log.info("using the existing image %s (not a stand-in)", tag)
    stale = [tag for tag in IMAGES if labels[tag] != key and tag not in foreign]
    if not stale:
        return StandinReport(seconds, built)
    with tempfile.TemporaryDirectory(prefix="credit-risk-standins-") as tmp:
        context = Path(tmp)
        shutil.copytree(STANDINS, context, dirs_exist_ok=True)
        shutil.copy(CA_BUNDLE, context / "ca-certificates.crt")
        if S3 in stale:
            shutil.copytree(_s3_node_modules(), context / "s3" / "node_modules")
        # Debian first: the others are built on it.
        for tag in [t for t in IMAGES if t in stale]:
            start = time.monotonic()
            run(
                ["docker", "build", "--label", f"{KEY_LABEL}={key}", "-t", tag,
                 "-f", str(context / IMAGES[tag]), str(context)],
                # Debian's engine has no buildx: the classic builder, which docker-compose 1.29 uses too.
                env={**os.environ, "DOCKER_BUILDKIT": "0"},
            )  # fmt: skip
            seconds[tag] = time.monotonic() - start
            built.append(tag)
    return StandinReport(seconds, built)
