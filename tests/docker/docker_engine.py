"""A Docker engine for the tier: use the one that answers, or install and start Debian's.

On a fresh machine (root, Debian) `provide_engine` installs docker.io, docker-compose (1.29),
debootstrap and npm when missing, starts `dockerd` in the background if none answers, and
`Engine.stop` stops only a daemon that it started itself.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

# Command -> the Debian package that brings it.
PACKAGES = {
    "dockerd": "docker.io",
    "docker-compose": "docker-compose",
    "debootstrap": "debootstrap",
    "npm": "npm",
}


class EngineUnavailable(Exception):
    """No engine answers and none can be provided here; the message says why."""


@dataclass
class Engine:
    """The engine the tier runs on, and what was done to get it (for the report)."""

    installed: list[str] = field(default_factory=list)
    started: subprocess.Popen | None = None
    log_path: Path | None = None
    seconds: dict[str, float] = field(default_factory=dict)

    def stop(self) -> None:
        """Stop dockerd if this session started it (its containers stop with it)."""
        if self.started is None or self.started.poll() is not None:
            return
        self.started.send_signal(signal.SIGTERM)
        try:
            self.started.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.started.kill()
            self.started.wait(timeout=10)


def engine_answers(timeout: float = 15) -> bool:
    """Whether `docker info` reaches a daemon."""
    if shutil.which("docker") is None:
        return False
    try:
        return subprocess.run(["docker", "info"], capture_output=True, timeout=timeout).returncode == 0
    except subprocess.TimeoutExpired:
        return False


def missing_commands() -> list[str]:
    """Commands the tier needs that are not on the PATH (dockerd only when no engine answers)."""
    needed = [c for c in PACKAGES if c != "dockerd"]
    if not engine_answers():
        needed.append("dockerd")
    return [c for c in needed if shutil.which(c) is None]


def _install(commands: list[str]) -> list[str]:
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        raise EngineUnavailable(
            f"missing {', '.join(commands)} and this is not root on Debian (no apt-get): install "
            f"{', '.join(PACKAGES[c] for c in commands)} or start a Docker engine yourself"
        )
    packages = sorted({PACKAGES[c] for c in commands})
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for command in (
        ["apt-get", "update", "-qq"],
        ["apt-get", "install", "-y", "-qq", "--no-install-recommends", *packages],
    ):
        result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=900)
        if result.returncode != 0:
            raise EngineUnavailable(f"{' '.join(command)} failed: {result.stderr[-2000:]}")
    return packages


def _start_dockerd(deadline_s: float = 90) -> tuple[subprocess.Popen, Path]:
    log_path = Path(tempfile.mkdtemp(prefix="credit-risk-dockerd-")) / "dockerd.log"
    # --ip 127.0.0.1: ports the compose file publishes on all interfaces stay on loopback here.
    process = subprocess.Popen(
        ["dockerd", "--ip", "127.0.0.1"],
        stdout=log_path.open("wb"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    deadline = time.monotonic() + deadline_s
    while not engine_answers(timeout=5):
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            tail = log_path.read_text(errors="replace")[-2000:]
            raise EngineUnavailable(f"dockerd did not come up (log {log_path}):\n{tail}")
        time.sleep(1)
    return process, log_path


def provide_engine(may_install: bool) -> Engine:
    """An engine that answers, installing and starting one if `may_install`; else EngineUnavailable."""
    engine = Engine()
    missing = missing_commands()
    if missing:
        if not may_install:
            raise EngineUnavailable(
                f"missing {', '.join(missing)}: `make test-docker` installs Debian's packages and "
                "starts dockerd (as root), or start a Docker engine yourself"
            )
        start = time.monotonic()
        engine.installed = _install(missing)
        engine.seconds["install packages"] = time.monotonic() - start
    if not engine_answers():
        if not may_install:
            raise EngineUnavailable("no Docker engine answers `docker info`: `make test-docker` starts one")
        if os.geteuid() != 0:
            raise EngineUnavailable("no Docker engine answers and only root may start dockerd here")
        start = time.monotonic()
        engine.started, engine.log_path = _start_dockerd()
        engine.seconds["start dockerd"] = time.monotonic() - start
    return engine
