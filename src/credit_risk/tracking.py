"""Talking to the tracking server: process-wide MLflow settings, waiting for it, and experiments."""

from __future__ import annotations

import logging
import os
import subprocess
import time
import urllib.error
import urllib.request

import mlflow
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from credit_risk.settings import MlflowClientSettings

log = logging.getLogger(__name__)


class TrackingServerUnavailable(Exception):
    """The tracking server did not answer within the allowed time."""


def configure_mlflow(settings: MlflowClientSettings) -> None:
    """Set MLflow's own variables for this process before any client call.

    MLflow reads these from the environment, not from arguments, so this is the one place
    we write them: telemetry off (it also raced with os.environ and crashed a client call),
    and HTTP retries short enough that a dead server fails a call in seconds.
    """
    os.environ["MLFLOW_DISABLE_TELEMETRY"] = "true"
    os.environ["MLFLOW_TRACKING_URI"] = settings.mlflow_tracking_uri
    os.environ["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] = str(settings.mlflow_http_request_max_retries)
    os.environ["MLFLOW_HTTP_REQUEST_TIMEOUT"] = str(settings.mlflow_http_request_timeout)
    os.environ["MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR"] = str(settings.mlflow_http_request_backoff_factor)
    # The fluent API (mlflow.start_run) prefers a URI set earlier in this process over the
    # variable: pin ours, or an in-process caller would log to whatever was set before.
    mlflow.set_tracking_uri(settings.mlflow_tracking_uri)


def http_get(url: str, timeout: float = 2.0) -> tuple[int, str]:
    """Status and body of a GET; (0, reason) when nothing answers."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:  # noqa: S310 - URLs of our own servers
            return r.status, r.read().decode(errors="replace")
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode(errors="replace")
    except (urllib.error.URLError, OSError, ValueError) as e:
        return 0, str(e)


def wait_healthy(
    url: str,
    timeout: float,
    process: subprocess.Popen | None = None,
    path: str = "/health",
    what: str = "mlflow server",
) -> None:
    """Poll `url + path` until it answers 200; fail early if `process` (the server) exits.

    Raises RuntimeError when the process exited and TimeoutError, with the last answer, when
    `timeout` seconds passed.
    """
    deadline = time.monotonic() + timeout
    status, body = 0, "no answer"
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"{what} exited with code {process.returncode}")
        status, body = http_get(f"{url.rstrip('/')}{path}", timeout=min(2.0, timeout))
        if status == 200:
            return
        time.sleep(0.2)
    raise TimeoutError(f"{what} at {url} not healthy after {timeout:.0f}s: {status} {body[:300]}")


def wait_for_tracking_server(uri: str, timeout_s: float = 60.0) -> MlflowClient:
    """Wait with exponential backoff until the server answers, then return a client.

    `/health` alone is not enough: MLflow 3 answers it even for a Host header it will
    reject on API calls, so the last check is a real (cheap) API call.
    """
    client = MlflowClient(tracking_uri=uri)
    if not uri.startswith(("http://", "https://")):
        return client  # a local store (sqlite, file) needs no server
    deadline = time.monotonic() + timeout_s
    delay, last_error = 0.25, "no answer"
    while True:
        if http_get(f"{uri.rstrip('/')}/health", timeout=min(5.0, timeout_s))[0] == 200:
            try:
                client.search_experiments(max_results=1)
                return client
            except Exception as e:  # the server is up but refuses us: keep the reason
                last_error = f"API call refused: {e}"
        else:
            last_error = f"{uri}/health did not answer 200"
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TrackingServerUnavailable(
                f"MLflow tracking server at {uri} is not reachable after {timeout_s:.0f}s ({last_error}). "
                "Is it running, and is MLFLOW_TRACKING_URI right?"
            )
        log.info("waiting for MLflow at %s (%s); retrying in %.1fs", uri, last_error, delay)
        time.sleep(min(delay, remaining))
        delay = min(delay * 2, 5.0)


def get_or_create_experiment(client: MlflowClient, name: str) -> str:
    """The id of experiment `name`: restored if deleted, created if missing, safe against a race.

    Through the client, not the fluent mlflow.set_experiment, which would leave a process-wide
    active experiment behind.
    """
    experiment = client.get_experiment_by_name(name)
    if experiment is not None:
        if experiment.lifecycle_stage == "deleted":
            client.restore_experiment(experiment.experiment_id)
        return experiment.experiment_id
    try:
        return client.create_experiment(name)
    except MlflowException as e:
        # Another process created it since we looked (two trainers, or two APIs, started at once).
        if e.error_code != "RESOURCE_ALREADY_EXISTS":
            raise
        return client.get_experiment_by_name(name).experiment_id
