"""The prediction log's remaining paths, as processes: a spool that cannot be written, a second
API on the same spool, chunk rollover, a crash in the middle of a replay, and /metrics values.
"""

from __future__ import annotations

import json
import time
import uuid

import httpx
import pytest
from fastapi.testclient import TestClient
from mlflow.tracking import MlflowClient
from prometheus_client.parser import text_string_to_metric_families

from credit_risk.api.app import create_app
from credit_risk.settings import ApiSettings
from support.api import SEED_PAYLOAD, payloads, register_model, start_api_process, wait_until
from support.load import logged_predictions
from support.stack import RestartableServer

pytestmark = pytest.mark.integration

LOG = "credit_risk_prediction_log"


def metric_values(text: str) -> dict[str, float]:
    """/metrics as {sample name with its labels: value}."""
    values = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = ",".join(f'{k}="{v}"' for k, v in sorted(sample.labels.items()))
            values[f"{sample.name}{{{labels}}}" if labels else sample.name] = sample.value
    return values


def scrape(url: str) -> dict[str, float]:
    return metric_values(httpx.get(f"{url}/metrics", timeout=10).text)


def log_stats(url: str) -> dict:
    return httpx.get(f"{url}/health", timeout=10).json()["prediction_log"]


def spool_lines(spool) -> list[bytes]:
    """The records in the spool file after its cursor (complete lines only)."""
    data = (spool / "pending.jsonl").read_bytes()
    cursor = spool / "pending.cursor"
    offset = int(cursor.read_text()) if cursor.exists() else 0
    return data[offset:].splitlines(keepends=True)


@pytest.fixture
def server(tmp_path):
    server = RestartableServer(tmp_path / "mlflow")
    server.root.mkdir()
    server.start()
    yield server
    server.stop()


def _env(server, name: str, spool, **extra: str) -> dict[str, str]:
    return {
        "MLFLOW_TRACKING_URI": server.url,
        "MODEL_NAME": name,
        "MODEL_POLL_SECONDS": "3600",  # the first poll loads the model; nothing moves afterwards
        "PREDICTION_EXPERIMENT": f"predictions-{name}",
        "PREDICTION_LOG_SPOOL_DIR": str(spool),
        "PREDICTION_LOG_FLUSH_SECONDS": "0.2",
        **extra,
    }


def _ready(api) -> None:
    wait_until(lambda: httpx.get(f"{api.url}/health/ready", timeout=5).status_code == 200, 60, "the API")


def _send_batches(url: str, n_batches: int, size: int, seed: int) -> dict[str, float]:
    """prediction_id -> probability of every answered prediction."""
    answered = {}
    with httpx.Client(base_url=url, timeout=120) as http:
        for i in range(n_batches):
            resp = http.post("/predict/batch", json={"records": payloads(size, seed=seed + i)})
            assert resp.status_code == 200, resp.text[:300]
            answered.update((p["prediction_id"], p["probability"]) for p in resp.json()["predictions"])
    return answered


def test_records_the_spool_cannot_take_are_dropped_counted_and_the_spool_stays_whole(server, tmp_path):
    """A full disk (RLIMIT_FSIZE): what the spool cannot take is dropped and counted, the rest kept
    intact and replayed by the next process; nothing else is lost."""
    name = f"plog-drop-{uuid.uuid4().hex[:6]}"
    register_model(server.url, name)
    spool = tmp_path / "spool"
    env = _env(server, name, spool)
    api = start_api_process(env, tmp_path / "api-1.log", max_file_bytes=1024 * 1024)
    try:
        _ready(api)
        server.kill()  # every record now goes to the spool, until the spool is full
        answered: dict[str, float] = {}
        for i in range(40):
            answered |= _send_batches(api.url, 1, 1000, seed=100 + i)
            wait_until(lambda: log_stats(api.url)["queue_depth"] == 0, 60, "the queue to empty")
            if log_stats(api.url)["dropped_total"] > 0 and i >= 3:
                break
        stats = log_stats(api.url)
        values = scrape(api.url)
    finally:
        api.terminate()
    assert stats["dropped_total"] > 0, stats
    # Every answered record is either in the spool or counted as dropped, and /metrics agrees.
    assert stats["spooled_total"] + stats["dropped_total"] == len(answered), (stats, len(answered))
    assert values[f"{LOG}_dropped_total"] == stats["dropped_total"]
    assert values[f"{LOG}_spooled_total"] == stats["spooled_total"]
    lines = spool_lines(spool)
    # A failed append leaves no torn fragment behind: every line is a whole record.
    assert all(line.endswith(b"\n") for line in lines)
    spooled = [json.loads(line) for line in lines]
    assert len(spooled) == stats["spooled_total"]
    assert all(answered[r["prediction_id"]] == r["probability"] for r in spooled)

    server.start()
    second = start_api_process(env, tmp_path / "api-2.log")  # no limit: the spool replays
    try:
        wait_until(lambda: log_stats(second.url)["spool_backlog"] == 0, 120, "the spool to replay")
        assert log_stats(second.url)["replayed_total"] == len(spooled)
    finally:
        assert second.terminate_cleanly(), second.log()[-3000:]
    logged = {p.prediction_id: p.value for p in logged_predictions(server.url, f"predictions-{name}")}
    assert logged == {r["prediction_id"]: r["probability"] for r in spooled}
    assert len(answered) - len(logged) == stats["dropped_total"]


