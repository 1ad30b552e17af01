"""Nobody gets in, against real processes: the API key stays secret, hostile models are refused, host check.

The static checks (code, Dockerfiles, compose) are in unit/test_security_static.py.
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import httpx
import mlflow
import numpy as np
import pytest
import skops.io
import yaml
from fastapi.testclient import TestClient
from mlflow.models import infer_signature
from mlflow.tracking import MlflowClient
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import FunctionTransformer

from credit_risk.api.app import create_app
from credit_risk.features import FEATURES, CreditFeatures
from credit_risk.model_io import PIP_REQUIREMENTS, TRUSTED_TYPES
from credit_risk.settings import ApiSettings
from support.api import SEED_PAYLOAD, fitted_pipeline, register_model, start_api_process, wait_until
from support.registration import log_sklearn, register


@pytest.mark.integration
def test_api_key_never_reaches_the_api_log_or_any_answer(mlflow_server, tmp_path):
    secret = f"secret-{uuid.uuid4().hex}"
    wrong = f"guess-{uuid.uuid4().hex}"
    name = f"security-key-{uuid.uuid4().hex[:8]}"
    register_model(mlflow_server.url, name)
    experiment = f"security-predictions-{uuid.uuid4().hex[:8]}"
    env = {
        "MLFLOW_TRACKING_URI": mlflow_server.url,
        "MODEL_NAME": name,
        "API_KEY": secret,
        "LOG_LEVEL": "debug",
        "API_ACCESS_LOG": "true",  # every request line logged: the log has something to leak into
        "PREDICTION_EXPERIMENT": experiment,
        "PREDICTION_LOG_SPOOL_DIR": str(tmp_path / "spool"),
        "PREDICTION_LOG_FLUSH_SECONDS": "0.2",
    }
    api = start_api_process(env, tmp_path / "api.log")
    answers = []
    try:
        wait_until(lambda: httpx.get(f"{api.url}/health/ready").status_code == 200, 60, "the model to load")
        for path, body in [("/predict", SEED_PAYLOAD), ("/predict/batch", {"records": [SEED_PAYLOAD]})]:
            for key, expected in [(None, 401), (wrong, 401), (secret[:-1], 401), (secret, 200)]:
                headers = {"X-API-Key": key} if key else {}
                resp = httpx.post(f"{api.url}{path}", json=body, headers=headers)
                assert resp.status_code == expected, (path, key, resp.text)
                answers.append(resp.text + str(resp.headers))
        for path in ["/health", "/model/info", "/metrics", "/openapi.json"]:
            answers.append(httpx.get(f"{api.url}{path}", headers={"X-API-Key": secret}).text)
        wait_until(
            lambda: httpx.get(f"{api.url}/health").json()["prediction_log"]["logged_total"] >= 2,
            30,
            "the two answered predictions to reach MLflow",
        )
    finally:
        assert api.terminate_cleanly()
    log = api.log()
    assert '"POST /predict HTTP/1.1" 401' in log and '"POST /predict HTTP/1.1" 200' in log  # not vacuous
    for text in [log, *answers]:
        assert secret not in text and wrong not in text and secret[:-1] not in text
    # Nor in what the API logs to MLflow about its predictions.
    client = MlflowClient(mlflow_server.url)
    runs = client.search_runs([client.get_experiment_by_name(experiment).experiment_id])
    assert runs
    for run in runs:
        assert secret not in str(run.data.params) + str(run.data.tags)
        local = Path(
            mlflow.artifacts.download_artifacts(
                run_id=run.info.run_id,
                dst_path=str(tmp_path / run.info.run_id),
                tracking_uri=mlflow_server.url,
            )
        )
        for path in local.rglob("*"):
            if path.is_file():
                assert secret.encode() not in path.read_bytes(), path


# --- containers and credentials ------------------------------------------------------------------------


class _Trap(BaseEstimator, ClassifierMixin):
    """Unpickling it creates a marker file: proof that something unpickled the model."""

    def __init__(self, marker: str = ""):
        self.marker = marker

    def predict_proba(self, X):
        return np.full((len(X), 2), 0.5)

    def __reduce__(self):
        return (Path.touch, (Path(self.marker),))


def _signature(pipeline, df):
    example = df.loc[:, list(FEATURES)].head(5).astype("float64")
    return infer_signature(example, pipeline.predict_proba(example.to_numpy())[:, 1])


@pytest.fixture
def tracking_uri(tracking_uri, monkeypatch) -> str:
    """registration.register logs through MLflow's fluent API, which reads the variable."""
    monkeypatch.setenv("MLFLOW_TRACKING_URI", tracking_uri)
    return tracking_uri


