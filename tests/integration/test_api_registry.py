"""Production only, following the registry: what is served as versions move between stages."""

from __future__ import annotations

import threading
import uuid
import weakref
from collections import Counter

import httpx
import mlflow
import pytest
from fastapi.testclient import TestClient
from mlflow.models import infer_signature
from mlflow.tracking import MlflowClient

from credit_risk.api.app import create_app
from credit_risk.api.model_holder import ModelHolder
from credit_risk.features import FEATURES
from credit_risk.model_io import PIP_REQUIREMENTS, TRUSTED_TYPES
from credit_risk.settings import ApiSettings
from support.api import (
    SEED_PAYLOAD,
    fitted_pipeline,
    register_model,
    set_stage,
    start_api_process,
    wait_until,
)

POLL = 0.3


def _app(tracking_uri: str, name: str, tmp_path, poll: float = POLL) -> TestClient:
    settings = ApiSettings(
        mlflow_tracking_uri=tracking_uri,
        model_name=name,
        model_poll_seconds=poll,
        prediction_experiment=f"predictions-{uuid.uuid4().hex[:8]}",
        prediction_log_spool_dir=tmp_path / "spool",
    )
    return TestClient(create_app(settings))


def _polled(client: TestClient) -> bool:
    return client.get("/health").json()["tracking_server_reachable"] is True


def _served_version(client: TestClient) -> str | None:
    return client.get("/health").json()["model_version"]


@pytest.mark.integration
def test_no_production_version_is_503_with_the_reason(tracking_uri, model_name, tmp_path):
    register_model(tracking_uri, model_name, stage=None)
    with _app(tracking_uri, model_name, tmp_path) as client:
        wait_until(lambda: _polled(client), 20, "the first registry poll")
        for resp in (client.get("/health/ready"), client.post("/predict", json=SEED_PAYLOAD)):
            assert resp.status_code == 503
            assert resp.json()["error"] == "model_not_ready"
            assert "no version" in resp.json()["detail"] and "Production" in resp.json()["detail"]
        assert client.get("/model/info").status_code == 503
        assert client.get("/health/live").status_code == 200
        assert client.get("/health").json()["status"] == "degraded"


@pytest.mark.integration
def test_unknown_model_name_is_503(tracking_uri, tmp_path):
    with _app(tracking_uri, f"never-registered-{uuid.uuid4().hex[:6]}", tmp_path) as client:
        wait_until(lambda: _polled(client), 20, "the first registry poll")
        assert client.post("/predict", json=SEED_PAYLOAD).status_code == 503


@pytest.mark.integration
def test_staging_version_is_never_served(tracking_uri, model_name, tmp_path):
    version = register_model(tracking_uri, model_name, stage="Staging")
    with _app(tracking_uri, model_name, tmp_path) as client:
        wait_until(lambda: _polled(client), 20, "the first registry poll")
        assert client.post("/predict", json=SEED_PAYLOAD).status_code == 503
        set_stage(tracking_uri, model_name, version, "Production")
        wait_until(lambda: client.get("/health/ready").status_code == 200, 20, "the promoted version")
        assert client.post("/predict", json=SEED_PAYLOAD).json()["model_version"] == version


@pytest.mark.integration
def test_follows_promotion_and_stops_serving_an_archived_version(tracking_uri, model_name, tmp_path):
    v1 = register_model(tracking_uri, model_name, seed=0)
    with _app(tracking_uri, model_name, tmp_path) as client:
        wait_until(lambda: _served_version(client) == v1, 20, "version 1")
        v2 = register_model(tracking_uri, model_name, seed=1)  # promoted, v1 archived
        wait_until(lambda: _served_version(client) == v2, 20, "version 2 to be swapped in")
        assert client.post("/predict", json=SEED_PAYLOAD).json()["model_version"] == v2
        # Someone archives it in the UI: within a poll interval or two, nothing is served.
        set_stage(tracking_uri, model_name, v2, "Archived")
        wait_until(lambda: client.get("/health/ready").status_code == 503, 10 * POLL + 5, "v2 to stop")
        assert client.post("/predict", json=SEED_PAYLOAD).status_code == 503


@pytest.mark.integration
def test_reload_checks_the_registry_at_once(tracking_uri, model_name, tmp_path):
    v1 = register_model(tracking_uri, model_name, seed=0)
    with _app(tracking_uri, model_name, tmp_path, poll=3600) as client:
        wait_until(lambda: _served_version(client) == v1, 20, "version 1")
        v2 = register_model(tracking_uri, model_name, seed=1)
        assert _served_version(client) == v1  # the next poll is an hour away
        resp = client.post("/model/reload")
        assert resp.status_code == 200 and f"version {v2}" in resp.json()["detail"]
        assert client.post("/predict", json=SEED_PAYLOAD).json()["model_version"] == v2


