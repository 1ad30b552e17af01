"""What the trainer and the API say when MLflow refuses them: 401 and 403 told apart, no secret shown."""

from __future__ import annotations

import requests
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from credit_risk.api.prediction_log.sink import MlflowSink
from credit_risk.settings import ApiSettings
from credit_risk.tracking import access_problem, configure_mlflow, http_status_of

URI = "http://mlflow:5000"


def _rest_error(status: int, endpoint: str = "/api/2.0/mlflow/runs/create") -> MlflowException:
    # The message MLflow's verify_rest_response raises for a non-JSON error body.
    return MlflowException(
        f"API request to endpoint {endpoint} failed with error code {status} != 200. Response body: 'x'"
    )


def test_a_401_names_the_variables_and_a_missing_username(monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", "credit-risk-api")
    said = access_problem(_rest_error(401), URI)
    assert "refused the credentials (401 Unauthorized)" in said
    assert "MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD" in said
    assert "credit-risk-api" not in said
    monkeypatch.delenv("MLFLOW_TRACKING_USERNAME")
    assert "are not set" in access_problem(_rest_error(401), URI)


def test_a_403_names_the_resource_or_the_endpoint():
    assert "registered model 'm' (403 Permission denied)" in access_problem(
        _rest_error(403), URI, "registered model 'm'"
    )
    assert "/api/2.0/mlflow/runs/create (403" in access_problem(_rest_error(403), URI)


def test_a_403_on_an_artifact_upload_is_found_through_the_exception_chain():
    response = requests.Response()
    response.status_code, response.url = (
        403,
        "http://mlflow:5000/api/2.0/mlflow-artifacts/artifacts/1/r/a.txt",
    )
    try:
        try:
            raise requests.HTTPError("403 Client Error", response=response)
        except requests.HTTPError as inner:
            raise MlflowException("upload failed") from inner
    except MlflowException as outer:
        assert http_status_of(outer) == (403, response.url)


def test_other_failures_are_not_access_problems():
    assert access_problem(_rest_error(500), URI) is None
    assert access_problem(ConnectionError("refused"), URI) is None


def test_configure_mlflow_hands_the_account_to_mlflow_and_removes_a_stale_one(monkeypatch):
    import os

    for var in (
        "TRACKING_URI",
        "HTTP_REQUEST_MAX_RETRIES",
        "HTTP_REQUEST_TIMEOUT",
        "HTTP_REQUEST_BACKOFF_FACTOR",
    ):
        monkeypatch.delenv(f"MLFLOW_{var}", raising=False)  # restored at teardown
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", "someone-else")
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", "stale-password")
    configure_mlflow(
        ApiSettings(mlflow_tracking_uri=URI, mlflow_tracking_username=None, mlflow_tracking_password=None)
    )

    assert "MLFLOW_TRACKING_USERNAME" not in os.environ and "MLFLOW_TRACKING_PASSWORD" not in os.environ
    settings = ApiSettings(
        mlflow_tracking_uri=URI, mlflow_tracking_username="u", mlflow_tracking_password="p" * 12
    )
    configure_mlflow(settings)
    assert (
        os.environ["MLFLOW_TRACKING_USERNAME"] == "u" and os.environ["MLFLOW_TRACKING_PASSWORD"] == "p" * 12
    )


def test_the_prediction_logs_session_sends_the_account_to_mlflow_only(tmp_path):
    settings = ApiSettings(
        mlflow_tracking_uri=URI, mlflow_tracking_username="u", mlflow_tracking_password="p" * 12
    )
    sink = MlflowSink(MlflowClient(tracking_uri=URI), settings, tmp_path)
    assert sink._session.auth == ("u", "p" * 12)
    assert sink._log_batch_url == f"{URI}/api/2.0/mlflow/runs/log-batch"
    anonymous = MlflowSink(MlflowClient(tracking_uri=URI), ApiSettings(mlflow_tracking_uri=URI), tmp_path)
    assert anonymous._session.auth is None


def test_a_403_on_log_batch_spools_and_names_the_predictions_experiment(tmp_path, monkeypatch, caplog):
    sink = MlflowSink(MlflowClient(tracking_uri=URI), ApiSettings(mlflow_tracking_uri=URI), tmp_path)
    refused = requests.Response()
    refused.status_code, refused._content = 403, b"Permission denied"
    monkeypatch.setattr(sink, "_run_for", lambda _key: "run-1")
    monkeypatch.setattr(sink._session, "post", lambda *_a, **_k: refused)
    record = {"seq": 1, "process": "p", "model_name": "m", "model_version": "1", "ts_ms": 0}
    records = [{**record, "probability": 0.5, "prediction": 1}]
    with caplog.at_level("WARNING"):
        assert sink.write(records) == records  # not logged: kept for the spool
    assert "denied this account access to experiment 'credit-risk-predictions' (403" in caplog.text