def _served_detail(tracking_uri: str, name: str, tmp_path: Path) -> str:
    settings = ApiSettings(
        mlflow_tracking_uri=tracking_uri,
        model_name=name,
        model_poll_seconds=0.5,
        prediction_experiment=f"predictions-{uuid.uuid4().hex[:8]}",
        prediction_log_spool_dir=tmp_path / "spool",
    )
    with TestClient(create_app(settings)) as client:
        refused = lambda: "cannot be served" in (client.get("/health").json()["reason"] or "")  # noqa: E731
        wait_until(refused, 20, "the Production version to be refused")
        resp = client.post("/predict", json=SEED_PAYLOAD)
        assert resp.status_code == 503, resp.text
        assert client.get("/health").json()["model_version"] is None
        return resp.json()["detail"]


@pytest.mark.integration
@pytest.mark.parametrize("serialization_format", ["cloudpickle", "pickle"])
def test_api_refuses_a_pickled_production_model_without_unpickling_it(
    tracking_uri, model_name, tmp_path, serialization_format
):
    marker = tmp_path / "unpickled"
    pipeline, df = fitted_pipeline(0)
    clean = _signature(pipeline, df)
    trap = _Trap(str(marker))
    log = lambda: log_sklearn(trap, df, serialization_format=serialization_format, signature=clean)  # noqa: E731
    version = register(tracking_uri, model_name, log, production=True)
    marker.unlink(missing_ok=True)  # in case logging itself round-tripped the pickle
    detail = _served_detail(tracking_uri, model_name, tmp_path)
    assert f"version {version} cannot be served" in detail
    assert f"serialization format is '{serialization_format}'" in detail
    assert not marker.exists(), "the API unpickled the model"


@pytest.mark.integration
@pytest.mark.parametrize("dangerous", [os.system, eval])
def test_api_refuses_a_skops_model_that_trusts_a_dangerous_callable(
    tracking_uri, model_name, tmp_path, dangerous
):
    pipeline, df = fitted_pipeline(0)
    hostile = make_pipeline(CreditFeatures(), FunctionTransformer(dangerous), pipeline[-1])
    (extra,) = set(skops.io.get_untrusted_types(data=skops.io.dumps(hostile))) - set(TRUSTED_TYPES)
    assert extra.endswith((".system", ".eval")), extra
    clean = _signature(pipeline, df)
    # Logged directly: registration.log_sklearn would run the pipeline (and so the callable) once.
    log = lambda: mlflow.sklearn.log_model(  # noqa: E731
        hostile,
        name="model",
        serialization_format="skops",
        skops_trusted_types=[*TRUSTED_TYPES, extra],
        signature=clean,
        metadata={"decision_threshold": 0.3, "dataset_hash": "sha256-test"},
        pip_requirements=PIP_REQUIREMENTS,
    )
    version = register(tracking_uri, model_name, log, production=True)
    detail = _served_detail(tracking_uri, model_name, tmp_path)
    assert f"version {version} cannot be served" in detail and "cannot be loaded safely" in detail
    assert extra in detail


@pytest.mark.integration
def test_api_refuses_a_clean_model_whose_mlmodel_trusts_more_than_we_do(tracking_uri, model_name, tmp_path):
    # The file holds nothing dangerous, but its MLmodel would make MLflow's own loader trust eval.
    pipeline, df = fitted_pipeline(0)
    log = lambda: log_sklearn(pipeline, df, skops_trusted_types=[*TRUSTED_TYPES, "builtins.eval"])  # noqa: E731
    version = register(tracking_uri, model_name, log, production=True)
    client = MlflowClient(tracking_uri)
    mlmodel = yaml.safe_load(
        Path(
            mlflow.artifacts.download_artifacts(
                f"{client.get_model_version_download_uri(model_name, version)}/MLmodel",
                dst_path=str(tmp_path),
                tracking_uri=tracking_uri,
            )
        ).read_text()
    )
    assert "builtins.eval" in mlmodel["flavors"]["sklearn"]["skops_trusted_types"]
    detail = _served_detail(tracking_uri, model_name, tmp_path)
    assert "cannot be loaded safely" in detail and "builtins.eval" in detail


# --- the MLflow server's host check --------------------------------------------------------------------


@pytest.mark.integration
def test_mlflow_server_rejects_an_unknown_host_header(mlflow_server):
    api = f"{mlflow_server.url}/api/2.0/mlflow/experiments/search?max_results=1"
    assert httpx.get(api).status_code == 200
    forged = httpx.get(api, headers={"Host": "attacker.example"})
    assert forged.status_code in (400, 403), forged.status_code
    assert httpx.get(f"{mlflow_server.url}/health", headers={"Host": "attacker.example"}).status_code == 200