@pytest.mark.integration
def test_version_with_mismatched_signature_is_not_served(tracking_uri, model_name, tmp_path):
    pipeline, df = fitted_pipeline(0)
    renamed = df.loc[:, list(FEATURES)].head(5).rename(columns={"age": "Age"})
    mlflow.set_tracking_uri(tracking_uri)
    with mlflow.start_run():
        info = mlflow.sklearn.log_model(
            pipeline,
            name="model",
            serialization_format="skops",
            skops_trusted_types=TRUSTED_TYPES,
            signature=infer_signature(renamed, pipeline.predict_proba(renamed.to_numpy())[:, 1]),
            metadata={"decision_threshold": 0.3, "dataset_hash": "x"},
            pip_requirements=PIP_REQUIREMENTS,
        )
    version = mlflow.register_model(info.model_uri, model_name).version
    set_stage(tracking_uri, model_name, version, "Production")
    with _app(tracking_uri, model_name, tmp_path) as client:
        wait_until(lambda: _polled(client), 20, "the first registry poll")
        resp = client.post("/predict", json=SEED_PAYLOAD)
        assert resp.status_code == 503
        assert f"version {version} cannot be served" in resp.json()["detail"]
        assert "signature" in resp.json()["detail"]


@pytest.mark.integration
def test_hot_swap_under_concurrent_load_fails_no_request(tracking_uri, model_name, tmp_path):
    v1 = register_model(tracking_uri, model_name, seed=0)
    v2 = register_model(tracking_uri, model_name, seed=1, stage="Staging")
    api = start_api_process(
        {
            "MLFLOW_TRACKING_URI": tracking_uri,
            "MODEL_NAME": model_name,
            "MODEL_POLL_SECONDS": "0.2",
            "PREDICTION_LOG_SPOOL_DIR": str(tmp_path / "spool"),
            "PREDICTION_EXPERIMENT": f"predictions-{uuid.uuid4().hex[:8]}",
        },
        tmp_path / "api.log",
    )
    try:
        wait_until(lambda: httpx.get(f"{api.url}/health/ready").status_code == 200, 30, "the API to be ready")
        statuses: Counter[int] = Counter()
        versions: Counter[str] = Counter()
        # A reset connection or a timeout is a failed request too: counted, never a silently dead thread.
        errors: list[str] = []
        lock = threading.Lock()
        stop = threading.Event()

        def hammer() -> None:
            with httpx.Client(base_url=api.url, timeout=10) as http:
                while not stop.is_set():
                    try:
                        resp = http.post("/predict", json=SEED_PAYLOAD)
                        version = resp.json()["model_version"] if resp.status_code == 200 else None
                    except Exception as e:  # every failure is counted and reported
                        with lock:
                            errors.append(f"{type(e).__name__}: {e}")
                        continue
                    with lock:
                        statuses[resp.status_code] += 1
                        if version is not None:
                            versions[version] += 1

        threads = [threading.Thread(target=hammer) for _ in range(8)]
        for t in threads:
            t.start()
        try:
            for target in (v2, v1, v2):  # promote through the UI's REST call, archiving the other
                set_stage(tracking_uri, model_name, target, "Production", archive_existing=True)
                wait_until(
                    lambda target=target: httpx.get(f"{api.url}/health").json()["model_version"] == target,
                    20,
                    f"version {target} to be served",
                )
                before = sum(statuses.values())
                wait_until(lambda before=before: sum(statuses.values()) > before + 50, 20, "more requests")
        finally:
            stop.set()
            for t in threads:
                t.join()
        assert errors == [], f"{len(errors)} requests failed in transport: {errors[:5]}"
        assert all(not t.is_alive() for t in threads)
        assert set(statuses) == {200}, statuses
        assert versions[v1] > 0 and versions[v2] > 0, versions
    finally:
        assert api.terminate_cleanly(), api.log()[-3000:]


@pytest.mark.integration
def test_a_replaced_version_is_freed(tracking_uri, model_name):
    # The holder freezes the served version out of the GC's walks; a version's objects hold
    # reference cycles, so unless the swap unfreezes and collects, every replaced model and
    # its explainer (tens of MiB) stayed in memory for good.
    versions = [register_model(tracking_uri, model_name, stage=None, seed=s) for s in range(3)]
    holder = ModelHolder(MlflowClient(tracking_uri), model_name, poll_seconds=60)
    served = []
    for version in versions:
        set_stage(tracking_uri, model_name, version, "Production", archive_existing=True)
        state = holder.refresh()
        assert state.model.version == version and state.explainer is not None
        served.append((weakref.ref(state.model.pipeline), weakref.ref(state.explainer)))
        del state
    set_stage(tracking_uri, model_name, versions[-1], "Archived")
    assert holder.refresh().model is None
    assert [(m() is None, e() is None) for m, e in served] == [(True, True)] * len(versions)
