"""Talking to the tracking server: process-wide MLflow settings, waiting for it, and experiments."""

from __future__ import annotations

import logging
import os
import re
import subprocess
import time
import urllib.error
import urllib.request

import mlflow
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient
from mlflow.utils.credentials import get_default_host_creds
from mlflow.utils.rest_utils import http_request

from credit_risk.settings import MlflowClientSettings

log = logging.getLogger(__name__)


class TrackingServerUnavailable(Exception):
    """The tracking server did not answer within the allowed time."""


class TrackingAccessDenied(Exception):
    """The tracking server refused our credentials (401) or an operation on a resource (403)."""


# Permission levels of MLflow's basic-auth app, weakest first (mlflow.server.auth.permissions).
PERMISSION_LEVELS = ("NO_PERMISSIONS", "READ", "USE", "EDIT", "MANAGE")
ACCESS_DOC = "docs/access-control.md"
_REST_ERROR = re.compile(r"API request to endpoint (\S+) failed with error code (\d{3})")


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
    # MLflow's client sends these as basic auth to the tracking URI, and only there. Removed when
    # unset, so an in-process caller never inherits another's account.
    password = settings.mlflow_tracking_password
    credentials = {
        "MLFLOW_TRACKING_USERNAME": settings.mlflow_tracking_username,
        "MLFLOW_TRACKING_PASSWORD": password.get_secret_value() if password else None,
    }
    for name, value in credentials.items():
        if value:
            os.environ[name] = value
        else:
            os.environ.pop(name, None)
    # The fluent API (mlflow.start_run) prefers a URI set earlier in this process over the
    # variable: pin ours, or an in-process caller would log to whatever was set before.
    mlflow.set_tracking_uri(settings.mlflow_tracking_uri)


def http_status_of(error: BaseException | None) -> tuple[int, str]:
    """(HTTP status, endpoint) of the MLflow REST or artifact call behind `error`; (0, "") if none.

    MLflow wraps the HTTP failure in an MlflowException, often without `from`: walk the chain.
    """
    seen = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        response = getattr(error, "response", None)  # requests.HTTPError (artifact up/downloads)
        if response is not None and getattr(response, "status_code", None):
            return response.status_code, str(getattr(response, "url", "")).split("?")[0]
        if match := _REST_ERROR.search(str(error)):
            return int(match[2]), match[1]
        error = error.__cause__ or error.__context__
    return 0, ""


def access_problem(error: BaseException, uri: str, resource: str | None = None) -> str | None:
    """What to tell the operator when `error` is MLflow refusing us (401 or 403); None otherwise.

    Names the variables, the resource (or the endpoint) and never a credential's value.
    """
    status, endpoint = http_status_of(error)
    if status == 401:
        if not os.environ.get("MLFLOW_TRACKING_USERNAME"):
            return (
                f"MLflow at {uri} requires authentication (401) and MLFLOW_TRACKING_USERNAME / "
                "MLFLOW_TRACKING_PASSWORD are not set: give this service its account"
            )
        return (
            f"MLflow at {uri} refused the credentials (401 Unauthorized): check MLFLOW_TRACKING_USERNAME "
            "and MLFLOW_TRACKING_PASSWORD"
        )
    if status == 403:
        return (
            f"MLflow at {uri} denied this account access to {resource or endpoint or 'a call'} "
            f"(403 Permission denied): grant it the permission it needs ({ACCESS_DOC})"
        )
    return None


def require_permission(uri: str, resource_type: str, resource_id: str, needed: str, what: str) -> None:
    """Raise TrackingAccessDenied, naming `what`, when this account holds less than `needed` on it.

    Asks the basic-auth app for our effective permission, the way it decides a request. A server
    without authentication has no such endpoint: nothing to check.
    """
    username = os.environ.get("MLFLOW_TRACKING_USERNAME")
    if not username or not uri.startswith(("http://", "https://")):
        return
    response = http_request(
        get_default_host_creds(uri),
        "/api/3.0/mlflow/users/permissions/get",
        "GET",
        params={"username": username, "resource_type": resource_type, "resource_id": resource_id},
        max_retries=0,
        timeout=10,
    )
    if response.status_code in (401, 403):
        raise TrackingAccessDenied(
            f"MLflow at {uri} did not say what this account may do on {what} ({response.status_code})"
        )
    if response.status_code != 200:
        return  # 404: no basic-auth app (an open server); anything else: the real call will tell
    try:
        held = response.json()["permission"]
    except (ValueError, KeyError, TypeError):
        return  # not the basic-auth app answering (a UI page, a proxy): nothing to check
    if held not in PERMISSION_LEVELS or PERMISSION_LEVELS.index(held) < PERMISSION_LEVELS.index(needed):
        raise TrackingAccessDenied(
            f"MLflow at {uri} gives this account {held} on {what}; it needs {needed} (403): "
            f"grant it with `python -m credit_risk.accounts` ({ACCESS_DOC})"
        )


def run_url(base_url: str, experiment_id: str, run_id: str) -> str:
    """The MLflow UI's page of a run, under `base_url` (the server as a browser reaches it)."""
    return f"{base_url.rstrip('/')}/#/experiments/{experiment_id}/runs/{run_id}"


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
                if problem := access_problem(e, uri):
                    raise TrackingAccessDenied(problem) from None  # waiting will not fix credentials
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
