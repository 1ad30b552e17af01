"""Fault injection against real processes: what breaks, what the service does, what it costs.

Each test starts what it breaks itself (an `mlflow server`, a PostgreSQL instance of its own,
moto's S3 server, the API as `python -m credit_risk.api`, the trainer as `python -m
credit_risk.train`), so killing one never disturbs another test.

Authentication is on, as in the compose stack (issue 13): every `mlflow server` here runs MLflow's
basic-auth app with the stack's mlflow/basic_auth.ini (users beside the backend store: in the same
PostgreSQL database when there is one, so restarting PostgreSQL takes the user store down too);
each test opens the stack's least-privilege accounts for its own model and experiments with
`credit_risk.accounts`; the API and the trainer run with their own accounts, the test itself as
the admin. Measured figures (recovery
times, counts, the SIGKILL loss) are printed and, when FAULTS_REPORT names a file, appended to
it as JSON lines: the fault table in docs/faults-and-security.md is filled from such a run.
"""

from __future__ import annotations

import http.client
import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path
from unittest import mock

import httpx
import pytest
from mlflow.models import infer_signature
from mlflow.tracking import MlflowClient

from credit_risk.accounts import provision
from credit_risk.devtools.tracking_server import server_env
from credit_risk.features import FEATURES
from credit_risk.registry import production_version, promote
from credit_risk.settings import AccountsSettings
from credit_risk.training.cli import EXIT_ERROR
from support.api import (
    SEED_PAYLOAD,
    ApiProcess,
    fitted_pipeline,
    payloads,
    register_model,
    set_stage,
    start_api_process,
    wait_until,
)
from support.data import synthetic_frame, write_kaggle_csv
from support.figures import report_lines
from support.load import Load, log_drained, logged_predictions
from support.registration import log_sklearn, register
from support.requirements import unavailable
from support.stack import (
    AUTH_ADMIN,
    BUCKET,
    S3_ENV,
    MotoServer,
    PrivatePostgres,
    RestartableServer,
    postgres_database,
)

pytestmark = pytest.mark.integration

POLL = 2.0  # MODEL_POLL_SECONDS of the APIs started here
FLUSH = 1.0  # PREDICTION_LOG_FLUSH_SECONDS (the default)
# Generous: the machine is shared and noisy; the figures themselves are printed and reported.
SLACK = 20.0
# Client load for the tests that need the spool to drain while it goes on: well below what a
# SQLite-backed tracking server logs on this machine (~1000 records/s, measured by test 2).
LOAD = {"threads": 4, "batch_size": 5, "pause": 0.01}
SINGLE_AND_INFO = ("predict",) * 7 + ("info",)
# The services' accounts on every server here (names as in .env.example; passwords made up per run).
TRAINER_ACCOUNT = ("credit-risk-trainer", f"trainer-{uuid.uuid4().hex}")
API_ACCOUNT = ("credit-risk-api", f"api-{uuid.uuid4().hex}")
PERSON_ACCOUNT = ("risk-analyst", f"person-{uuid.uuid4().hex}")


def record_figure(name: str, **values) -> None:
    """Print a measured figure; append it to $FAULTS_REPORT (JSON lines) when set, with the date,
    the commit and the machine's load average (docs/figures/faults.jsonl is such a report)."""
    (line,) = report_lines([{"fault": name, **values}], os.environ.get("FAULTS_REPORT"))
    print(f"FIGURE {line}")


def new_server(root: Path, **kwargs) -> RestartableServer:
    """An authenticated `mlflow server`, not started (SQLite and local artifacts unless told otherwise)."""
    server = RestartableServer(root, auth=True, **kwargs)
    server.root.mkdir()
    return server


def started_server(root: Path, **kwargs) -> RestartableServer:
    """A running authenticated `mlflow server`."""
    server = new_server(root, **kwargs)
    server.start()
    return server


@pytest.fixture(autouse=True)
def as_admin(monkeypatch, tmp_path):
    """The test's own MLflow calls (registering, staging, reading the log) go as the admin.

    Afterwards no password is in anything the test's processes wrote (logs of the server, the API
    and the trainer, spools, stores): error paths under a fault are where one would leak."""
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", AUTH_ADMIN[0])
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", AUTH_ADMIN[1])
    yield
    secrets = [p.encode() for _, p in (AUTH_ADMIN, TRAINER_ACCOUNT, API_ACCOUNT, PERSON_ACCOUNT)]
    leaks = [
        str(path.relative_to(tmp_path))
        for path in tmp_path.rglob("*")
        if path.is_file() and any(secret in path.read_bytes() for secret in secrets)
    ]
    assert not leaks, f"a password was written to {leaks}"


