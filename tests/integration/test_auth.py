"""The secured stack, run natively: `mlflow server --app-name basic-auth` as compose runs it (issue 13).

Users and permissions in PostgreSQL beside the backend store (mlflow/basic_auth.ini with libpq's PG*
variables, as in the mlflow service), the accounts made by `create-accounts`' command, and the trainer
and the API with the compose environment and their own accounts. Checked: anonymous callers get 401
everywhere but /health; the API's account gets 403 on what could change or delete anything and 200 on
what it needs; the trainer's account promotes; wrong credentials are named (trainer exit 3, API not
ready); every answered prediction is logged; no password shows up in a log or an answer.
"""

from __future__ import annotations

import os
import re
import secrets
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
import requests
from sqlalchemy.engine import make_url

from credit_risk.devtools.tracking_server import TrackingServer, free_port, start_tracking_server
from support import ROOT
from support.api import SEED_PAYLOAD
from support.data import synthetic_frame, write_kaggle_csv
from support.docker_files import dockerfile_cmd, env_example, required_variables, service_env
from support.requirements import unavailable
from support.stack import POSTGRES_DSN, postgres_database, wait_for_status

pytestmark = pytest.mark.integration

MODEL = "credit-risk-model"
TRAINING, PREDICTIONS = "credit-risk-prediction", "credit-risk-predictions"


def native(cmd: list[str]) -> list[str]:
    """A Dockerfile's exec-form CMD with the image's `python` replaced by this interpreter."""
    return [sys.executable if cmd[0] == "python" else cmd[0], *cmd[1:]]


