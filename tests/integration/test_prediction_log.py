"""Prediction logging against a real server: every prediction arriving in MLflow exactly once."""

from __future__ import annotations

import json
import uuid

import httpx
import pytest
from fastapi.testclient import TestClient
from mlflow.tracking import MlflowClient

from credit_risk.api.app import create_app
from credit_risk.features import FEATURES
from credit_risk.settings import ApiSettings
from support.api import (
    SEED_PAYLOAD,
    logged_points,
    payloads,
    register_model,
    start_api_process,
    wait_until,
)


def _settings(tracking_uri: str, name: str, tmp_path, **extra) -> ApiSettings:
    values = {
        "mlflow_tracking_uri": tracking_uri,
        "model_name": name,
        "model_poll_seconds": 0.5,
        "prediction_experiment": f"predictions-{uuid.uuid4().hex[:8]}",
        "prediction_log_spool_dir": tmp_path / "spool",
        "prediction_log_flush_seconds": 0.2,
        **extra,
    }
    return ApiSettings(**values)


def _ready(client: TestClient) -> None:
    wait_until(lambda: client.get("/health/ready").status_code == 200, 30, "the model to load")


def _chunk_lines(tracking_uri: str, run_id: str, tmp_path) -> list[dict]:
    client = MlflowClient(tracking_uri)
    local = tmp_path / f"artifacts-{run_id}"
    local.mkdir()
    client.download_artifacts(run_id, "predictions", str(local))
    return [json.loads(line) for f in sorted(local.rglob("*.jsonl")) for line in f.read_text().splitlines()]


@pytest.mark.integration
def test_every_prediction_is_logged_once_with_its_inputs(tracking_uri, model_name, tmp_path):
    version = register_model(tracking_uri, model_name)
    settings = _settings(tracking_uri, model_name, tmp_path)
    answers = {}
    with TestClient(create_app(settings)) as client:
        _ready(client)
        for body in payloads(120, seed=3):
            out = client.post("/predict", json=body).json()
            answers[out["prediction_id"]] = (body, out["probability"])
        batch = payloads(80, seed=4)
        out = client.post("/predict/batch", json={"records": batch}).json()
        for body, item in zip(batch, out["predictions"], strict=True):
            answers[item["prediction_id"]] = (body, item["probability"])
    # The lifespan's shutdown flushed the queue and uploaded the open chunk.
    points = logged_points(tracking_uri, settings.prediction_experiment)
    assert len(points) == 200 and len(set(points)) == 200
    assert len(logged_points(tracking_uri, settings.prediction_experiment, "prediction")) == 200
    (run_id,) = {run for run, _ in points}
    run = MlflowClient(tracking_uri).get_run(run_id)
    assert run.data.tags["model_name"] == model_name and run.data.tags["model_version"] == version
    assert {"host", "started_at", "api_process"} <= set(run.data.tags)
    lines = _chunk_lines(tracking_uri, run_id, tmp_path)
    assert len(lines) == 200
    for line in lines:
        body, probability = answers[line["prediction_id"]]
        assert line["probability"] == probability
        assert {k: line[k] for k in FEATURES} == body


@pytest.mark.integration
def test_runs_roll_over_after_the_configured_count(tracking_uri, model_name, tmp_path):
    register_model(tracking_uri, model_name)
    settings = _settings(tracking_uri, model_name, tmp_path, prediction_log_run_max_records=50)
    with TestClient(create_app(settings)) as client:
        _ready(client)
        for body in payloads(120, seed=5):
            assert client.post("/predict", json=body).status_code == 200
    points = logged_points(tracking_uri, settings.prediction_experiment)
    per_run = {}
    for run, _ in points:
        per_run[run] = per_run.get(run, 0) + 1
    assert len(points) == 120
    assert len(per_run) == 3 and max(per_run.values()) <= 50


@pytest.mark.integration
def test_full_queue_spools_instead_of_dropping(tracking_uri, model_name, tmp_path):
    register_model(tracking_uri, model_name)
    # A tiny queue and a worker that only wakes at shutdown: most records overflow to disk.
    settings = _settings(
        tracking_uri, model_name, tmp_path, prediction_log_queue_size=5, prediction_log_flush_seconds=3600
    )
    with TestClient(create_app(settings)) as client:
        _ready(client)
        for _ in range(40):
            assert client.post("/predict", json=SEED_PAYLOAD).status_code == 200
        stats = client.get("/health").json()["prediction_log"]
        assert stats["queue_depth"] == 5 and stats["spooled_total"] == 35 and stats["dropped_total"] == 0
    points = logged_points(tracking_uri, settings.prediction_experiment)
    assert len(points) == 40 and len(set(points)) == 40


@pytest.mark.integration
def test_sigterm_flushes_the_queue_before_exit(tracking_uri, model_name, tmp_path):
    register_model(tracking_uri, model_name)
    experiment = f"predictions-{uuid.uuid4().hex[:8]}"
    api = start_api_process(
        {
            "MLFLOW_TRACKING_URI": tracking_uri,
            "MODEL_NAME": model_name,
            "PREDICTION_EXPERIMENT": experiment,
            "PREDICTION_LOG_SPOOL_DIR": str(tmp_path / "spool"),
            "PREDICTION_LOG_FLUSH_SECONDS": "3600",  # only the shutdown flush can log them
        },
        tmp_path / "api.log",
    )
    try:
        wait_until(lambda: httpx.get(f"{api.url}/health/ready").status_code == 200, 30, "the API to be ready")
        with httpx.Client(base_url=api.url) as http:
            for body in payloads(150, seed=6):
                assert http.post("/predict", json=body).status_code == 200
        assert logged_points(tracking_uri, experiment) == []
    finally:
        assert api.terminate_cleanly(), api.log()[-3000:]
    points = logged_points(tracking_uri, experiment)
    assert len(points) == 150 and len(set(points)) == 150