def open_accounts(server: RestartableServer, name: str) -> None:
    """What the compose job `create-accounts` does, for this test's model `name`, its training
    experiment `name` and predictions experiment `predictions-<name>`: the trainer may train,
    register and promote, the API may read the model and write its predictions, nothing else."""
    settings = AccountsSettings(
        mlflow_tracking_uri=server.url,
        mlflow_tracking_username=AUTH_ADMIN[0],
        mlflow_tracking_password=AUTH_ADMIN[1],
        training_experiment=name,
        prediction_experiment=f"predictions-{name}",
        model_name=name,
        trainer_mlflow_username=TRAINER_ACCOUNT[0],
        trainer_mlflow_password=TRAINER_ACCOUNT[1],
        api_mlflow_username=API_ACCOUNT[0],
        api_mlflow_password=API_ACCOUNT[1],
        mlflow_ui_username=PERSON_ACCOUNT[0],
        mlflow_ui_password=PERSON_ACCOUNT[1],
    )
    with mock.patch.dict(os.environ):  # provision sets MLflow's variables for its own process
        provision(settings)
    anonymous = httpx.get(f"{server.url}/api/2.0/mlflow/registered-models/get", params={"name": name})
    assert anonymous.status_code == 401, "the server does not authenticate"


def register_version(server: RestartableServer, name: str, **kwargs) -> str:
    """A version of `name` logged in its training experiment (the one the API's account may read)."""
    return register_model(server.url, name, experiment=name, **kwargs)


def credentials(account: tuple[str, str]) -> dict[str, str]:
    return {"MLFLOW_TRACKING_USERNAME": account[0], "MLFLOW_TRACKING_PASSWORD": account[1]}


@pytest.fixture
def own_server(tmp_path):
    """A server of the test's own, for tests that kill it."""
    server = started_server(tmp_path / "mlflow")
    yield server
    server.stop()


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """A server shared by the tests that only use it (each has its own model and experiment)."""
    server = started_server(tmp_path_factory.mktemp("faults") / "mlflow")
    yield server
    server.stop()


@pytest.fixture
def name() -> str:
    """The test's registered model; its predictions go to the experiment `predictions-<name>`."""
    return f"faults-{uuid.uuid4().hex[:8]}"


def api_env(tracking_uri: str, model_name: str, spool: Path, **extra: str) -> dict[str, str]:
    """The API's environment for these tests: its own account."""
    return {
        **credentials(API_ACCOUNT),
        "MLFLOW_TRACKING_URI": tracking_uri,
        "MODEL_NAME": model_name,
        "MODEL_POLL_SECONDS": str(POLL),
        "PREDICTION_EXPERIMENT": f"predictions-{model_name}",
        "PREDICTION_LOG_SPOOL_DIR": str(spool),
        "PREDICTION_LOG_FLUSH_SECONDS": str(FLUSH),
        **extra,
    }


def health(api: ApiProcess) -> dict:
    return httpx.get(f"{api.url}/health", timeout=5).json()


def is_ready(api: ApiProcess) -> bool:
    return httpx.get(f"{api.url}/health/ready", timeout=5).status_code == 200


def log_settled(api: ApiProcess) -> bool:
    """Nothing queued in memory or waiting in the spool."""
    return log_drained(api.url)


def assert_logged_exactly_once_in_order(answered: dict[str, float], tracking_uri: str, name: str) -> list:
    """Every answered prediction logged once with the probability it was answered with (a replay
    must not change a value); per API process, steps are 1..N with time in step order."""
    points = logged_predictions(tracking_uri, f"predictions-{name}")
    ids = [p.prediction_id for p in points]
    assert len(ids) == len(set(ids)), "a prediction was logged twice"
    assert sorted(ids) == sorted(answered)
    changed = [
        (p.prediction_id, answered[p.prediction_id], p.value)
        for p in points
        if p.value != answered[p.prediction_id]
    ]
    assert not changed, f"{len(changed)} logged values differ from the answered ones: {changed[:5]}"
    by_process: dict[str, list] = {}
    for p in points:
        by_process.setdefault(p.prediction_id.rsplit("-", 1)[0], []).append(p)
    for process_points in by_process.values():
        process_points.sort(key=lambda p: p.step)
        assert [p.step for p in process_points] == list(range(1, len(process_points) + 1))
        stamps = [p.timestamp for p in process_points]
        assert stamps == sorted(stamps), "records reached MLflow with their order lost"
    return points


