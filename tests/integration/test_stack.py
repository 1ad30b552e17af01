"""The compose stack, run natively: the same processes, commands and flags as docker-compose.yml.

PostgreSQL (a fresh database) is the backend store, moto's standalone S3 server stands in for
MinIO, `mlflow server` proxies artifacts, the trainer and the API run their Dockerfiles' CMD with
no S3 credentials, and `./verify_phase2.sh --no-docker` must pass — also after a restart.
"""

from __future__ import annotations

import json
import logging
import os
import re
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import boto3
import httpx
import pytest
from mlflow.tracking import MlflowClient

from credit_risk.devtools.tracking_server import TrackingServer, free_port, start_tracking_server
from credit_risk.registry import production_version
from support import ROOT
from support.api import SEED_PAYLOAD
from support.data import synthetic_frame, write_kaggle_csv
from support.docker_files import dockerfile_cmd, env_example, service_env
from support.requirements import is_required
from support.stack import (
    BUCKET,
    POSTGRES_DSN,
    S3_ENV,
    MotoServer,
    boto_credentials,
    http_status,
    postgres_database,
    wait_for_status,
)

pytestmark = pytest.mark.integration

log = logging.getLogger(__name__)

MODEL_NAME = "credit-risk-model"
PREDICTION_EXPERIMENT = "credit-risk-predictions"