@dataclass
class SecuredStack:
    """The processes of the compose stack with authentication on, and the .env they were given."""

    root: Path
    url: str
    dotenv: dict[str, str]
    server: TrackingServer
    api_port: int = 0
    api: subprocess.Popen | None = None
    results: dict[str, subprocess.CompletedProcess] = field(default_factory=dict)
    logs: dict[str, Path] = field(default_factory=dict)

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.api_port}"

    def account(self, who: str) -> tuple[str, str]:
        """(username, password) of `admin`, `trainer`, `api` or `person`."""
        d = self.dotenv
        return {
            "admin": ("admin", d["MLFLOW_ADMIN_PASSWORD"]),
            "trainer": ("credit-risk-trainer", d["TRAINER_MLFLOW_PASSWORD"]),
            "api": ("credit-risk-api", d["API_MLFLOW_PASSWORD"]),
            "person": (d["MLFLOW_UI_USERNAME"], d["MLFLOW_UI_PASSWORD"]),
        }[who]

    def env(self, service: str, **extra: str) -> dict[str, str]:
        """The compose service's environment with this .env, pointed at this stack; no S3 anything."""
        env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "MLFLOW_"))}
        env.update(service_env(service, self.dotenv), MLFLOW_TRACKING_URI=self.url, PYTHONUNBUFFERED="1")
        env.update(extra)
        return env

    def run(self, name: str, cmd: list[str], env: dict[str, str]) -> subprocess.CompletedProcess:
        self.logs[name] = self.root / f"{name}.log"
        with open(self.logs[name], "w") as out:
            result = subprocess.run(cmd, env=env, stdout=out, stderr=subprocess.STDOUT, timeout=600)
        self.results[name] = result
        return result

    def train(self, name: str, csv: Path, **extra: str) -> subprocess.CompletedProcess:
        cmd = native(dockerfile_cmd("Dockerfile.trainer"))
        cmd[cmd.index("--csv") + 1] = str(csv)
        return self.run(name, cmd, self.env("trainer", MLFLOW_WAIT_SECONDS="20", **extra))

    def start_api(self, name: str, port: int, **extra: str) -> subprocess.Popen:
        self.logs[name] = self.root / f"{name}.log"
        env = self.env(
            "api",
            API_HOST="127.0.0.1",
            API_PORT=str(port),
            PREDICTION_LOG_SPOOL_DIR=str(self.root / f"spool-{name}"),
            MODEL_POLL_SECONDS="1",
            **extra,
        )
        with open(self.logs[name], "a") as out:
            process = subprocess.Popen(
                native(dockerfile_cmd("Dockerfile.api")),
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        wait_for_status(f"http://127.0.0.1:{port}/health/live", 200, 120, process, self.logs[name])
        return process

    def call(self, method: str, path: str, who: str | None = None, **kwargs) -> requests.Response:
        """One REST call to MLflow as `who` (None: anonymous)."""
        auth = self.account(who) if who else None
        return requests.request(method, f"{self.url}{path}", auth=auth, timeout=30, **kwargs)


def _dotenv() -> dict[str, str]:
    """.env.example with every required variable set, to fresh random values."""
    values = env_example()
    for name in required_variables():
        values[name] = f"{name.lower().replace('_', '-')}-{secrets.token_urlsafe(12)}"
    values["MLFLOW_UI_USERNAME"] = "risk-analyst"
    return values


@pytest.fixture(scope="module")
def secured(tmp_path_factory):
    """`docker-compose up -d api` and `up trainer` with .env's passwords: accounts, training, serving."""
    import psycopg2

    root = tmp_path_factory.mktemp("secured")
    try:
        database = postgres_database(prefix="credit_risk_auth")
        uri = database.__enter__()
    except psycopg2.OperationalError as e:
        unavailable(
            "postgres", f"not reachable ({POSTGRES_DSN}: {str(e).strip()}): the auth store lives there"
        )
    url = make_url(uri)
    dotenv = _dotenv()
    mlflow_env = service_env("mlflow", dotenv)
    server_env = {
        "MLFLOW_AUTH_CONFIG_PATH": str(ROOT / "mlflow" / "basic_auth.ini"),  # the image's own file
        "MLFLOW_AUTH_ADMIN_PASSWORD": mlflow_env["MLFLOW_AUTH_ADMIN_PASSWORD"],
        "MLFLOW_FLASK_SERVER_SECRET_KEY": mlflow_env["MLFLOW_FLASK_SERVER_SECRET_KEY"],
        "PGHOST": url.host,
        "PGPORT": str(url.port),
        "PGUSER": url.username,
        "PGDATABASE": url.database,
    }
    server = None
    stack = None
    try:
        server = start_tracking_server(
            uri,
            str(root / "artifacts"),
            root / "mlflow.log",
            env=server_env,
            timeout=240,
            app_name="basic-auth",
        )
        stack = SecuredStack(root, server.url, dotenv, server, api_port=free_port())
        accounts = stack.run(
            "create-accounts", [sys.executable, "-m", "credit_risk.accounts"], stack.env("create-accounts")
        )
        assert accounts.returncode == 0, stack.logs["create-accounts"].read_text()[-3000:]
        stack.api = stack.start_api("api", stack.api_port)
        csv = write_kaggle_csv(synthetic_frame(signal=2.0), root / "cs-training.csv")
        trained = stack.train("trainer", csv)
        assert trained.returncode == 0, stack.logs["trainer"].read_text()[-4000:]
        wait_for_status(f"{stack.api_url}/health/ready", 200, 120, stack.api, stack.logs["api"])
        yield stack
    finally:
        if stack is not None and stack.api is not None and stack.api.poll() is None:
            stack.api.terminate()
            stack.api.wait(30)
        if server is not None:
            server.stop()
        database.__exit__(None, None, None)


def _training_ids(stack: SecuredStack) -> tuple[str, str, str]:
    """(training experiment id, predictions experiment id, the Production version's run id), as admin."""

    def exp(name: str) -> str:
        r = stack.call(
            "GET", "/api/2.0/mlflow/experiments/get-by-name", "admin", params={"experiment_name": name}
        )
        return r.json()["experiment"]["experiment_id"]

    latest = stack.call(
        "POST",
        "/api/2.0/mlflow/registered-models/get-latest-versions",
        "admin",
        json={"name": MODEL, "stages": ["Production"]},
    ).json()["model_versions"][0]
    return exp(TRAINING), exp(PREDICTIONS), latest["run_id"]


# --- anonymous ---------------------------------------------------------------------------------------


def test_anonymous_gets_401_on_every_rest_call_but_health(secured):
    from mlflow.server.handlers import get_endpoints

    calls = {(re.sub(r"<[^>]+>", "x", path), m) for path, _, methods in get_endpoints() for m in methods}
    calls |= {
        ("/api/2.0/mlflow/users/create", "POST"),
        ("/api/2.0/mlflow/users/update-password", "PATCH"),
        ("/api/3.0/mlflow/users/permissions/grant", "POST"),
        ("/api/2.0/mlflow-artifacts/artifacts/0/x/artifacts/MLmodel", "GET"),
        ("/api/2.0/mlflow-artifacts/artifacts/0/x/artifacts/evil.txt", "PUT"),
        ("/get-artifact", "GET"),
        ("/model-versions/get-artifact", "GET"),
        ("/signup", "GET"),
        ("/version", "GET"),
        ("/graphql", "POST"),
        ("/", "GET"),
    }

    def status(call: tuple[str, str]) -> tuple[str, str, int]:
        path, method = call
        return path, method, secured.call(method, path, json={}).status_code

    with ThreadPoolExecutor(4) as pool:
        answers = list(pool.map(status, sorted(calls)))
    assert len(answers) > 300
    # server-info is public by MLflow's design (clients read it before logging in): store type and
    # feature flags only, nothing of ours.
    public = {"/api/3.0/mlflow/server-info", "/ajax-api/3.0/mlflow/server-info"}
    let_through = [a for a in answers if a[2] != 401 and a[0] not in public]
    assert not let_through, let_through[:20]
    assert secured.call("GET", "/health").status_code == 200
    info = secured.call("GET", "/api/3.0/mlflow/server-info").text
    assert not any(name in info for name in (MODEL, TRAINING, "credit-risk", "admin", "postgres")), info


def test_self_signup_is_closed(secured):
    body = {"username": "walk-in", "password": "walk-in-password-123"}
    assert secured.call("POST", "/api/2.0/mlflow/users/create", json=body).status_code == 401
    assert secured.call("POST", "/api/2.0/mlflow/users/create", "api", json=body).status_code == 403
    assert secured.call("GET", "/signup", "api").status_code == 403
    assert (
        secured.call("GET", "/api/2.0/mlflow/users/get", "admin", params={"username": "walk-in"}).status_code
        == 404
    )


# --- the API's account ---------------------------------------------------------------------------------


def test_api_account_gets_403_on_anything_that_changes_the_registry_or_training(secured):
    training_id, predictions_id, run_id = _training_ids(secured)
    version = secured.call(
        "POST",
        "/api/2.0/mlflow/registered-models/get-latest-versions",
        "api",
        json={"name": MODEL, "stages": ["Production"]},
    ).json()["model_versions"][0]["version"]
    metric = {"key": "x", "value": 1.0, "timestamp": 0, "step": 0}
    forbidden = [
        (
            "POST",
            "/api/2.0/mlflow/model-versions/transition-stage",
            {"name": MODEL, "version": version, "stage": "Archived", "archive_existing_versions": False},
        ),
        (
            "POST",
            "/api/2.0/mlflow/registered-models/alias",
            {"name": MODEL, "alias": "production", "version": "1"},
        ),
        ("DELETE", "/api/2.0/mlflow/model-versions/delete", {"name": MODEL, "version": version}),
        ("DELETE", "/api/2.0/mlflow/registered-models/delete", {"name": MODEL}),
        ("POST", "/api/2.0/mlflow/model-versions/create", {"name": MODEL, "source": f"runs:/{run_id}/model"}),
        ("POST", "/api/2.0/mlflow/experiments/delete", {"experiment_id": training_id}),
        ("POST", "/api/2.0/mlflow/experiments/delete", {"experiment_id": predictions_id}),
        ("POST", "/api/2.0/mlflow/runs/delete", {"run_id": run_id}),
        ("POST", "/api/2.0/mlflow/runs/create", {"experiment_id": training_id}),
        ("POST", "/api/2.0/mlflow/runs/log-batch", {"run_id": run_id, "metrics": [metric]}),
        ("POST", "/api/2.0/mlflow/runs/set-tag", {"run_id": run_id, "key": "x", "value": "1"}),
        (
            "POST",
            "/api/2.0/mlflow/experiments/set-experiment-tag",
            {"experiment_id": training_id, "key": "x", "value": "1"},
        ),
    ]
    answers = [(m, p, secured.call(m, p, "api", json=body).status_code) for m, p, body in forbidden]
    assert [a for a in answers if a[2] != 403] == []
    upload = f"/api/2.0/mlflow-artifacts/artifacts/{training_id}/{run_id}/artifacts/evil.txt"
    assert secured.call("PUT", upload, "api", data=b"x").status_code == 403
    # Nothing moved: the version is still the one in Production.
    assert _training_ids(secured)[2] == run_id


def test_api_account_gets_200_on_what_it_needs(secured):
    _, predictions_id, run_id = _training_ids(secured)
    latest = secured.call(
        "POST",
        "/api/2.0/mlflow/registered-models/get-latest-versions",
        "api",
        json={"name": MODEL, "stages": ["Production"]},
    )
    assert latest.status_code == 200
    version = latest.json()["model_versions"][0]["version"]
    uri = secured.call(
        "GET",
        "/api/2.0/mlflow/model-versions/get-download-uri",
        "api",
        params={"name": MODEL, "version": version},
    )
    assert uri.status_code == 200
    assert (
        secured.call("GET", "/api/2.0/mlflow/runs/get", "api", params={"run_id": run_id}).status_code == 200
    )
    run = secured.call("POST", "/api/2.0/mlflow/runs/create", "api", json={"experiment_id": predictions_id})
    assert run.status_code == 200
    new_run = run.json()["run"]["info"]["run_id"]
    metric = {"key": "probability", "value": 0.5, "timestamp": 0, "step": 1}
    logged = secured.call(
        "POST", "/api/2.0/mlflow/runs/log-batch", "api", json={"run_id": new_run, "metrics": [metric]}
    )
    assert logged.status_code == 200
    # The API itself downloaded the model through the artifact proxy: it serves it.
    info = httpx.get(f"{secured.api_url}/model/info", timeout=10).json()
    assert info["model_version"] == version and info["model_stage"] == "Production"


# --- the trainer's account -------------------------------------------------------------------------------


def test_trainer_account_registered_and_promoted(secured):
    log = secured.logs["trainer"].read_text()
    assert secured.results["trainer"].returncode == 0
    assert re.search(r"version \d+ promoted", log), log[-2000:]
    versions = secured.call("GET", "/api/2.0/mlflow/registered-models/search", "trainer").json()
    assert [m["name"] for m in versions["registered_models"]] == [MODEL]  # it sees only its own


def test_trainer_with_a_wrong_password_exits_3_with_a_clear_line(secured, tmp_path):
    csv = write_kaggle_csv(synthetic_frame(200), tmp_path / "cs-training.csv")
    wrong = "not-the-trainer-password"
    result = secured.train("trainer-wrong-password", csv, MLFLOW_TRACKING_PASSWORD=wrong)
    log = secured.logs["trainer-wrong-password"].read_text()
    assert result.returncode == 3, log[-2000:]
    assert "refused the credentials (401 Unauthorized): check MLFLOW_TRACKING_USERNAME and" in log
    assert wrong not in log


def test_trainer_without_the_permission_exits_3_naming_the_resource(secured, tmp_path):
    csv = write_kaggle_csv(synthetic_frame(200), tmp_path / "cs-training.csv")
    user, password = secured.account("api")  # an account with READ only on the training experiment
    result = secured.train(
        "trainer-as-api", csv, MLFLOW_TRACKING_USERNAME=user, MLFLOW_TRACKING_PASSWORD=password
    )
    log = secured.logs["trainer-as-api"].read_text()
    assert result.returncode == 3, log[-2000:]
    assert f"gives this account READ on experiment '{TRAINING}'; it needs EDIT (403)" in log
    assert password not in log


# --- the API with the wrong credentials --------------------------------------------------------------------


def test_api_with_a_wrong_password_is_not_ready_and_says_why(secured):
    port = free_port()
    wrong = "not-the-api-password-at-all"
    api = secured.start_api("api-wrong-password", port, MLFLOW_TRACKING_PASSWORD=wrong)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            ready = httpx.get(f"http://127.0.0.1:{port}/health/ready", timeout=10)
            if "401" in ready.text:
                break
            time.sleep(0.5)
        assert ready.status_code == 503
        assert "refused the credentials (401 Unauthorized)" in ready.text, ready.text
        health = httpx.get(f"http://127.0.0.1:{port}/health", timeout=10).text
        assert wrong not in ready.text + health
    finally:
        api.terminate()
        api.wait(30)
    assert wrong not in secured.logs["api-wrong-password"].read_text()


# --- the prediction log and verify_phase2.sh ----------------------------------------------------------------


def test_every_answered_prediction_is_logged_with_auth_on(secured):
    ids = []
    with httpx.Client(timeout=10) as client:
        for _ in range(40):
            r = client.post(f"{secured.api_url}/predict", json=SEED_PAYLOAD)
            assert r.status_code == 200
            ids.append(r.json()["prediction_id"])
    processes = {i.rsplit("-", 1)[0] for i in ids}
    assert len(processes) == 1
    process = processes.pop()
    steps = {int(i.rsplit("-", 1)[1]) for i in ids}
    _, predictions_id, _ = _training_ids(secured)
    search = {"experiment_ids": [predictions_id], "filter": f"tags.api_process = '{process}'"}
    deadline, logged = time.monotonic() + 60, set()
    while time.monotonic() < deadline and not steps <= logged:
        time.sleep(1)
        runs = secured.call("POST", "/api/2.0/mlflow/runs/search", "person", json=search)
        logged = set()
        for run in runs.json().get("runs", []):
            history = secured.call(
                "GET",
                "/api/2.0/mlflow/metrics/get-history",
                "person",
                params={"run_id": run["info"]["run_id"], "metric_key": "probability"},
            )
            logged |= {int(m["step"]) for m in history.json().get("metrics", [])}
    assert steps <= logged, sorted(steps - logged)[:10]


def run_verify(stack: SecuredStack, **env: str) -> subprocess.CompletedProcess:
    user, password = stack.account("person")
    base = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    base.update(
        MLFLOW_URL=stack.url,
        API_URL=stack.api_url,
        VERIFY_TIMEOUT="30",
        MLFLOW_TRACKING_USERNAME=user,
        MLFLOW_TRACKING_PASSWORD=password,
    )
    return subprocess.run(
        ["./verify_phase2.sh", "--no-docker"],
        cwd=ROOT,
        env={**base, **env},
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_verify_passes_against_the_secured_stack_and_checks_anonymous_transitions(secured):
    result = run_verify(secured)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "anonymous stage transition refused ... ok (401)" in result.stdout
    assert secured.account("person")[1] not in result.stdout + result.stderr


def test_verify_without_credentials_says_which_to_set(secured):
    result = run_verify(secured, MLFLOW_TRACKING_USERNAME="", MLFLOW_TRACKING_PASSWORD="")
    assert result.returncode == 1
    assert (
        "MLflow API answered 401: set MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD" in result.stderr
    )


# --- no secret anywhere ----------------------------------------------------------------------------


def test_no_password_in_any_log_or_answer(secured):
    passwords = [
        v for k, v in secured.dotenv.items() if k in required_variables() and k != "MLFLOW_UI_USERNAME"
    ]
    texts = {name: path.read_text() for name, path in secured.logs.items()}
    texts["mlflow server"] = secured.server.log_path.read_text()
    for path in ["/health", "/health/ready", "/model/info", "/metrics", "/openapi.json"]:
        texts[path] = httpx.get(f"{secured.api_url}{path}", timeout=10).text
    leaks = [(name, k) for name, text in texts.items() for k in passwords if k in text]
    assert leaks == []