def failed_requests(load: Load) -> int:
    """Requests of the load that got no answer or a 5xx (a counter, not a constant)."""
    return sum(load.errors.values()) + sum(load.server_errors().values())


def answered_between(load: Load, start: float, end: float) -> int:
    """Predictions answered with 200 in [start, end) (monotonic clock)."""
    return sum(1 for t, _ in load.answered if start <= t < end)


def wait_logged(tracking_uri: str, name: str, n: int, timeout: float = 90.0) -> None:
    wait_until(
        lambda: len(logged_predictions(tracking_uri, f"predictions-{name}")) >= n,
        timeout,
        f"{n} prediction records in MLflow",
        interval=1.0,
    )


# --- 1. tracking server down when the API starts -------------------------------------------


def test_api_started_without_tracking_server_is_not_ready_then_ready_by_itself(tmp_path, name):
    server = started_server(tmp_path / "mlflow")
    open_accounts(server, name)
    version = register_version(server, name)
    server.stop()
    api = start_api_process(api_env(server.url, name, tmp_path / "spool"), tmp_path / "api.log")
    try:
        wait_until(lambda: health(api)["tracking_server_reachable"] is False, 30, "a failed registry poll")
        for resp in (
            httpx.get(f"{api.url}/health/ready"),
            httpx.post(f"{api.url}/predict", json=SEED_PAYLOAD),
        ):
            assert resp.status_code == 503
            assert "registry is unreachable" in resp.json()["detail"]
        server.start()
        up = time.monotonic()
        wait_until(lambda: is_ready(api), POLL + SLACK, "the API to become ready by itself")
        elapsed = time.monotonic() - up
        resp = httpx.post(f"{api.url}/predict", json=SEED_PAYLOAD)
        assert resp.status_code == 200 and resp.json()["model_version"] == version
        record_figure(
            "1 tracking server down at API start", ready_after_server_up_s=round(elapsed, 2), poll_s=POLL
        )
    finally:
        assert api.terminate_cleanly(), api.log()[-3000:]
        server.stop()


# --- 2. tracking server killed while the API serves under load -----------------------------


def test_tracking_server_killed_under_load_every_prediction_answered_and_logged_once(
    own_server, tmp_path, name
):
    server = own_server
    open_accounts(server, name)
    register_version(server, name)
    api = start_api_process(api_env(server.url, name, tmp_path / "spool"), tmp_path / "api.log")
    try:
        wait_until(lambda: is_ready(api), 60, "the API to be ready")
        with Load(api.url, **LOAD) as load:
            load.wait_for_more(200)
            server.kill()
            killed = time.monotonic()
            wait_until(lambda: health(api)["prediction_log"]["spool_backlog"] > 0, 30, "records to spool")
            load.wait_for_more(300)
            assert is_ready(api)  # a dead tracking server does not stop predictions
            spooled = health(api)["prediction_log"]["spool_backlog"]
            server.start()
            back = time.monotonic()
            backlog_at_restart = health(api)["prediction_log"]["spool_backlog"]
            outage_s = back - killed
            wait_until(
                lambda: health(api)["prediction_log"]["spool_backlog"] == 0, 120, "the spool to replay"
            )
            replay_s = time.monotonic() - back
            replayed_at = time.monotonic()
            load.wait_for_more(200)
        assert not load.server_errors() and not load.errors, (load.server_errors(), load.errors)
        answered = load.probabilities
        wait_until(lambda: log_settled(api), 60, "the prediction log to settle")
        wait_logged(server.url, name, len(answered))
        points = assert_logged_exactly_once_in_order(answered, server.url, name)
        stats = health(api)["prediction_log"]
        assert stats["replayed_total"] >= spooled > 0 and stats["dropped_total"] == 0
        record_figure(
            "2 tracking server killed under load",
            requests=load.requests,
            predictions_answered=len(answered),
            # Each window by the client's receive times: kill -> healthy again -> spool empty.
            predictions_answered_during_outage=answered_between(load, killed, back),
            predictions_answered_during_replay=answered_between(load, back, replayed_at),
            outage_s=round(outage_s, 1),
            spooled=stats["spooled_total"],
            replayed=stats["replayed_total"],
            replay_s=round(replay_s, 2),
            backlog_at_restart=backlog_at_restart,
            logged=len(points),
            lost=len(set(answered) - {p.prediction_id for p in points}),
            failed_requests=failed_requests(load),
        )
    finally:
        assert api.terminate_cleanly(), api.log()[-3000:]


# --- 3. the API stopped under load: SIGTERM, then SIGKILL -----------------------------------


