"""A tracking server that goes away and comes back: the API keeps serving and loses no log record.

These tests start a tracking server of their own (fixed port, same SQLite file on restart) so
they can stop it without disturbing the session's server.
"""

from __future__ import annotations

import uuid

import httpx
import pytest
from fastapi.testclient import TestClient

from credit_risk.api.app import create_app
from credit_risk.settings import ApiSettings
from support.api import SEED_PAYLOAD, logged_points, payloads, register_model, start_api_process, wait_until
from support.stack import RestartableServer

pytestmark = pytest.mark.integration


@pytest.fixture
def own_server(tmp_path):
    server = RestartableServer(tmp_path / "mlflow")
    yield server
    server.stop()


def _settings(server: RestartableServer, name: str, tmp_path, **extra) -> ApiSettings:
    return ApiSettings(
        mlflow_tracking_uri=server.url,
        model_name=name,
        model_poll_seconds=0.5,
        prediction_experiment="predictions-outage",
        prediction_log_spool_dir=tmp_path / "spool",
        prediction_log_flush_seconds=0.2,
        **extra,
    )


def _log_stats(client: TestClient) -> dict:
    return client.get("/health").json()["prediction_log"]


def test_api_starts_without_tracking_server_and_gets_ready_when_it_is_up(own_server, tmp_path):
    name = f"outage-{uuid.uuid4().hex[:6]}"
    with TestClient(create_app(_settings(own_server, name, tmp_path))) as client:
        assert client.get("/health/live").status_code == 200
        unreachable = lambda: client.get("/health").json()["tracking_server_reachable"] is False  # noqa: E731
        wait_until(unreachable, 30, "a failed registry poll")
        resp = client.post("/predict", json=SEED_PAYLOAD)
        assert resp.status_code == 503 and "unreachable" in resp.json()["detail"]
        own_server.start()
        version = register_model(own_server.url, name)
        wait_until(lambda: client.get("/health/ready").status_code == 200, 30, "the API to become ready")
        assert client.post("/predict", json=SEED_PAYLOAD).json()["model_version"] == version


def test_predictions_during_an_outage_are_spooled_and_replayed_once(own_server, tmp_path):
    own_server.start()
    name = f"outage-{uuid.uuid4().hex[:6]}"
    register_model(own_server.url, name)
    ok = 0
    with TestClient(create_app(_settings(own_server, name, tmp_path))) as client:
        wait_until(lambda: client.get("/health/ready").status_code == 200, 30, "the model to load")
        for body in payloads(100, seed=7):
            ok += client.post("/predict", json=body).status_code == 200
        wait_until(lambda: _log_stats(client)["logged_total"] == 100, 30, "the first records to be logged")

        own_server.stop()
        # The loaded model keeps serving: a dead tracking server must not stop predictions.
        for body in payloads(150, seed=8):
            ok += client.post("/predict", json=body).status_code == 200
        wait_until(lambda: _log_stats(client)["spool_backlog"] == 150, 30, "the outage records to be spooled")
        assert client.get("/health/ready").status_code == 200

        own_server.start()
        wait_until(lambda: _log_stats(client)["spool_backlog"] == 0, 60, "the spool to be replayed")
        for body in payloads(50, seed=9):
            ok += client.post("/predict", json=body).status_code == 200
        stats = _log_stats(client)
        assert stats["replayed_total"] == 150 and stats["dropped_total"] == 0
    assert ok == 300
    points = logged_points(own_server.url, "predictions-outage")
    assert len(points) == ok and len(set(points)) == ok


def test_sigterm_during_outage_spools_and_the_next_start_replays(own_server, tmp_path):
    own_server.start()
    name = f"outage-{uuid.uuid4().hex[:6]}"
    register_model(own_server.url, name)
    env = {
        "MLFLOW_TRACKING_URI": own_server.url,
        "MODEL_NAME": name,
        "MODEL_POLL_SECONDS": "0.5",
        "PREDICTION_EXPERIMENT": "predictions-outage",
        "PREDICTION_LOG_SPOOL_DIR": str(tmp_path / "spool"),
        "PREDICTION_LOG_FLUSH_SECONDS": "3600",  # nothing leaves the queue before SIGTERM
    }
    api = start_api_process(env, tmp_path / "api-1.log")
    try:
        wait_until(lambda: httpx.get(f"{api.url}/health/ready").status_code == 200, 30, "the API to be ready")
        with httpx.Client(base_url=api.url) as http:
            for body in payloads(80, seed=10):
                assert http.post("/predict", json=body).status_code == 200
        own_server.stop()
    finally:
        assert api.terminate_cleanly(), api.log()[-3000:]
    spooled = (tmp_path / "spool" / "pending.jsonl").read_text().splitlines()
    assert len(spooled) == 80

    own_server.start()
    second = start_api_process({**env, "PREDICTION_LOG_FLUSH_SECONDS": "0.2"}, tmp_path / "api-2.log")
    try:
        wait_until(lambda: len(logged_points(own_server.url, "predictions-outage")) >= 80, 60, "the replay")
    finally:
        assert second.terminate_cleanly(), second.log()[-3000:]
    points = logged_points(own_server.url, "predictions-outage")
    assert len(points) == 80 and len(set(points)) == 80