def client_env(extra: dict[str, str]) -> dict[str, str]:
    """What a client container gets: no S3 credentials, no S3 endpoint (artifacts go through MLflow)."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("AWS_") and k not in {"MLFLOW_S3_ENDPOINT_URL", "MLFLOW_TRACKING_URI"}
    }
    env.update(MLFLOW_DISABLE_TELEMETRY="true", PYTHONUNBUFFERED="1")
    env.update(extra)
    return env


def native(cmd: list[str]) -> list[str]:
    """A Dockerfile's exec-form CMD with the image's `python` replaced by this interpreter."""
    return [sys.executable if cmd[0] == "python" else cmd[0], *cmd[1:]]


def run_verify(mlflow_url: str, api_url: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["./verify_phase2.sh", "--no-docker"],
        cwd=ROOT,
        # This native stack runs the server without authentication (test_auth.py runs it secured).
        env={
            **os.environ,
            "MLFLOW_URL": mlflow_url,
            "API_URL": api_url,
            "VERIFY_TIMEOUT": "30",
            "VERIFY_EXPECT_AUTH": "0",
            **env,
        },
        capture_output=True,
        text=True,
        timeout=120,
    )


@dataclass
class Stack:
    """The running processes and where they are."""

    root: Path
    backend_store_uri: str
    s3_endpoint: str
    mlflow_port: int
    api_port: int
    server: TrackingServer | None = None
    api: subprocess.Popen | None = None
    trainer_result: subprocess.CompletedProcess | None = None
    verify_before_training: subprocess.CompletedProcess | None = None
    api_key: str = ""
    logs: dict[str, Path] = field(default_factory=dict)

    @property
    def mlflow_url(self) -> str:
        return f"http://127.0.0.1:{self.mlflow_port}"

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.api_port}"

    def start_mlflow(self) -> None:
        """`mlflow server` with the compose service's flags; only it holds S3 credentials."""
        self.server = start_tracking_server(
            backend_store_uri=self.backend_store_uri,
            artifacts_destination=f"s3://{BUCKET}/",
            log_path=self.root / "mlflow.log",
            port=self.mlflow_port,
            env={"MLFLOW_S3_ENDPOINT_URL": self.s3_endpoint, **S3_ENV},
            timeout=180,
        )

    def service_env(self, name: str) -> dict[str, str]:
        """The compose service's environment (with .env.example's values), pointed at this stack."""
        env = service_env(name, env_example())
        env["MLFLOW_TRACKING_URI"] = self.mlflow_url
        if name == "api":
            env.update(
                API_HOST="127.0.0.1",
                API_PORT=str(self.api_port),
                PREDICTION_LOG_SPOOL_DIR=str(self.root / "spool"),
                MODEL_POLL_SECONDS="1",  # the test waits for the trainer's promotion, not 10 s
                API_KEY=self.api_key,
            )
        return client_env(env)

    def train(self, csv: Path) -> None:
        """The trainer image's CMD, reading `csv` where the container reads /app/data."""
        cmd = native(dockerfile_cmd("Dockerfile.trainer"))
        cmd[cmd.index("--csv") + 1] = str(csv)
        self.logs["trainer"] = self.root / "trainer.log"
        with open(self.logs["trainer"], "w") as out:
            self.trainer_result = subprocess.run(
                cmd, env=self.service_env("trainer"), stdout=out, stderr=subprocess.STDOUT, timeout=600
            )

    def start_api(self) -> None:
        """The API image's CMD; started in its own session like a container's PID 1."""
        self.logs["api"] = self.root / "api.log"
        with open(self.logs["api"], "a") as out:
            self.api = subprocess.Popen(
                native(dockerfile_cmd("Dockerfile.api")),
                env=self.service_env("api"),
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        wait_for_status(f"{self.api_url}/health/live", 200, 120, self.api, self.logs["api"])

    def wait_api_ready(self, timeout: float = 120) -> None:
        wait_for_status(f"{self.api_url}/health/ready", 200, timeout, self.api, self.logs["api"])

    def stop_api(self) -> int:
        """`docker stop`: SIGTERM, then SIGKILL after the compose stop_grace_period (30 s)."""
        if self.api is None or self.api.poll() is not None:
            return self.api.returncode if self.api else 0
        self.api.send_signal(signal.SIGTERM)
        try:
            return self.api.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(self.api.pid, signal.SIGKILL)
            self.api.wait()
            return -9

    def stop(self) -> None:
        self.stop_api()
        if self.server is not None:
            self.server.stop()


@pytest.fixture(scope="module")
def backend_store_uri(tmp_path_factory):
    """A fresh PostgreSQL database for this run; SQLite (with a warning) when PostgreSQL is absent,
    except under CI (or REQUIRE_POSTGRES=1), where that is a failure."""
    import psycopg2

    try:
        database = postgres_database(prefix="credit_risk_stack")
        uri = database.__enter__()
    except psycopg2.OperationalError as e:
        reason = f"PostgreSQL not reachable ({POSTGRES_DSN}: {str(e).strip()})"
        if is_required("postgres"):
            pytest.fail(f"{reason}; required: CI=true or REQUIRE_POSTGRES=1", pytrace=False)
        reason += ": the stack test uses SQLite"
        warnings.warn(reason, stacklevel=1)
        log.warning(reason)
        yield f"sqlite:///{tmp_path_factory.mktemp('backend') / 'mlflow.db'}"
        return
    try:
        yield uri
    finally:
        database.__exit__(None, None, None)


@pytest.fixture(scope="module")
def s3_endpoint(tmp_path_factory):
    """moto's standalone S3 server (MinIO's stand-in) with the artifact bucket created."""
    moto = MotoServer(tmp_path_factory.mktemp("moto") / "moto.log")
    try:
        moto.start()
        yield moto.endpoint
    finally:
        moto.stop()


@pytest.fixture(scope="module")
def stack(tmp_path_factory, backend_store_uri, s3_endpoint):
    """`docker-compose up -d mlflow`, `up -d api` (nothing to serve yet), `up trainer`."""
    root = tmp_path_factory.mktemp("stack")
    stack = Stack(root, backend_store_uri, s3_endpoint, free_port(), free_port())
    try:
        stack.start_mlflow()
        stack.start_api()
        stack.verify_before_training = run_verify(stack.mlflow_url, stack.api_url)
        # signal=2: a clearly learnable target, so the trainer's AUC gate promotes the model.
        csv = write_kaggle_csv(synthetic_frame(signal=2.0), root / "cs-training.csv")
        stack.train(csv)
        assert stack.trainer_result.returncode == 0, stack.logs["trainer"].read_text()[-4000:]
        stack.wait_api_ready()
        yield stack
    finally:
        stack.stop()


def snapshot(client: MlflowClient) -> dict:
    """What must survive a restart: experiments, training runs, model versions, Production."""
    experiments = {e.name: e.experiment_id for e in client.search_experiments()}
    training = client.search_runs([experiments["credit-risk-prediction"]], max_results=1000)
    versions = client.search_model_versions(f"name = '{MODEL_NAME}'")
    production = production_version(client, MODEL_NAME)
    return {
        "experiments": experiments,
        "training_runs": sorted((r.info.run_id, r.data.params.get("dataset_hash")) for r in training),
        "versions": sorted((v.version, v.current_stage, v.run_id) for v in versions),
        "production": production.version if production else None,
    }


def logged_predictions(client: MlflowClient) -> int:
    """How many `probability` points the prediction experiment holds."""
    experiment = client.get_experiment_by_name(PREDICTION_EXPERIMENT)
    if experiment is None:
        return 0
    runs = client.search_runs([experiment.experiment_id], max_results=1000)
    return sum(len(client.get_metric_history(r.info.run_id, "probability")) for r in runs)


def test_verify_fails_clearly_while_no_model_is_in_production(stack):
    result = stack.verify_before_training
    assert result.returncode == 1
    assert "Production" in result.stderr
    lines = result.stdout.splitlines()
    assert lines[-1].startswith("4. API healthy") and lines[-1].endswith("FAILED"), result.stdout
    assert "model served" not in result.stdout  # stopped at the first failure


def test_stack_serves_the_promoted_model_and_verify_passes(stack):
    result = run_verify(stack.mlflow_url, stack.api_url)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "All checks passed." in result.stdout
    step = r"prediction (\w+)-(\d+) logged in MLflow experiment 'credit-risk-predictions' \.\.\. ok"
    logged = re.search(step, result.stdout)
    assert logged, result.stdout
    assert f"step {logged[2]} of API process {logged[1]}" in result.stdout
    client = MlflowClient(stack.mlflow_url)
    assert production_version(client, MODEL_NAME) is not None


def test_artifacts_land_in_s3_through_the_server_proxy(stack):
    client = MlflowClient(stack.mlflow_url)
    version = production_version(client, MODEL_NAME)
    run = client.get_run(version.run_id)
    # The clients only ever see the server's proxy URI, which is why they need no S3 credentials.
    assert run.info.artifact_uri.startswith("mlflow-artifacts:")
    s3 = boto3.client("s3", endpoint_url=stack.s3_endpoint, **boto_credentials())
    keys = [
        o["Key"]
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=BUCKET)
        for o in page.get("Contents", [])
    ]
    assert any(k.endswith("/MLmodel") for k in keys), keys[:20]
    assert any(f"/{version.run_id}/artifacts/" in k for k in keys), keys[:20]  # the run's plots, reports