def _batches_in_progress(url: str) -> int:
    """How many /predict/batch requests the API has started and not answered (0 if unknown)."""
    try:
        text = httpx.get(f"{url}/metrics", timeout=5).text
    except httpx.HTTPError:
        return 0
    for line in text.splitlines():
        if line.startswith('credit_risk_http_requests_in_progress{route="/predict/batch"}'):
            return int(float(line.rsplit(" ", 1)[1]))
    return 0


def _send_big_batches(url: str, n_requests: int, records: int, out: list) -> list[threading.Thread]:
    """Threads that each send a whole /predict/batch request, then wait for its answer.

    Returns once every request's bytes are sent (http.client's request() returns after the
    last byte is handed to the socket), so a signal sent then finds them all in the server.
    """
    body = json.dumps({"records": payloads(records, seed=31)}).encode()
    host, port = url.removeprefix("http://").split(":")
    sent = threading.Semaphore(0)

    def post() -> None:
        conn = http.client.HTTPConnection(host, int(port), timeout=60)
        try:
            conn.request("POST", "/predict/batch", body, {"Content-Type": "application/json"})
            sent.release()
            resp = conn.getresponse()
            out.append((time.monotonic(), resp.status, json.loads(resp.read())))
        except (OSError, http.client.HTTPException) as e:
            out.append((time.monotonic(), type(e).__name__, None))
            sent.release()
        finally:
            conn.close()

    threads = [threading.Thread(target=post) for _ in range(n_requests)]
    for t in threads:
        t.start()
    for _ in threads:
        assert sent.acquire(timeout=60), "a batch request could not be sent"
    return threads


def test_sigterm_under_load_finishes_in_flight_requests_and_loses_no_log_record(server, tmp_path, name):
    open_accounts(server, name)
    register_version(server, name)
    env = api_env(server.url, name, tmp_path / "spool")
    api = start_api_process(env, tmp_path / "api-1.log")
    wait_until(lambda: is_ready(api), 60, "the API to be ready")
    big: list = []
    # No small batches in this load: the in-progress count of /predict/batch is then the big ones.
    with Load(api.url, **(LOAD | {"mix": SINGLE_AND_INFO})) as load:
        load.wait_for_more(300)
        # Batches of 10,000 take long enough to be mid-request when the signal lands.
        threads = _send_big_batches(api.url, 3, 10_000, big)
        # Bytes handed to the socket are not yet a request: uvicorn closes a connection whose
        # request it has not started parsing. Signal once the app itself has every batch in hand
        # (in progress, or already answered), with at least one still in progress.
        deadline = time.monotonic() + 60
        while not ((in_progress := _batches_in_progress(api.url)) and in_progress + len(big) >= 3):
            assert time.monotonic() < deadline, f"{in_progress} in progress, {len(big)} answered"
            time.sleep(0.005)
        api.process.send_signal(signal.SIGTERM)
        signalled = time.monotonic()
        for t in threads:
            t.join()
        assert api.process.wait(60) in (0, -signal.SIGTERM)
    assert "Application shutdown complete" in api.log()
    # Every batch the app had started before the signal (all three) was answered in full.
    assert [status for _, status, _ in big] == [200, 200, 200], [(r, s) for r, s, _ in big]
    assert [len(body["predictions"]) for _, _, body in big] == [10_000] * 3
    assert any(received > signalled for received, _, _ in big), "no batch was in flight at SIGTERM"
    assert not load.server_errors(), load.server_errors()
    # After the signal new connections are refused; that is the only kind of failure allowed.
    assert set(e for _, e in load.errors) <= {"ConnectError", "RemoteProtocolError", "ReadError"}
    answered = load.probabilities
    answered |= {
        item["prediction_id"]: item["probability"] for _, _, body in big for item in body["predictions"]
    }
    spooled = len((tmp_path / "spool" / "pending.jsonl").read_bytes().splitlines())

    second = start_api_process(env, tmp_path / "api-2.log")  # replays whatever was spooled
    try:
        wait_until(lambda: log_settled(second), 60, "the spool to replay")
        wait_logged(server.url, name, len(answered))
        points = assert_logged_exactly_once_in_order(answered, server.url, name)
    finally:
        assert second.terminate_cleanly(), second.log()[-3000:]
    record_figure(
        "3a API SIGTERM under load",
        answered=len(answered),
        batches_in_progress_at_signal=in_progress,
        batches_answered=len(big),
        batches_answered_after_signal=sum(1 for r, _, _ in big if r > signalled),
        spooled_at_exit=spooled,
        refused_after_signal=sum(load.errors.values()),
        logged=len(points),
        lost=len(set(answered) - {p.prediction_id for p in points}),
    )