def test_a_second_api_on_the_same_spool_refuses_to_start_and_the_first_keeps_serving(mlflow_server, tmp_path):
    name = f"plog-two-{uuid.uuid4().hex[:6]}"
    register_model(mlflow_server.url, name)
    env = _env(mlflow_server, name, tmp_path / "spool")
    first = start_api_process(env, tmp_path / "api-1.log")
    try:
        _ready(first)
        with pytest.raises(AssertionError, match="API exited with") as exited:
            start_api_process(env, tmp_path / "api-2.log")
        assert "used by another API process" in str(exited.value)
        resp = httpx.post(f"{first.url}/predict", json=SEED_PAYLOAD, timeout=10)
        assert resp.status_code == 200
        wait_until(lambda: log_stats(first.url)["logged_total"] == 1, 30, "the prediction to be logged")
    finally:
        assert first.terminate_cleanly(), first.log()[-3000:]


def _settings(server, name: str, tmp_path, **extra) -> ApiSettings:
    return ApiSettings(
        mlflow_tracking_uri=server.url,
        model_name=name,
        model_poll_seconds=3600,
        prediction_experiment=f"predictions-{name}",
        prediction_log_spool_dir=tmp_path / "spool",
        prediction_log_flush_seconds=0.2,
        **extra,
    )


def _chunks(tracking_uri: str, experiment: str, tmp_path) -> dict[str, list[dict]]:
    """Chunk artifact name -> its records, over every run of the experiment."""
    client = MlflowClient(tracking_uri)
    exp = client.get_experiment_by_name(experiment)
    if exp is None:  # nothing logged yet
        return {}
    found = {}
    for run in client.search_runs([exp.experiment_id]):
        for art in client.list_artifacts(run.info.run_id, "predictions"):
            local = client.download_artifacts(run.info.run_id, art.path, str(tmp_path / uuid.uuid4().hex))
            with open(local) as f:
                found[art.path] = [json.loads(line) for line in f]
    return found


def test_chunks_roll_over_at_the_configured_record_count(mlflow_server, tmp_path):
    name = f"plog-chunk-n-{uuid.uuid4().hex[:6]}"
    register_model(mlflow_server.url, name)
    settings = _settings(mlflow_server, name, tmp_path, prediction_log_chunk_records=50)
    with TestClient(create_app(settings)) as client:
        wait_until(lambda: client.get("/health/ready").status_code == 200, 30, "the model")
        # In two rounds of 60, each logged before the next: the worker takes what is queued in one
        # write, and a chunk is sealed after the write that brings it to 50 or more, so 120 sent at
        # once may be one write of 120 (one chunk) when the machine is busy.
        ids = []
        for round_ in range(2):
            bodies = payloads(60, seed=8 + round_)
            ids += [client.post("/predict", json=body).json()["prediction_id"] for body in bodies]
            sent = len(ids)
            wait_until(
                lambda: client.get("/health").json()["prediction_log"]["logged_total"] >= sent,  # noqa: B023
                30,
                f"{sent} records logged",
            )
        # Two chunks are full: uploaded while the API runs, not only at shutdown.
        wait_until(
            lambda: len(_chunks(mlflow_server.url, settings.prediction_experiment, tmp_path)) >= 2,
            30,
            "2 chunks",
        )
    chunks = _chunks(mlflow_server.url, settings.prediction_experiment, tmp_path)
    sizes = [len(records) for _, records in sorted(chunks.items())]
    # A chunk is sealed after the write that brings it to 50 or more (writes are not split).
    assert len(sizes) >= 2 and all(n >= 50 for n in sizes[:-1]) and sum(sizes) == 120, sizes
    assert [r["prediction_id"] for _, records in sorted(chunks.items()) for r in records] == ids


def test_chunks_roll_over_at_the_configured_age(mlflow_server, tmp_path):
    name = f"plog-chunk-s-{uuid.uuid4().hex[:6]}"
    register_model(mlflow_server.url, name)
    settings = _settings(mlflow_server, name, tmp_path, prediction_log_chunk_seconds=1.0)
    with TestClient(create_app(settings)) as client:
        wait_until(lambda: client.get("/health/ready").status_code == 200, 30, "the model")
        for body in payloads(5, seed=9):
            client.post("/predict", json=body)
        # Far below the 10,000-record default: only the age can seal and upload it now.
        wait_until(
            lambda: len(_chunks(mlflow_server.url, settings.prediction_experiment, tmp_path)) == 1,
            30,
            "1 chunk",
        )
        time.sleep(1.5)
        for body in payloads(3, seed=10):
            client.post("/predict", json=body)
        wait_until(
            lambda: len(_chunks(mlflow_server.url, settings.prediction_experiment, tmp_path)) == 2,
            30,
            "2 chunks",
        )
    sizes = sorted(
        len(r) for r in _chunks(mlflow_server.url, settings.prediction_experiment, tmp_path).values()
    )
    assert sizes == [3, 5]


