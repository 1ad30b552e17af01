"""Helpers for the API's tests (and the stack/fault tests): models, payloads, an API subprocess.

Models are registered without the trainer: a HistGradientBoosting pipeline fitted on synthetic
rows, logged with our own `log_model` (skops, signature, threshold and dataset hash in the
metadata), registered, and moved between stages with the same REST call the MLflow UI makes.
"""

from __future__ import annotations

import functools
import resource
import signal
import subprocess
import sys
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import httpx
import mlflow
import pandas as pd
from mlflow.tracking import MlflowClient
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.pipeline import Pipeline, make_pipeline

from credit_risk.devtools.tracking_server import free_port, server_env
from credit_risk.features import FEATURES, TARGET, CreditFeatures
from credit_risk.model_io import log_model
from support.data import synthetic_frame

# Test metrics as the trainer names them, so /model/info has something to show.
RUN_METRICS = {"roc_auc": 0.81, "gini": 0.62, "ks": 0.47, "brier": 0.05}


@functools.cache
def fitted_pipeline(seed: int = 0, signal: float = 1.0) -> tuple[Pipeline, pd.DataFrame]:
    """A small fitted pipeline and its training frame (cached: fitting is the slow part)."""
    df = synthetic_frame(2000, seed=seed, signal=signal)
    X = df.loc[:, list(FEATURES)].to_numpy(dtype="float64")
    pipeline = make_pipeline(CreditFeatures(), HistGradientBoostingClassifier(max_iter=20, random_state=0))
    pipeline.fit(X, df[TARGET].to_numpy())
    return pipeline, df


def set_stage(tracking_uri: str, name: str, version: str, stage: str, archive_existing: bool = False) -> None:
    """Move a version to a stage (the REST call behind the UI's "Transition to" menu)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        MlflowClient(tracking_uri).transition_model_version_stage(
            name, version, stage, archive_existing_versions=archive_existing
        )


def register_model(
    tracking_uri: str,
    name: str,
    stage: str | None = "Production",
    seed: int = 0,
    threshold: float = 0.3,
    dataset_hash: str = "sha256-test",
    pipeline: Pipeline | None = None,
    experiment: str = "api-tests",
) -> str:
    """Log, register and (optionally) stage a model version; returns the version number."""
    fitted, df = fitted_pipeline(seed)
    mlflow.set_tracking_uri(tracking_uri)
    mlflow.set_experiment(experiment)
    with mlflow.start_run():
        info = log_model(pipeline or fitted, df.head(5), threshold, dataset_hash)
        mlflow.log_metrics(RUN_METRICS)
    mv = mlflow.register_model(info.model_uri, name)
    if stage is not None:
        set_stage(tracking_uri, name, mv.version, stage, archive_existing=stage == "Production")
    return str(mv.version)


# Written out, not imported from the API's schema: the tests check that /docs shows the seed's payload.
SEED_PAYLOAD = {
    "RevolvingUtilizationOfUnsecuredLines": 0.766127,
    "age": 45,
    "NumberOfTime30_59DaysPastDueNotWorse": 2,
    "DebtRatio": 0.802982,
    "MonthlyIncome": 9120.0,
    "NumberOfOpenCreditLinesAndLoans": 13,
    "NumberOfTimes90DaysLate": 0,
    "NumberRealEstateLoansOrLines": 6,
    "NumberOfTime60_89DaysPastDueNotWorse": 0,
    "NumberOfDependents": 2,
}


def payloads(n: int, seed: int = 1) -> list[dict]:
    """`n` valid request bodies (JSON-ready: null where the data is missing)."""
    df = synthetic_frame(n, seed=seed).loc[:, list(FEATURES)]
    return [{k: (None if pd.isna(v) else float(v)) for k, v in row.items()} for row in df.to_dict("records")]


def wait_until(predicate: Callable[[], bool], timeout: float, what: str, interval: float = 0.1) -> None:
    """Poll `predicate` until true; fail the test with `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")


def metric_histories(tracking_uri: str, experiment: str, key: str = "probability") -> list[tuple]:
    """(run, history of metric `key`) for every run of the experiment."""
    client = MlflowClient(tracking_uri)
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        return []
    runs = client.search_runs([exp.experiment_id], max_results=1000)
    return [(run, client.get_metric_history(run.info.run_id, key)) for run in runs]


def logged_points(tracking_uri: str, experiment: str, key: str = "probability") -> list[tuple[str, int]]:
    """(run_id, step) of every point of metric `key` in every run of the experiment."""
    return [
        (run.info.run_id, m.step)
        for run, history in metric_histories(tracking_uri, experiment, key)
        for m in history
    ]


@dataclass
class ApiProcess:
    """`python -m credit_risk.api` running as a subprocess."""

    process: subprocess.Popen
    url: str
    log_path: Path

    def terminate(self, timeout: float = 60.0) -> int:
        """SIGTERM, as Docker sends it; returns the exit code."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return self.process.returncode

    def terminate_cleanly(self, timeout: float = 60.0) -> bool:
        """SIGTERM; True when the lifespan shutdown ran to the end.

        uvicorn re-raises the captured SIGTERM after its graceful shutdown, so a clean exit
        reads as -15 (143 in a container), not 0.
        """
        code = self.terminate(timeout)
        return code in (0, -signal.SIGTERM) and "Application shutdown complete" in self.log()

    def log(self) -> str:
        """The process's output so far."""
        return self.log_path.read_text(errors="replace")


def start_api_process(
    env: dict[str, str], log_path: Path, timeout: float = 120.0, max_file_bytes: int | None = None
) -> ApiProcess:
    """Start the API with `env` on top of ours (API_PORT chosen here) and wait until it is live.

    It starts in ~5 s; the 120 s default is for a shared 2-core machine running several suites,
    where a start took over 60 s (seen while fixing issue 14). Killed if it does not get live.

    `max_file_bytes` sets the process's RLIMIT_FSIZE: a write past it fails with EFBIG, as on a
    full disk (Python ignores SIGXFSZ, so the write raises OSError instead of killing it).
    """
    port = free_port()
    full_env = server_env({"API_HOST": "127.0.0.1", "API_PORT": str(port), **env})

    def limit_file_size() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (max_file_bytes, max_file_bytes))

    with open(log_path, "ab") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "credit_risk.api"],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=full_env,
            preexec_fn=limit_file_size if max_file_bytes else None,  # only setrlimit: safe after fork
        )
    api = ApiProcess(process, f"http://127.0.0.1:{port}", log_path)

    def live() -> bool:
        if process.poll() is not None:
            raise AssertionError(f"API exited with {process.returncode}:\n{api.log()[-3000:]}")
        try:
            return httpx.get(f"{api.url}/health/live", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    try:
        wait_until(live, timeout, "the API process to answer /health/live")
    except BaseException:
        if process.poll() is None:  # never leave it running (the session's reaper would fail the run)
            process.kill()
            process.wait()
        raise
    return api