def test_sigkill_under_load_loses_at_most_the_last_flush_interval(server, tmp_path, name):
    open_accounts(server, name)
    register_version(server, name)
    env = api_env(server.url, name, tmp_path / "spool")
    api = start_api_process(env, tmp_path / "api-1.log")
    wait_until(lambda: is_ready(api), 60, "the API to be ready")
    with Load(api.url, **LOAD) as load:
        load.wait_for_more(1500)  # several flush cycles
        api.process.kill()
        killed = time.monotonic()
        api.process.wait()
    answered = load.answered
    assert not load.server_errors()

    second = start_api_process(env, tmp_path / "api-2.log")
    try:
        wait_until(lambda: log_settled(second), 60, "the spool to replay")
        time.sleep(2 * FLUSH)
        logged = {p.prediction_id: p for p in logged_predictions(server.url, f"predictions-{name}")}
    finally:
        assert second.terminate_cleanly(), second.log()[-3000:]
    missing = [(t, pid) for t, pid in answered if pid not in logged]
    assert len(logged) == len(set(logged))
    # What is lost is the newest records only: a tail of the sequence, answered just before the kill.
    seq = lambda pid: int(pid.rsplit("-", 1)[1])  # noqa: E731
    if missing:
        oldest_missing = min(seq(pid) for _, pid in missing)
        assert all(seq(pid) < oldest_missing for pid in logged), "a hole in the middle of the log"
    lost_window_s = killed - min((t for t, _ in missing), default=killed)
    # The bound: records answered after the last completed flush cycle began, i.e. within
    # PREDICTION_LOG_FLUSH_SECONDS plus one log_batch round trip (slack for this noisy machine).
    assert lost_window_s <= FLUSH + 5.0, (lost_window_s, len(missing))
    assert len(missing) < len(answered) / 2
    rate = len(answered) / (answered[-1][0] - answered[0][0])
    record_figure(
        "3b API SIGKILL under load",
        answered=len(answered),
        missing=len(missing),
        oldest_missing_answered_s_before_kill=round(lost_window_s, 2),
        flush_s=FLUSH,
        answers_per_s=round(rate),
        logged_not_answered=len(set(logged) - {pid for _, pid in answered}),
    )


# --- 4. PostgreSQL restarted under the MLflow server ----------------------------------------


@pytest.fixture
def private_postgres():
    try:
        pg = PrivatePostgres()
    except FileNotFoundError as e:
        unavailable("postgres", str(e))
    try:
        pg.start()
    except (subprocess.CalledProcessError, FileNotFoundError) as e:
        pg.remove()
        stderr = getattr(e, "stderr", b"") or b""
        unavailable(
            "postgres", f"cannot start a private PostgreSQL ({e}) {stderr.decode(errors='replace')[-500:]}"
        )
    yield pg
    pg.remove()


def run_trainer(
    csv: Path, tracking_uri: str, log_path: Path, model_name: str, *args: str
) -> subprocess.Popen:
    """`python -m credit_risk.train` as the trainer container runs it (its account, no S3 credentials)."""
    env = {k: v for k, v in server_env().items() if not k.startswith("AWS_")}
    env.update(credentials(TRAINER_ACCOUNT))
    env.update(MLFLOW_TRACKING_URI=tracking_uri, MODEL_NAME=model_name, EXPERIMENT=model_name)
    with open(log_path, "w") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "credit_risk.train", "--csv", str(csv), *args],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )


def wait_for_line(log_path: Path, text: str, process: subprocess.Popen, timeout: float = 120) -> None:
    def seen() -> bool:
        if process.poll() is not None:
            raise AssertionError(
                f"exited {process.returncode} before {text!r}:\n{log_path.read_text()[-3000:]}"
            )
        return text in log_path.read_text()

    wait_until(seen, timeout, f"{text!r} in {log_path.name}", interval=0.05)


