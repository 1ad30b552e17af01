"""Fixtures of the Docker tier: an engine, the stand-in bases, the compose project under test.

A plugin the tier's test modules load (`pytest_plugins`), not a conftest.py: the flat suite
imports `from conftest import ...`, which a second conftest module would shadow.

Without an engine the tier skips, saying why; under CI=true that is a failure instead (CI must
run it). `make test-docker` (DOCKER_TIER_INSTALL=1) and CI may install and start the engine.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator

import pytest
from compose_stack import ROOT, Stack, make_stack
from docker_engine import Engine, EngineUnavailable, provide_engine
from standin_images import ensure_standins
from tier_figures import FIGURES, record

IN_CI = os.environ.get("CI") == "true"
MINIO_IMAGE = "minio/minio:RELEASE.2025-09-07T16-13-09Z"


def pytest_terminal_summary(terminalreporter) -> None:
    if FIGURES:
        terminalreporter.section("docker tier figures")
        for name, value in FIGURES.items():
            terminalreporter.write_line(f"{name:<44} {value}")


@pytest.fixture(scope="session")
def docker_engine() -> Iterator[Engine]:
    """An engine that answers `docker info`; stopped at the end only if this session started it."""
    start = time.monotonic()
    may_install = IN_CI or os.environ.get("DOCKER_TIER_INSTALL") == "1"
    try:
        engine = provide_engine(may_install)
    except EngineUnavailable as e:
        if IN_CI:
            pytest.fail(f"CI=true and no Docker engine: {e}", pytrace=False)
        pytest.skip(f"Docker tier: {e}")
    for step, seconds in engine.seconds.items():
        record(step, f"{seconds:.0f} s")
    record("engine ready", f"{time.monotonic() - start:.0f} s (installed: {engine.installed or 'nothing'})")
    yield engine
    engine.stop()


@pytest.fixture(scope="session")
def standins(docker_engine) -> None:
    """The stand-in bases (built once per machine, reused while their content key holds)."""
    start = time.monotonic()
    report = ensure_standins()
    record("stand-in bases", f"{time.monotonic() - start:.0f} s (built: {', '.join(report.built) or 'none'})")


@pytest.fixture(scope="session")
def stack(standins) -> Iterator[Stack]:
    """The compose project under test, reset at the start; `down -v` at the end (images kept)."""
    if not (ROOT / "data" / "cs-training.csv").is_file():
        message = "data/cs-training.csv is missing: run `make data` first"
        if IN_CI:
            pytest.fail(message, pytrace=False)
        pytest.skip(message)
    stack = make_stack(MINIO_IMAGE)
    stack.compose("down", "-v", "--remove-orphans")
    yield stack
    stack.compose("down", "-v", "--remove-orphans", check=False)
