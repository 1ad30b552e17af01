"""The seed's Docker workflow against a real engine (issue 10), in the order a user meets it.

The tests share one compose project and run in file order: each one starts from the state the
previous one left (the stack built, trained, serving). Everything goes through the published
ports on 127.0.0.1 and the seed's own commands.
"""

from __future__ import annotations

import re
import subprocess
import threading
import time

import httpx
import pytest
from compose_stack import ROOT, Stack
from tier_figures import record

from support.api import SEED_PAYLOAD as PAYLOAD
from support.docker_files import TEST_SECRETS

pytestmark = pytest.mark.docker
pytest_plugins = ["tier_fixtures"]

MODEL = "credit-risk-model"
PREDICTIONS = "credit-risk-predictions"
_PREDICTION_ID = re.compile(r"^([0-9a-f]+)-([1-9][0-9]*)$")


# --- reading the state through MLflow's REST API -----------------------------------------------------


def versions(stack: Stack) -> dict[str, str]:
    """Version number -> stage of every version of the registered model."""
    found = stack.mlflow(f"model-versions/search?filter=name%3D%27{MODEL}%27&max_results=1000")
    return {v["version"]: v["current_stage"] for v in found.get("model_versions", [])}


def production(stack: Stack) -> list[str]:
    return sorted((v for v, stage in versions(stack).items() if stage == "Production"), key=int)


def runs(stack: Stack) -> dict[str, dict]:
    """run_id -> {experiment name, status, metric keys} over every experiment."""
    experiments = stack.mlflow("experiments/search?max_results=1000").get("experiments", [])
    names = {e["experiment_id"]: e["name"] for e in experiments}
    found: dict[str, dict] = {}
    token = None
    while True:
        body = {"experiment_ids": list(names), "max_results": 1000}
        if token:
            body["page_token"] = token
        page = stack.mlflow("runs/search", body)
        for run in page.get("runs", []):
            info, data = run["info"], run.get("data", {})
            found[info["run_id"]] = {
                "experiment": names[info["experiment_id"]],
                "status": info["status"],
                "metrics": sorted(m["key"] for m in data.get("metrics", [])),
                "tags": {t["key"]: t["value"] for t in data.get("tags", [])},
            }
        token = page.get("next_page_token")
        if not token:
            return found


def logged_predictions(stack: Stack) -> dict[tuple[str, int], float]:
    """(API process, sequence number) -> probability, of every prediction logged in MLflow."""
    points: dict[tuple[str, int], float] = {}
    for run_id, run in runs(stack).items():
        if run["experiment"] != PREDICTIONS or "probability" not in run["metrics"]:
            continue
        process = run["tags"].get("api_process", "")
        token = None
        while True:
            query = f"metrics/get-history?run_id={run_id}&metric_key=probability&max_results=25000"
            page = stack.mlflow(query + (f"&page_token={token}" if token else ""))
            for metric in page.get("metrics", []):
                points[(process, int(metric["step"]))] = metric["value"]
            token = page.get("next_page_token")
            if not token:
                break
    return points


def predict(stack: Stack) -> tuple[tuple[str, int], float]:
    status, body = stack.api("/predict", PAYLOAD)
    assert status == 200, body
    match = _PREDICTION_ID.match(body["prediction_id"])
    assert match, body
    return (match[1], int(match[2])), body["probability"]