def test_postgres_restart_trainer_and_api_recover_without_manual_steps(private_postgres, tmp_path, name):
    server = started_server(tmp_path / "mlflow", backend_store_uri=private_postgres.uri)
    try:
        open_accounts(server, name)
        v1 = register_version(server, name)
        api = start_api_process(api_env(server.url, name, tmp_path / "spool"), tmp_path / "api.log")
    except BaseException:
        server.stop()
        raise
    try:
        wait_until(lambda: is_ready(api), 60, "the API to be ready")
        csv = write_kaggle_csv(synthetic_frame(signal=2.0, seed=5), tmp_path / "train.csv")
        with Load(api.url, **LOAD) as load:
            load.wait_for_more(200)
            trainer = run_trainer(csv, server.url, tmp_path / "trainer.log", name, "--promote", "always")
            trainer_exit = None
            wait_for_line(tmp_path / "trainer.log", "stage connect", trainer)
            started = time.monotonic()
            private_postgres.restart()  # mid-training, with the API logging predictions
            restart_s = time.monotonic() - started
            trainer_exit = trainer.wait(300)
            assert trainer_exit == 0, (tmp_path / "trainer.log").read_text()[-4000:]
            trained = time.monotonic()
            v2 = production_version(MlflowClient(server.url), name).version
            assert v2 != v1
            wait_until(
                lambda: health(api)["model_version"] == v2, POLL + SLACK, "the API to serve the new version"
            )
            switched_s = time.monotonic() - trained
            load.wait_for_more(200)
        assert not load.server_errors() and not load.errors, (load.server_errors(), load.errors)
        answered = load.probabilities
        assert load.versions[v1] > 0 and load.versions[v2] > 0
        wait_until(lambda: log_settled(api), 60, "the prediction log to settle")
        wait_logged(server.url, name, len(answered))
        points = assert_logged_exactly_once_in_order(answered, server.url, name)
        record_figure(
            "4 PostgreSQL restarted",
            pg_restart_s=round(restart_s, 2),
            trainer_exit=trainer_exit,
            api_on_new_version_after_s=round(switched_s, 2),
            requests=load.requests,
            predictions_answered=len(answered),
            failed_requests=failed_requests(load),
            spooled=health(api)["prediction_log"]["spooled_total"],
            logged=len(points),
            lost=len(set(answered) - {p.prediction_id for p in points}),
        )
    finally:
        assert api.terminate_cleanly(), api.log()[-3000:]
        server.stop()


# --- 5. S3 endpoint down during training ---------------------------------------------------


def test_s3_down_during_training_fails_clearly_and_registers_nothing(tmp_path, name):
    moto = MotoServer(tmp_path / "moto.log")
    moto.start()
    server = new_server(
        tmp_path / "mlflow",
        artifacts_destination=f"s3://{BUCKET}/",
        env={"MLFLOW_S3_ENDPOINT_URL": moto.endpoint, **S3_ENV},
    )
    try:
        server.start()
        open_accounts(server, name)
        csv = write_kaggle_csv(synthetic_frame(signal=2.0), tmp_path / "train.csv")
        log_path = tmp_path / "trainer.log"
        trainer = run_trainer(csv, server.url, log_path, name)
        # The run and its first artifacts exist; the model is still being fitted.
        wait_for_line(log_path, "stage log inputs", trainer)
        moto.kill()
        code = trainer.wait(300)
        output = log_path.read_text()
        assert code == EXIT_ERROR, output[-3000:]
        assert "its artifact store (S3/MinIO) is probably down" in output, output[-3000:]
        assert "Traceback" not in output
        client = MlflowClient(server.url)
        assert client.search_model_versions(f"name = '{name}'") == []
        record_figure("5 S3 down during training", trainer_exit=code, versions_registered=0)
    finally:
        server.stop()
        moto.stop()


# --- 6. two trainers at once ---------------------------------------------------------------


@pytest.fixture
def postgres_uri():
    """A fresh database on the machine's PostgreSQL (concurrent trainers need a real SQL server)."""
    import psycopg2

    try:
        database = postgres_database(prefix="credit_risk_faults")
        uri = database.__enter__()
    except psycopg2.OperationalError as e:
        unavailable("postgres", f"not reachable: {e}")
    try:
        yield uri
    finally:
        database.__exit__(None, None, None)


def test_two_trainers_at_once_leave_exactly_one_version_in_production(postgres_uri, tmp_path, name):
    server = new_server(tmp_path / "mlflow", backend_store_uri=postgres_uri)
    try:
        server.start()
        open_accounts(server, name)
        trainers = []
        for seed in (11, 12):
            csv = write_kaggle_csv(synthetic_frame(signal=2.0, seed=seed), tmp_path / f"train-{seed}.csv")
            log_path = tmp_path / f"trainer-{seed}.log"
            trainers.append((run_trainer(csv, server.url, log_path, name), log_path))
        for process, log_path in trainers:
            process.wait(300)
            output = log_path.read_text()
            assert process.returncode == 0, output[-4000:]
            assert "Traceback" not in output and "ALREADY_EXISTS" not in output, output[-4000:]
        client = MlflowClient(server.url)
        versions = client.search_model_versions(f"name = '{name}'")
        assert sorted(v.version for v in versions) == ["1", "2"]
        stages = {v.version: v.current_stage for v in versions}
        production = [v for v in versions if v.current_stage == "Production"]
        assert len(production) == 1, stages
        assert client.get_model_version_by_alias(name, "production").version == production[0].version
        other = next(v for v in versions if v.current_stage != "Production")
        decision = other.tags["promotion_decision"]
        # The loser was rejected by the gate, or promoted first and archived by the winner.
        assert (decision, other.current_stage) in {("rejected", "None"), ("promoted", "Archived")}, stages
        record_figure("6 two trainers at once", stages=stages, other_decision=decision)
    finally:
        server.stop()


