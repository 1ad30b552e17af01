"""Shared fixtures: real `mlflow server` processes, small synthetic data, the real file when present."""

from __future__ import annotations

import contextlib
import os
import signal
import uuid
from pathlib import Path

import pandas as pd
import pytest

from credit_risk.devtools.tracking_server import start_tracking_server
from credit_risk.features import FEATURES, TARGET
from credit_risk.settings import TrainerSettings
from credit_risk.training import pipeline
from credit_risk.training.candidates import CANDIDATES
from support.data import REAL_CSV, synthetic_frame, write_kaggle_csv
from support.requirements import unavailable

os.environ["MLFLOW_DISABLE_TELEMETRY"] = "true"

TESTS = Path(__file__).resolve().parent
# Fixtures that start a real server: a unit test (tests/unit/) must not ask for one.
SERVER_FIXTURES = frozenset({"mlflow_server", "tracking_uri"})


def pytest_collection_modifyitems(config, items):
    """Mark every test in tests/integration/ `integration`, and keep servers out of the unit tier."""
    for item in items:
        path = Path(item.path)
        if path.is_relative_to(TESTS / "integration"):
            item.add_marker(pytest.mark.integration)
        elif path.is_relative_to(TESTS / "unit") and SERVER_FIXTURES & set(item.fixturenames):
            raise pytest.UsageError(
                f"{item.nodeid} is a unit test but starts a server: move it to tests/integration/"
            )


@pytest.fixture
def synthetic_csv(tmp_path) -> Path:
    return write_kaggle_csv(synthetic_frame(), tmp_path / "cs-training.csv")


@pytest.fixture
def real_csv() -> Path:
    if not REAL_CSV.exists():  # under CI a failure: .ci/run runs `make data`
        unavailable("data", f"{REAL_CSV} not present: run `make data` to fetch it")
    return REAL_CSV


@pytest.fixture(scope="session")
def candidate_frame() -> pd.DataFrame:
    """1,000 synthetic rows the candidate pipelines are fitted on (read-only: shared by the session)."""
    return synthetic_frame(1000, seed=5)


@pytest.fixture(scope="session")
def fitted_candidates(candidate_frame) -> dict:
    """Every candidate pipeline, fitted on `candidate_frame`, by candidate name."""
    X, y = candidate_frame[list(FEATURES)].to_numpy(), candidate_frame[TARGET].to_numpy()
    return {c.name: c.build(0).fit(X, y) for c in CANDIDATES}


@pytest.fixture(scope="session")
def mlflow_server(tmp_path_factory):
    """A real `mlflow server` on SQLite and a local artifact folder, on a free port."""
    root = tmp_path_factory.mktemp("mlflow")
    server = start_tracking_server(
        backend_store_uri=f"sqlite:///{root / 'mlflow.db'}",
        artifacts_destination=str(root / "artifacts"),
        log_path=root / "server.log",
        timeout=180,  # ~10 s idle; over 60 s seen on this shared 2-core machine under several suites
    )
    yield server
    server.stop()


@pytest.fixture
def tracking_uri(mlflow_server) -> str:
    return mlflow_server.url


@pytest.fixture
def model_name() -> str:
    """A registered-model name of the test's own, so tests sharing a server never collide."""
    return f"credit-risk-test-{uuid.uuid4().hex[:8]}"


@pytest.fixture
def run_training(tracking_uri, monkeypatch):
    """Train in-process (quicker than a subprocess); MLflow's variables are restored afterwards."""
    # configure_mlflow writes these; deleting them through monkeypatch restores them at teardown.
    for var in (
        "TRACKING_URI",
        "HTTP_REQUEST_MAX_RETRIES",
        "HTTP_REQUEST_TIMEOUT",
        "HTTP_REQUEST_BACKOFF_FACTOR",
    ):
        monkeypatch.delenv(f"MLFLOW_{var}", raising=False)

    def _run(csv: Path, model_name: str, **overrides):
        settings = TrainerSettings(
            mlflow_tracking_uri=tracking_uri,
            experiment=model_name,
            model_name=model_name,
            mlflow_wait_seconds=10,
            **overrides,
        )
        return pipeline.train(csv, settings)

    return _run


def _live_children(parent: int) -> list[tuple[int, int, str]]:
    """(pid, process group, command line) of the live child processes of `parent`, from /proc."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
            cmdline = (stat.parent / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:  # ended meanwhile
            continue
        state, ppid, pgid = fields[0], int(fields[1]), int(fields[2])
        if ppid == parent and state != "Z":
            found.append((int(stat.parent.name), pgid, cmdline.strip()))
    return found


@pytest.hookimpl(trylast=True)  # after pytest's own, which tears down what -x or Ctrl-C left up
def pytest_sessionfinish(session):
    """Stop what a test left running (a failure path that skipped a fixture's teardown), say so, and
    fail the session.

    Every fixture stops what it starts; anything still running here is a leak: an `mlflow server`
    or an API outliving the run would hold its port and memory until the machine stops.
    """
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    leaks = _live_children(os.getpid())
    if leaks and session.exitstatus in (pytest.ExitCode.OK, pytest.ExitCode.NO_TESTS_COLLECTED):
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
    for pid, pgid, cmdline in leaks:
        with contextlib.suppress(ProcessLookupError):
            if pgid == pid:  # started in a session of its own: its workers go with it
                os.killpg(pid, signal.SIGKILL)
            else:
                os.kill(pid, signal.SIGKILL)
            if reporter is not None:
                reporter.ensure_newline()
                reporter.write_line(
                    f"conftest: LEAK (session fails): stopped a process left running: {pid} {cmdline[:200]}",
                    red=True,
                )
