"""Shared fixtures: real `mlflow server` processes, small synthetic data, the real file when present."""

from __future__ import annotations

import contextlib
import os
import signal
import uuid
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from credit_risk.features import CSV_TO_API, FEATURES, TARGET
from credit_risk.server import start_tracking_server

os.environ["MLFLOW_DISABLE_TELEMETRY"] = "true"

ROOT = Path(__file__).resolve().parents[1]
REAL_CSV = ROOT / "data" / "cs-training.csv"
API_TO_CSV = {v: k for k, v in CSV_TO_API.items()}


def synthetic_frame(n: int = 3000, seed: int = 0, signal: float = 1.0) -> pd.DataFrame:
    """Rows shaped like the real file (API names), with a learnable target.

    `signal` scales how much the target depends on the features: 0 gives a useless model.
    """
    rng = np.random.default_rng(seed)
    df = pd.DataFrame(
        {
            "RevolvingUtilizationOfUnsecuredLines": rng.beta(0.6, 2.0, n),
            "age": rng.integers(21, 90, n).astype(float),
            "NumberOfTime30_59DaysPastDueNotWorse": rng.poisson(0.3, n).astype(float),
            "DebtRatio": rng.gamma(1.2, 0.4, n),
            "MonthlyIncome": rng.gamma(2.0, 3000.0, n).round(),
            "NumberOfOpenCreditLinesAndLoans": rng.poisson(8, n).astype(float),
            "NumberOfTimes90DaysLate": rng.poisson(0.15, n).astype(float),
            "NumberRealEstateLoansOrLines": rng.poisson(1, n).astype(float),
            "NumberOfTime60_89DaysPastDueNotWorse": rng.poisson(0.1, n).astype(float),
            "NumberOfDependents": rng.poisson(0.8, n).astype(float),
        }
    )
    df.loc[rng.random(n) < 0.15, "MonthlyIncome"] = np.nan
    df.loc[rng.random(n) < 0.02, "NumberOfDependents"] = np.nan
    logit = -3.0 + signal * (
        2.5 * df["RevolvingUtilizationOfUnsecuredLines"]
        - 0.03 * (df["age"] - 50)
        + 0.8 * df["NumberOfTime30_59DaysPastDueNotWorse"]
        + 1.2 * df["NumberOfTimes90DaysLate"]
    )
    df.insert(0, TARGET, (rng.random(n) < 1 / (1 + np.exp(-logit))).astype(int))
    return df[[TARGET, *FEATURES]]


def write_kaggle_csv(df: pd.DataFrame, path: Path, id_column: str = "", line_ending: str = "\r\n") -> Path:
    """Write a frame the way Kaggle's file looks: hyphenated names, blank id column, NA, CRLF."""
    out = df.rename(columns=API_TO_CSV)
    out.insert(0, id_column, range(1, len(out) + 1))
    out.to_csv(path, index=False, na_rep="NA", lineterminator=line_ending)
    return path


@pytest.fixture
def synthetic_csv(tmp_path) -> Path:
    return write_kaggle_csv(synthetic_frame(), tmp_path / "cs-training.csv")


@pytest.fixture
def real_csv() -> Path:
    if not REAL_CSV.exists():
        pytest.skip(f"{REAL_CSV} not present: run `make data` to fetch it")
    return REAL_CSV


@pytest.fixture(scope="session")
def mlflow_server(tmp_path_factory):
    """A real `mlflow server` on SQLite and a local artifact folder, on a free port."""
    root = tmp_path_factory.mktemp("mlflow")
    server = start_tracking_server(
        backend_store_uri=f"sqlite:///{root / 'mlflow.db'}",
        artifacts_destination=str(root / "artifacts"),
        log_path=root / "server.log",
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
    """Stop what a test left running (a failure path that skipped a fixture's teardown), and say so.

    Every fixture stops what it starts; anything still running here is a leak: an `mlflow server`
    or an API outliving the run would hold its port and memory until the machine stops.
    """
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    for pid, pgid, cmdline in _live_children(os.getpid()):
        with contextlib.suppress(ProcessLookupError):
            if pgid == pid:  # started in a session of its own: its workers go with it
                os.killpg(pid, signal.SIGKILL)
            else:
                os.kill(pid, signal.SIGKILL)
            if reporter is not None:
                reporter.ensure_newline()
                reporter.write_line(f"conftest: stopped a process a test left running: {pid} {cmdline[:200]}")