class _RacingClient:
    """An MlflowClient whose first stage transition lands the way the lost race lands it.

    `found_nothing`: every promoter's archive_existing_versions ran before the others' versions
    reached Production, so each archives nothing (two or three versions end in Production).
    `archived_each_other`: then each archives every other version it sees there (none is left).
    Every promoter waits at the barrier after each forced step, so all of them see the same
    state when they start settling: the interleaving is forced, not hoped for.
    """

    def __init__(self, url: str, barrier: threading.Barrier, mode: str):
        self._client = MlflowClient(url)
        self._barrier = barrier
        self._mode = mode
        self._first = True

    def __getattr__(self, attr):
        return getattr(self._client, attr)

    def transition_model_version_stage(self, name, version, stage, archive_existing_versions=False):
        if not self._first:
            return self._client.transition_model_version_stage(
                name, version, stage, archive_existing_versions
            )
        self._first = False
        result = self._client.transition_model_version_stage(name, version, stage, False)
        self._barrier.wait(60)
        if self._mode == "archived_each_other":
            others = [
                mv.version
                for mv in self._client.search_model_versions(f"name = '{name}'")
                if mv.current_stage == "Production" and mv.version != version
            ]
            self._barrier.wait(60)  # all have looked before any archives
            for other in others:
                self._client.transition_model_version_stage(name, other, "Archived")
            self._barrier.wait(60)
        return result


def test_promotions_whose_race_was_lost_converge_on_one_production_version(postgres_uri, tmp_path):
    """The two ways concurrent promotions were seen to go wrong, forced: promote() settles both."""
    server = started_server(tmp_path / "mlflow", backend_store_uri=postgres_uri)
    try:
        for mode in ("found_nothing", "archived_each_other"):
            _forced_race(server.url, mode)
    finally:
        server.stop()


def _forced_race(url: str, mode: str) -> None:
    name = f"forced-race-{mode}-{uuid.uuid4().hex[:6]}"
    versions = [register_model(url, name, stage=None) for _ in range(3)]
    barrier = threading.Barrier(len(versions))
    winners: list[str] = []
    errors: list[BaseException] = []

    def promote_forced(version: str) -> None:
        try:
            winners.append(promote(_RacingClient(url, barrier, mode), name, version))
        except BaseException as e:  # a thread's exception would otherwise pass unseen
            errors.append(e)
            barrier.abort()

    threads = [threading.Thread(target=promote_forced, args=(v,)) for v in versions]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    client = MlflowClient(url)
    stages = {v.version: v.current_stage for v in client.search_model_versions(f"name = '{name}'")}
    production = [v for v, stage in stages.items() if stage == "Production"]
    assert production == [max(versions, key=int)], stages  # the newest wins, the same for everyone
    assert winners == production * len(versions), winners
    assert client.get_model_version_by_alias(name, "production").version == production[0]


def test_simultaneous_promotions_converge_on_one_production_version(postgres_uri, tmp_path):
    """An unforced race of three promoters, a few times (the forced test above is the regression
    check: this one only hits the window by luck)."""
    server = started_server(tmp_path / "mlflow", backend_store_uri=postgres_uri)
    try:
        outcomes = []
        for trial in range(4):
            name = f"race-{trial}-{uuid.uuid4().hex[:6]}"
            versions = [register_model(server.url, name, stage=None) for _ in range(3)]
            barrier = threading.Barrier(len(versions))
            winners: list[str] = []
            errors: list[BaseException] = []

            def promote_now(version: str, name: str = name, barrier=barrier, winners=winners, errors=errors):
                barrier.wait()
                try:
                    winners.append(promote(MlflowClient(server.url), name, version))
                except BaseException as e:  # a thread's exception would otherwise pass unseen
                    errors.append(e)

            threads = [threading.Thread(target=promote_now, args=(v,)) for v in versions]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            assert not errors, errors  # every promoter finishes, none crashes on the other's writes
            assert len(winners) == len(versions)
            client = MlflowClient(server.url)
            stages = {v.version: v.current_stage for v in client.search_model_versions(f"name = '{name}'")}
            production = [v for v, stage in stages.items() if stage == "Production"]
            assert len(production) == 1, stages
            assert client.get_model_version_by_alias(name, "production").version == production[0]
            outcomes.append(production[0])
        record_figure("6 simultaneous promotions", trials=len(outcomes), production_versions=outcomes)
    finally:
        server.stop()