def verify(stack: Stack) -> str:
    """./verify_phase2.sh in its Docker mode against the published ports; its output."""
    result = subprocess.run(
        ["./verify_phase2.sh"],
        cwd=ROOT,
        env={**stack.env, "MLFLOW_URL": stack.mlflow_url, "API_URL": stack.api_url},
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "All checks passed." in result.stdout
    assert "skipped" not in result.stdout, result.stdout  # Docker mode: compose's checks ran too
    return result.stdout


def up_trainer(stack: Stack) -> tuple[int, str, float]:
    """`docker-compose up trainer`: the container's exit code, its log, and the seconds it took."""
    start = time.monotonic()
    stack.compose("up", "trainer", check=False, timeout=900)
    seconds = time.monotonic() - start
    code = stack.inspect("trainer")["State"]["ExitCode"]
    return code, stack.compose("logs", "--no-color", "trainer").stdout, seconds


def wait_served(stack: Stack, version: str, timeout: float) -> float:
    """Seconds until the API's /model/info names `version`."""
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        status, info = stack.api("/model/info")
        if status == 200 and info.get("model_version") == version:
            return time.monotonic() - start
        time.sleep(0.25)
    raise AssertionError(f"the API still serves {stack.api('/model/info')} after {timeout:.0f}s")


# --- 1. the seed's workflow -----------------------------------------------------------------------


def test_seed_workflow_builds_trains_serves_and_verifies(stack):
    start = time.monotonic()
    stack.compose("build", timeout=1800)
    record("docker-compose build", f"{time.monotonic() - start:.0f} s")

    start = time.monotonic()
    stack.compose("up", "-d", "mlflow")
    healthy = stack.wait_healthy("mlflow", timeout=400)
    record("up -d mlflow -> healthy", f"{time.monotonic() - start:.0f} s")
    assert healthy >= 0

    code, logs, seconds = up_trainer(stack)
    record("up trainer -> exit", f"{seconds:.0f} s (exit {code})")
    assert code == 0, logs[-4000:]
    assert production(stack) == ["1"]
    # GitPython's warning is silenced, and the last line links the run on the host's port.
    assert "git executable" not in logs.lower()
    last = logs.strip().splitlines()[-1]
    assert re.search(rf"http://localhost:{stack.mlflow_port}/#/experiments/\d+/runs/[0-9a-f]{{32}}$", last), (
        last
    )

    start = time.monotonic()
    stack.compose("up", "-d", "api")
    stack.wait_healthy("api", timeout=180)
    record("up -d api -> healthy", f"{time.monotonic() - start:.0f} s")
    verify(stack)


# --- the images: what each adds above its base -----------------------------------------------------

BASE = "python:3.11.14-slim-bookworm"
IMAGES = {
    "mlflow": "credit-risk/mlflow:3.17.2",
    "trainer": "credit-risk/trainer:0.1.0",
    "api": "credit-risk/api:0.1.0",
}
# Added above its base by the API image when it installed the trainer's requirements.txt (mlflow
# with its server, pandas, pyarrow, matplotlib): 829 MB on the stand-in base, 2026-12-02 (issue 10
# asks for half at most; the lean image added 404 MB that day).
API_ADDED_BEFORE_MB = 829


def image_mb(tag: str) -> float:
    out = subprocess.run(
        ["docker", "image", "inspect", "--format", "{{.Size}}", tag],
        capture_output=True,
        text=True,
        check=True,
    )
    return int(out.stdout) / 1e6


def test_api_image_adds_at_most_half_of_what_it_added_before(stack):
    base = image_mb(BASE)
    added = {name: image_mb(tag) - base for name, tag in IMAGES.items()}
    record("base image (stand-in python)", f"{base:.0f} MB")
    for name, mb in added.items():
        record(f"{name} image adds", f"{mb:.0f} MB")
    assert added["api"] <= API_ADDED_BEFORE_MB / 2, added


# --- 6. users and credentials, as the engine runs the containers --------------------------------------


@pytest.mark.parametrize("service", ["mlflow", "trainer", "api"])
def test_container_runs_as_non_root(stack, service):
    user = stack.inspect(service)["Config"]["User"]
    assert user and user.split(":")[0] not in {"root", "0"}, f"{service} runs as {user!r}"


def test_api_process_is_not_root(stack):
    cid = stack.container("api")
    uid = subprocess.run(["docker", "exec", cid, "id", "-u"], capture_output=True, text=True, check=True)
    assert uid.stdout.strip() != "0"


@pytest.mark.parametrize("service", ["trainer", "api"])
def test_client_container_holds_no_s3_credentials(stack, service):
    config = stack.inspect(service)["Config"]
    env = dict(item.split("=", 1) for item in config["Env"])
    secret = stack.env.get("MINIO_ROOT_PASSWORD", "minioadmin")
    assert not [k for k in env if k.startswith(("AWS_", "MINIO_")) or k == "MLFLOW_S3_ENDPOINT_URL"], env
    assert not [k for k, v in env.items() if secret in v], "the S3 secret is in the environment"
    mounts = [m["Destination"] for m in stack.inspect(service)["Mounts"]]
    assert not [m for m in mounts if ".aws" in m or ".mc" in m], mounts


@pytest.mark.parametrize("service", sorted(IMAGES))
def test_no_secret_in_an_image_layer(stack, service):
    # Issue 13: the stack's passwords come from .env at run time, never from a build step.
    history = subprocess.run(
        ["docker", "history", "--no-trunc", "--format", "{{.CreatedBy}}", IMAGES[service]],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert history.strip(), f"no history for {IMAGES[service]}"
    leaked = [name for name, secret in TEST_SECRETS.items() if secret in history]
    assert not leaked, f"{service}'s image history holds {leaked}"


def test_anonymous_calls_are_refused_by_the_stack(stack):
    # Issue 13 in the Docker tier: nobody anonymous reads or moves what the API serves.
    base = f"{stack.mlflow_url}/api/2.0/mlflow"
    before = production(stack)
    read = httpx.get(f"{base}/registered-models/search", timeout=30)
    move = httpx.post(
        f"{base}/model-versions/transition-stage",
        json={"name": MODEL, "version": "1", "stage": "Archived", "archive_existing_versions": False},
        timeout=30,
    )
    assert (read.status_code, move.status_code) == (401, 401), (read.text[:200], move.text[:200])
    assert httpx.get(f"{stack.mlflow_url}/health", timeout=30).status_code == 200
    assert before and production(stack) == before


# --- 2. a stage transition made as the MLflow UI makes it --------------------------------------------


def test_ui_stage_transition_is_followed_within_the_poll_interval(stack):
    # A second version as a user makes one for a hand promotion: train with the gate off.
    stack.compose("up", "trainer", check=False, timeout=900, env={"PROMOTE": "never"})
    assert stack.inspect("trainer")["State"]["ExitCode"] == 0
    second = max(versions(stack), key=int)
    assert second != "1" and versions(stack)[second] == "None"
    assert stack.api("/model/info")[1]["model_version"] == "1"
    stack.mlflow(
        "model-versions/transition-stage",
        {"name": MODEL, "version": second, "stage": "Production", "archive_existing_versions": False},
    )
    poll = float(stack.env["MODEL_POLL_SECONDS"])
    # Within the poll interval, plus the download and load of the new version (slow under load).
    seconds = wait_served(stack, second, timeout=poll + 20)
    record("UI transition -> served", f"{seconds:.1f} s (poll {poll:.0f} s)")
    assert production(stack) == ["1", second]  # archive_existing_versions=false kept version 1


# --- 4. `docker-compose stop api` while clients send ----------------------------------------------------


def test_stop_api_while_clients_send_loses_no_answered_prediction(stack):
    answered: dict[tuple[str, int], float] = {}
    lock = threading.Lock()
    stop_sending = threading.Event()

    def client() -> None:
        deadline = time.monotonic() + 60  # bounded even if the stop never lands
        while not stop_sending.is_set() and time.monotonic() < deadline:
            try:
                key, probability = predict(stack)
            except (httpx.HTTPError, AssertionError, ValueError):
                time.sleep(0.05)  # refused or cut while stopping: not answered, not counted
                continue
            with lock:
                answered[key] = probability

    clients = [threading.Thread(target=client) for _ in range(4)]
    for thread in clients:
        thread.start()
    time.sleep(3)
    start = time.monotonic()
    stack.compose("stop", "api", timeout=120)
    stop_seconds = time.monotonic() - start
    stop_sending.set()
    for thread in clients:
        thread.join(timeout=30)
    state = stack.inspect("api")["State"]
    record("stop api (clients sending)", f"{stop_seconds:.1f} s, {len(answered)} answered")
    assert answered, "no prediction was answered before the stop"
    # Exit 0 by itself (SIGTERM handled), not 137 (SIGKILL after stop_grace_period).
    assert state["ExitCode"] == 0, state
    assert stop_seconds < 30
    logged = logged_predictions(stack)
    missing = sorted(set(answered) - set(logged))
    assert not missing, f"{len(missing)} of {len(answered)} answered predictions not in MLflow: {missing[:5]}"
    assert all(abs(logged[k] - p) < 1e-12 for k, p in answered.items())
    stack.compose("up", "-d", "api")
    stack.wait_healthy("api", timeout=180)


# --- 3. restart, down/up: nothing is lost; down -v resets ---------------------------------------------


def _state(stack: Stack) -> dict:
    return {"versions": versions(stack), "runs": runs(stack), "predictions": logged_predictions(stack)}


def _assert_kept(before: dict, after: dict) -> None:
    """Everything of `before` is in `after`; stages moved only by a retrain that came in between."""
    for run_id, run in before["runs"].items():
        assert run_id in after["runs"], f"run {run_id} ({run['experiment']}) is gone"
        assert set(run["metrics"]) <= set(after["runs"][run_id]["metrics"])
    assert set(before["versions"]) <= set(after["versions"])
    retrained = set(after["versions"]) - set(before["versions"])
    for version, stage in before["versions"].items():
        # A retrain (same data, gate `auto`) promotes its version and archives the one before.
        assert after["versions"][version] == stage or (retrained and after["versions"][version] == "Archived")
    missing = set(before["predictions"]) - set(after["predictions"])
    assert not missing, f"{len(missing)} logged predictions are gone"
    assert [v for v, stage in after["versions"].items() if stage == "Production"], "nothing in Production"


def _wait_trainer_done(stack: Stack, timeout: float = 300) -> None:
    """`restart` and `up -d` start the one-shot trainer too (it has no profile): let it finish."""
    deadline = time.monotonic() + timeout
    while stack.inspect("trainer")["State"]["Status"] != "exited":
        assert time.monotonic() < deadline, "the trainer started with the stack did not finish"
        time.sleep(1)
    assert stack.inspect("trainer")["State"]["ExitCode"] == 0


def test_restart_keeps_everything_and_verify_passes(stack):
    predict(stack)
    time.sleep(3)  # the prediction log flushes every second
    before = _state(stack)
    start = time.monotonic()
    stack.compose("restart", timeout=300)
    for service in ["postgres", "minio", "mlflow", "api"]:
        stack.wait_healthy(service, timeout=400)
    record("restart -> api healthy", f"{time.monotonic() - start:.0f} s")
    _wait_trainer_done(stack)
    _assert_kept(before, _state(stack))
    verify(stack)


def test_down_then_up_keeps_everything_and_verify_passes(stack):
    before = _state(stack)
    stack.compose("down", timeout=300)
    start = time.monotonic()
    stack.compose("up", "-d", timeout=600)
    for service in ["mlflow", "api"]:
        stack.wait_healthy(service, timeout=400)
    record("down, up -d -> api healthy", f"{time.monotonic() - start:.0f} s")
    _wait_trainer_done(stack)
    _assert_kept(before, _state(stack))
    verify(stack)


# --- 5. a broken CSV in ./data ---------------------------------------------------------------------------


def test_trainer_refuses_a_broken_csv_with_exit_2_and_registers_nothing(stack):
    csv = ROOT / "data" / "cs-training.csv"
    backup = csv.with_name(".cs-training.csv.docker-tier")
    before = versions(stack)
    earlier_logs = stack.compose("logs", "--no-color", "trainer").stdout
    csv.rename(backup)
    try:
        csv.write_text("id,age,MonthlyIncome\n1,45,9120\n2,50,\n")  # no target column
        code, logs, _ = up_trainer(stack)
    finally:
        backup.replace(csv)
    assert code == 2, logs[-3000:]
    new_logs = logs.removeprefix(earlier_logs)
    assert "ERROR" in new_logs and "SeriousDlqin2yrs" in new_logs, new_logs[-3000:]
    assert versions(stack) == before


def test_down_v_resets_the_stack(stack):
    stack.compose("down", "-v", timeout=300)
    assert not stack.compose("ps", "-q").stdout.strip()
    stack.compose("up", "-d", "mlflow")
    stack.wait_healthy("mlflow", timeout=400)
    # The accounts lived in the same PostgreSQL volume: the person's is gone until create-accounts
    # runs again; the admin's is the one from .env (set before the server took traffic).
    person = httpx.get(
        f"{stack.mlflow_url}/api/2.0/mlflow/experiments/search?max_results=100", auth=stack.person
    )
    assert person.status_code == 401, person.text[:200]
    admin = ("admin", TEST_SECRETS["MLFLOW_ADMIN_PASSWORD"])
    experiments = stack.mlflow("experiments/search?max_results=100", auth=admin)["experiments"]
    assert [e["name"] for e in experiments] == ["Default"]
    assert stack.mlflow("registered-models/search", auth=admin).get("registered_models", []) == []