def test_runs_versions_and_production_survive_a_restart(stack):
    client = MlflowClient(stack.mlflow_url)
    assert run_verify(stack.mlflow_url, stack.api_url).returncode == 0  # at least one prediction logged
    before = snapshot(client)
    predictions_before = logged_predictions(client)
    info_before = urllib.request.urlopen(f"{stack.api_url}/model/info", timeout=5).read()  # noqa: S310

    # Stopped by SIGTERM within the grace period, not killed (uvicorn re-raises SIGTERM after its
    # graceful shutdown, so the exit status is the signal's, like a container's 143).
    assert stack.stop_api() in {0, -signal.SIGTERM}, stack.logs["api"].read_text()[-3000:]
    stack.server.stop()
    assert http_status(f"{stack.mlflow_url}/health") == 0
    stack.start_mlflow()
    stack.api_key = "restarted-with-a-key"  # and the script's X-API-Key path gets exercised too
    stack.start_api()
    stack.wait_api_ready()

    client = MlflowClient(stack.mlflow_url)
    assert snapshot(client) == before
    assert before["production"] is not None
    assert logged_predictions(client) >= predictions_before > 0
    info_after = urllib.request.urlopen(f"{stack.api_url}/model/info", timeout=5).read()  # noqa: S310
    assert _field(info_after, "model_version") == _field(info_before, "model_version")
    # The other JSON path of the script (python3 instead of jq), against the restarted stack.
    result = run_verify(stack.mlflow_url, stack.api_url, VERIFY_JSON="python", API_KEY=stack.api_key)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "(JSON via python)" in result.stdout


def _field(body: bytes, name: str) -> object:
    return json.loads(body)[name]


def test_verify_stops_at_the_first_failure_when_mlflow_is_down():
    result = run_verify(f"http://127.0.0.1:{free_port()}", f"http://127.0.0.1:{free_port()}")
    assert result.returncode == 1
    assert "MLflow at" in result.stderr and "is the mlflow service up?" in result.stderr
    assert result.stdout.splitlines()[-1].startswith("2. MLflow healthy")
    assert "API healthy" not in result.stdout


def test_verify_fails_when_the_prediction_never_reaches_mlflow(stack):
    """A second API on the same registry with prediction logging off: the last check must catch it,
    even while the stack's own API logs other predictions into the same experiment meanwhile."""
    port = free_port()
    env = {**stack.service_env("api"), "API_PORT": str(port), "PREDICTION_LOGGING": "false"}
    log_path = stack.root / "api-no-logging.log"
    with open(log_path, "w") as out:
        api = subprocess.Popen(
            native(dockerfile_cmd("Dockerfile.api")), env=env, stdout=out, stderr=subprocess.STDOUT
        )
    try:
        wait_for_status(f"http://127.0.0.1:{port}/health/ready", 200, 120, api, log_path)
        with ThreadPoolExecutor(1) as pool:
            verify = pool.submit(
                run_verify,
                stack.mlflow_url,
                f"http://127.0.0.1:{port}",
                VERIFY_TIMEOUT="5",
                API_KEY=stack.api_key,
            )
            decoys = 0
            while not verify.done():  # new `probability` points that are not the checked prediction
                decoys += post_prediction(stack.api_url, stack.api_key)
                time.sleep(0.3)
            result = verify.result()
    finally:
        api.terminate()
        api.wait(30)
    assert result.returncode == 1, result.stdout  # the old "any new point" check passed here
    assert decoys > 5
    assert re.match(r"7\. prediction \w+-\d+ logged in MLflow .* FAILED$", result.stdout.splitlines()[-1])
    assert "no 'probability' at step" in result.stderr, result.stderr


def post_prediction(api_url: str, api_key: str) -> int:
    """One /predict with the seed's payload; 1 when it answered 200."""
    resp = httpx.post(f"{api_url}/predict", json=SEED_PAYLOAD, headers={"X-API-Key": api_key}, timeout=10)
    return int(resp.status_code == 200)
