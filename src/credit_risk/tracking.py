"""Talking to the tracking server: process-wide MLflow settings and waiting for it to be up."""

from __future__ import annotations

import logging
import os
import time
import urllib.error
import urllib.request

import mlflow
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


def run_url(base_url: str, experiment_id: str, run_id: str) -> str:
    """The MLflow UI's page of a run, under `base_url` (the server as a browser reaches it)."""
    return f"{base_url.rstrip('/')}/#/experiments/{experiment_id}/runs/{run_id}"


def _health_ok(uri: str, timeout: float) -> bool:
    try:
        with urllib.request.urlopen(f"{uri.rstrip('/')}/health", timeout=timeout) as r:  # noqa: S310 - our own server
            return r.status == 200
    except (urllib.error.URLError, OSError, ValueError):
        return False


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
        if _health_ok(uri, timeout=min(5.0, timeout_s)):
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