# --- 7. Production archived in the UI, no replacement --------------------------------------


def test_production_archived_api_stops_within_a_poll_and_resumes_on_promotion(server, tmp_path, name):
    open_accounts(server, name)
    version = register_version(server, name)
    api = start_api_process(api_env(server.url, name, tmp_path / "spool"), tmp_path / "api.log")
    try:
        wait_until(lambda: is_ready(api), 60, "the API to be ready")
        set_stage(server.url, name, version, "Archived")  # the UI's "Transition to -> Archived"
        archived = time.monotonic()
        wait_until(lambda: not is_ready(api), POLL + SLACK, "the API to stop serving")
        stop_s = time.monotonic() - archived
        resp = httpx.post(f"{api.url}/predict", json=SEED_PAYLOAD)
        assert resp.status_code == 503 and "no version" in resp.json()["detail"]
        set_stage(server.url, name, version, "Production")
        promoted = time.monotonic()
        wait_until(lambda: is_ready(api), POLL + SLACK, "the API to serve again")
        resume_s = time.monotonic() - promoted
        assert httpx.post(f"{api.url}/predict", json=SEED_PAYLOAD).json()["model_version"] == version
        record_figure(
            "7 Production archived, no replacement",
            stopped_after_s=round(stop_s, 2),
            resumed_after_s=round(resume_s, 2),
            poll_s=POLL,
        )
    finally:
        assert api.terminate_cleanly(), api.log()[-3000:]


# --- 8. a Production version that must not be served ---------------------------------------


def corrupt_skops(server: RestartableServer, name: str, version: str) -> None:
    """Overwrite the version's skops file in the artifact store with garbage."""
    uri = MlflowClient(server.url).get_model_version_download_uri(name, version)
    folder = Path(server.artifacts_destination) / uri.removeprefix("mlflow-artifacts:/")
    (skops_file,) = folder.glob("*.skops")
    skops_file.write_bytes(b"PK\x03\x04 this is not the model you trained")


def register_renamed_signature(server: RestartableServer, name: str) -> str:
    """A version whose signature calls `age` `Age`: not the API's fields."""
    pipeline, df = fitted_pipeline(0)
    renamed = df.loc[:, list(FEATURES)].head(5).rename(columns={"age": "Age"})
    signature = infer_signature(renamed, pipeline.predict_proba(renamed.to_numpy())[:, 1])
    return register(server.url, name, lambda: log_sklearn(pipeline, df, signature=signature))


@pytest.mark.parametrize("fault", ["corrupt skops file", "signature mismatch"])
def test_unservable_production_version_is_refused_and_the_old_one_not_served(server, tmp_path, name, fault):
    open_accounts(server, name)
    good = register_version(server, name)
    if fault == "corrupt skops file":
        bad = register_version(server, name, stage=None, seed=1)
        corrupt_skops(server, name, bad)
        reason = "cannot be loaded safely"
    else:
        bad = register_renamed_signature(server, name)
        reason = "do not match the API's fields"
    api = start_api_process(api_env(server.url, name, tmp_path / "spool"), tmp_path / "api.log")
    try:
        wait_until(lambda: health(api)["model_version"] == good, 60, "the good version to be served")
        set_stage(server.url, name, bad, "Production", archive_existing=True)
        wait_until(lambda: not is_ready(api), POLL + SLACK, "the API to drop the archived version")
        answers = [httpx.post(f"{api.url}/predict", json=SEED_PAYLOAD) for _ in range(3)]
        time.sleep(POLL + 1)  # another poll: it must not fall back to the archived version
        answers += [httpx.post(f"{api.url}/predict", json=SEED_PAYLOAD) for _ in range(3)]
        for resp in answers:
            assert resp.status_code == 503
            assert f"Production version {bad} cannot be served" in resp.json()["detail"]
            assert reason in resp.json()["detail"]
        assert f"serving nothing: Production version {bad} cannot be served" in api.log()
        record_figure(f"8 {fault}", status=503, detail=answers[0].json()["detail"][:160])
    finally:
        assert api.terminate_cleanly(), api.log()[-3000:]