def test_a_crash_in_the_middle_of_a_replay_counts_nothing_twice(server, tmp_path):
    """SIGKILL while the spool replays; the next process finishes the replay: every answered
    prediction in MLflow exactly once, with its value; /metrics counts the rest of the replay."""
    name = f"plog-crash-{uuid.uuid4().hex[:6]}"
    register_model(server.url, name)
    spool = tmp_path / "spool"
    env = _env(server, name, spool)
    first = start_api_process(env, tmp_path / "api-1.log")
    try:
        _ready(first)
        server.kill()
        answered = _send_batches(first.url, 3, 10_000, seed=200)
        wait_until(lambda: log_stats(first.url)["spool_backlog"] == len(answered), 120, "all spooled")
        values = scrape(first.url)
        assert values[f"{LOG}_spooled_total"] == len(answered) and values[f"{LOG}_logged_total"] == 0
    finally:
        assert first.terminate_cleanly(), first.log()[-3000:]

    server.start()
    second = start_api_process(env, tmp_path / "api-2.log")
    deadline = time.monotonic() + 120
    while not 0 < (stats := log_stats(second.url))["replayed_total"] < len(answered) - 2000:
        assert time.monotonic() < deadline and stats["spool_backlog"] > 0, stats
        time.sleep(0.02)
    second.process.kill()
    second.process.wait()
    left = len(spool_lines(spool))
    assert 0 < left < len(answered), left

    third = start_api_process(env, tmp_path / "api-3.log")
    try:
        wait_until(lambda: log_stats(third.url)["spool_backlog"] == 0, 180, "the replay to finish")
        values = scrape(third.url)
    finally:
        assert third.terminate_cleanly(), third.log()[-3000:]
    # The third process replayed what was after the cursor, and logged nothing else.
    assert values[f"{LOG}_replayed_total"] == left
    assert values[f"{LOG}_logged_total"] == left
    assert values[f"{LOG}_spooled_total"] == 0 and values[f"{LOG}_dropped_total"] == 0
    points = logged_predictions(server.url, f"predictions-{name}")
    ids = [p.prediction_id for p in points]
    assert len(ids) == len(set(ids)), f"{len(ids) - len(set(ids))} points logged twice"
    assert {p.prediction_id: p.value for p in points} == answered


def test_metrics_values_follow_requests_predictions_and_the_log(server, tmp_path):
    """Values, not only names: requests, predictions by outcome, logged, spooled, replayed."""
    name = f"plog-metrics-{uuid.uuid4().hex[:6]}"
    version = register_model(server.url, name)
    api = start_api_process(_env(server, name, tmp_path / "spool"), tmp_path / "api.log")
    try:
        _ready(api)
        with httpx.Client(base_url=api.url, timeout=30) as http:
            singles = [http.post("/predict", json=b).json() for b in payloads(30, seed=11)]
            assert http.post("/predict", json={**SEED_PAYLOAD, "age": -1}).status_code == 422
            batch = http.post("/predict/batch", json={"records": payloads(70, seed=12)}).json()["predictions"]
            wait_until(lambda: log_stats(api.url)["logged_total"] == 100, 30, "100 logged")
            server.kill()
            outage = [http.post("/predict", json=b).json() for b in payloads(20, seed=13)]
            wait_until(lambda: log_stats(api.url)["spool_backlog"] == 20, 30, "20 spooled")
            during = scrape(api.url)
            server.start()
            wait_until(lambda: log_stats(api.url)["spool_backlog"] == 0, 60, "the replay")
            after = scrape(api.url)
    finally:
        assert api.terminate_cleanly(), api.log()[-3000:]
    answers = singles + batch + outage
    positives = sum(a["prediction"] for a in answers)
    route = 'method="POST",route="/predict"'
    assert after[f'credit_risk_http_requests_total{{{route},status="200"}}'] == 50
    assert after[f'credit_risk_http_requests_total{{{route},status="422"}}'] == 1
    assert after['credit_risk_http_requests_total{method="POST",route="/predict/batch",status="200"}'] == 1
    assert after[f"credit_risk_http_request_duration_seconds_count{{{route}}}"] == 51
    assert after['credit_risk_predictions_total{outcome="1"}'] == positives
    assert after['credit_risk_predictions_total{outcome="0"}'] == len(answers) - positives
    assert after["credit_risk_model_version_served"] == float(version)
    assert after["credit_risk_model_ready"] == 1.0
    assert (
        during[f"{LOG}_logged_total"],
        during[f"{LOG}_spooled_total"],
        during[f"{LOG}_spool_backlog"],
    ) == (
        100,
        20,
        20,
    )
    assert during[f"{LOG}_replayed_total"] == 0
    assert after[f"{LOG}_replayed_total"] == 20 and after[f"{LOG}_logged_total"] == 120
    assert after[f"{LOG}_spool_backlog"] == 0 and after[f"{LOG}_queue_depth"] == 0
    assert after[f"{LOG}_dropped_total"] == 0
