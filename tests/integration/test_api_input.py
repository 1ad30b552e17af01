"""The API's contract with callers: answers, every class of bad input, the key, docs and metrics.

In-process (FastAPI's TestClient runs the real lifespan: registry poller, prediction log) against
the real `mlflow server` fixture with a small model in Production.
"""

from __future__ import annotations

import asyncio
import json
import uuid

import pytest
from fastapi.testclient import TestClient

from credit_risk.api.app import create_app
from credit_risk.api.body_limit import DeclaredBodyLimit
from credit_risk.features import FEATURES
from credit_risk.settings import ApiSettings
from support.api import SEED_PAYLOAD, payloads, register_model, wait_until

pytestmark = pytest.mark.integration

MAX_BATCH = 50
MAX_BODY = 64 * 1024
THRESHOLD = 0.3


def _settings(tracking_uri: str, name: str, spool, **extra) -> ApiSettings:
    return ApiSettings(
        mlflow_tracking_uri=tracking_uri,
        model_name=name,
        model_poll_seconds=0.5,
        max_batch_size=MAX_BATCH,
        max_body_bytes=MAX_BODY,
        prediction_experiment=f"predictions-{uuid.uuid4().hex[:8]}",
        prediction_log_spool_dir=spool,
        prediction_log_flush_seconds=0.2,
        **extra,
    )


@pytest.fixture(scope="module")
def served(mlflow_server, tmp_path_factory):
    """A Production model, and an app serving it."""
    name = f"api-input-{uuid.uuid4().hex[:8]}"
    version = register_model(mlflow_server.url, name, threshold=THRESHOLD)
    settings = _settings(mlflow_server.url, name, tmp_path_factory.mktemp("spool"))
    with TestClient(create_app(settings)) as client:
        wait_until(lambda: client.get("/health/ready").status_code == 200, 30, "the model to load")
        yield client, version


@pytest.fixture
def client(served) -> TestClient:
    return served[0]


def _post(client: TestClient, body: dict, path: str = "/predict"):
    return client.post(path, json=body)


def _fields(resp) -> list[str]:
    return [f["field"] for f in resp.json()["fields"]]


def test_predict_answers_the_seed_payload(served):
    client, version = served
    resp = _post(client, SEED_PAYLOAD)
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert set(body) == {"prediction", "probability", "model_version", "prediction_id", "reasons"}
    assert body["model_version"] == version
    assert 0.0 <= body["probability"] <= 1.0
    assert body["prediction"] == int(body["probability"] >= THRESHOLD)


def test_predict_accepts_null_income_and_dependents(client):
    resp = _post(client, {**SEED_PAYLOAD, "MonthlyIncome": None, "NumberOfDependents": None})
    assert resp.status_code == 200, resp.text


def test_predict_accepts_whole_floats_for_counts(client):
    as_ints = _post(client, SEED_PAYLOAD).json()["probability"]
    as_floats = _post(client, {k: (float(v) if v is not None else None) for k, v in SEED_PAYLOAD.items()})
    assert as_floats.status_code == 200
    assert as_floats.json()["probability"] == as_ints


def test_prediction_ids_are_unique(client):
    ids = {_post(client, SEED_PAYLOAD).json()["prediction_id"] for _ in range(20)}
    assert len(ids) == 20


@pytest.mark.parametrize("field", ["age", "MonthlyIncome", "NumberOfDependents"])
def test_predict_rejects_missing_field(client, field):
    body = {k: v for k, v in SEED_PAYLOAD.items() if k != field}
    resp = _post(client, body)
    assert resp.status_code == 422
    assert _fields(resp) == [field]
    assert field in resp.json()["detail"]


def test_predict_rejects_extra_field(client):
    resp = _post(client, {**SEED_PAYLOAD, "SeriousDlqin2yrs": 1})
    assert resp.status_code == 422
    assert _fields(resp) == ["SeriousDlqin2yrs"]
    assert resp.json()["fields"][0]["message"] == "unknown field"


def test_predict_rejects_hyphenated_csv_name(client):
    body = dict(SEED_PAYLOAD)
    body["NumberOfTime30-59DaysPastDueNotWorse"] = body.pop("NumberOfTime30_59DaysPastDueNotWorse")
    resp = _post(client, body)
    assert resp.status_code == 422
    assert set(_fields(resp)) == {
        "NumberOfTime30-59DaysPastDueNotWorse",
        "NumberOfTime30_59DaysPastDueNotWorse",
    }


@pytest.mark.parametrize("value", ["45", "forty", True, [45], {"v": 45}])
def test_predict_rejects_wrong_type(client, value):
    resp = _post(client, {**SEED_PAYLOAD, "age": value})
    assert resp.status_code == 422
    assert _fields(resp) == ["age"]


def test_predict_rejects_negative_income(client):
    resp = _post(client, {**SEED_PAYLOAD, "MonthlyIncome": -1.0})
    assert resp.status_code == 422
    assert _fields(resp) == ["MonthlyIncome"]


@pytest.mark.parametrize(
    "field", ["RevolvingUtilizationOfUnsecuredLines", "DebtRatio", "NumberOfOpenCreditLinesAndLoans"]
)
def test_predict_rejects_negative_values(client, field):
    resp = _post(client, {**SEED_PAYLOAD, field: -0.5})
    assert resp.status_code == 422
    assert _fields(resp) == [field]


@pytest.mark.parametrize("age", [-1, 121, 1000])
def test_predict_rejects_age_out_of_range(client, age):
    resp = _post(client, {**SEED_PAYLOAD, "age": age})
    assert resp.status_code == 422
    assert _fields(resp) == ["age"]


def test_predict_rejects_fractional_count(client):
    resp = _post(client, {**SEED_PAYLOAD, "NumberOfTimes90DaysLate": 1.5})
    assert resp.status_code == 422
    assert _fields(resp) == ["NumberOfTimes90DaysLate"]


def test_predict_rejects_past_due_count_above_the_codes(client):
    resp = _post(client, {**SEED_PAYLOAD, "NumberOfTimes90DaysLate": 99})
    assert resp.status_code == 422
    assert _fields(resp) == ["NumberOfTimes90DaysLate"]


@pytest.mark.parametrize("literal", ["NaN", "Infinity", "-Infinity", "1e999"])
def test_predict_rejects_nan_and_infinity(client, literal):
    # Python's json (FastAPI's parser) reads these literals; the model must never see them.
    text = json.dumps(SEED_PAYLOAD).replace('"DebtRatio": 0.802982', f'"DebtRatio": {literal}')
    assert literal in text
    resp = client.post("/predict", content=text, headers={"Content-Type": "application/json"})
    assert resp.status_code == 422
    assert _fields(resp) == ["DebtRatio"]


@pytest.mark.parametrize("path", ["/predict", "/predict/batch"])
@pytest.mark.parametrize("body", [b"{not json", b"", b"[1, 2", b"\xff\xfe", b'{"records": [NaN]}'])
def test_predict_rejects_body_that_is_not_json(client, path, body):
    resp = client.post(path, content=body, headers={"Content-Type": "application/json"})
    assert resp.status_code == 422
    assert resp.json()["error"] == "invalid_input"


def test_predict_rejects_json_that_is_not_an_object(client):
    resp = client.post("/predict", json=[SEED_PAYLOAD])
    assert resp.status_code == 422


@pytest.mark.parametrize("path", ["/predict", "/predict/batch"])
def test_predict_rejects_form_encoded_body(client, path):
    resp = client.post(path, data={"age": "45"})
    assert resp.status_code == 422
    assert "application/json" in resp.json()["detail"]


def test_batch_answers_in_request_order_like_single_predictions(client):
    records = payloads(MAX_BATCH)
    resp = client.post("/predict/batch", json={"records": records})
    assert resp.status_code == 200, resp.text
    batch = [p["probability"] for p in resp.json()["predictions"]]
    single = [_post(client, r).json()["probability"] for r in records]
    assert batch == single
    assert len({p["prediction_id"] for p in resp.json()["predictions"]}) == MAX_BATCH


def test_batch_above_maximum_is_413(client):
    resp = client.post("/predict/batch", json={"records": payloads(MAX_BATCH + 1)})
    assert resp.status_code == 413
    assert resp.json()["error"] == "batch_too_large"
    assert str(MAX_BATCH) in resp.json()["detail"]


def test_batch_names_the_bad_record_and_field(client):
    records = payloads(5)
    records[3]["age"] = 150
    resp = client.post("/predict/batch", json={"records": records})
    assert resp.status_code == 422
    assert _fields(resp) == ["records[3].age"]


def test_batch_rejects_empty_records(client):
    resp = client.post("/predict/batch", json={"records": []})
    assert resp.status_code == 422
    assert _fields(resp) == ["records"]


def test_batch_rejects_unknown_top_level_field(client):
    resp = client.post("/predict/batch", json={"records": [SEED_PAYLOAD], "model": "v9"})
    assert resp.status_code == 422
    assert _fields(resp) == ["model"]


def test_batch_rejects_nan_inside_a_record(client):
    text = json.dumps({"records": [SEED_PAYLOAD, {**SEED_PAYLOAD, "DebtRatio": 1e999}]})
    resp = client.post("/predict/batch", content=text, headers={"Content-Type": "application/json"})
    assert resp.status_code == 422


def _assert_body_too_large(resp) -> None:
    # The one error shape, not Starlette's plain-text "Content Too Large".
    assert resp.status_code == 413
    assert resp.headers["content-type"] == "application/json"
    assert resp.json() == {
        "error": "body_too_large",
        "detail": f"request body larger than {MAX_BODY} bytes (MAX_BODY_BYTES)",
    }


@pytest.mark.parametrize("path", ["/predict/batch", "/predict", "/no-such-route"])
def test_oversized_body_with_content_length_is_413(client, path):
    body = json.dumps({"records": [SEED_PAYLOAD] * 400}).encode()
    assert len(body) > MAX_BODY
    before = _count_413(client)
    resp = client.post(path, content=body, headers={"Content-Type": "application/json"})
    _assert_body_too_large(resp)
    assert _count_413(client) == before + 1  # answered outside the router, still counted


def _count_413(client) -> float:
    lines = client.get("/metrics").text.splitlines()
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in lines
        if line.startswith("credit_risk_http_requests_total{") and 'status="413"' in line
    )


def test_oversized_streamed_body_is_413(client):
    def chunks():  # no Content-Length: the cap must hold while reading
        yield b'{"records": ['
        for _ in range(400):
            yield json.dumps(SEED_PAYLOAD).encode() + b","
        yield json.dumps(SEED_PAYLOAD).encode() + b"]}"

    resp = client.post("/predict/batch", content=chunks(), headers={"Content-Type": "application/json"})
    _assert_body_too_large(resp)


def test_model_info_describes_the_production_version(served):
    client, version = served
    info = client.get("/model/info").json()
    assert info["model_version"] == version
    assert info["model_stage"] == "Production"
    assert info["dataset_hash"] == "sha256-test"
    assert info["decision_threshold"] == THRESHOLD
    assert info["metrics"]["roc_auc"] == pytest.approx(0.81)
    assert info["feature_names"] == list(FEATURES)
    assert info["run_id"] and info["loaded_at"]


def test_health_reports_model_tracking_and_log(served):
    client, version = served
    health = client.get("/health").json()
    assert health["status"] == "ok" and health["ready"] is True
    assert health["model_version"] == version
    assert health["tracking_server_reachable"] is True
    assert health["scorer"] == "flat-forest"
    assert {"queue_depth", "spool_backlog", "dropped_total"} <= set(health["prediction_log"])
    assert client.get("/").status_code == 200
    assert client.get("/health/live").status_code == 200


def test_docs_show_the_seed_payload_as_example(client):
    spec = client.get("/openapi.json").json()
    schema = spec["components"]["schemas"]["PredictionRequest"]
    assert SEED_PAYLOAD in schema["examples"]
    assert client.get("/docs").status_code == 200


def test_metrics_count_requests_predictions_and_log_state(served):
    client, version = served
    _post(client, SEED_PAYLOAD)
    _post(client, {**SEED_PAYLOAD, "age": -3})
    text = client.get("/metrics").text
    assert 'credit_risk_http_requests_total{method="POST",route="/predict",status="200"}' in text
    assert 'credit_risk_http_requests_total{method="POST",route="/predict",status="422"}' in text
    bucket = 'credit_risk_http_request_duration_seconds_bucket{le="0.005",method="POST",route="/predict"}'
    assert bucket in text
    assert "credit_risk_predictions_total{outcome=" in text
    assert f"credit_risk_model_version_served {float(version)}" in text
    for name in ("queue_depth", "spool_backlog", "spooled_total", "dropped_total"):
        assert f"credit_risk_prediction_log_{name}" in text


@pytest.fixture(scope="module")
def keyed(mlflow_server, served, tmp_path_factory):
    """A second app on the same model, with API_KEY set."""
    client, _ = served
    name = client.get("/model/info").json()["model_name"]
    settings = _settings(mlflow_server.url, name, tmp_path_factory.mktemp("spool-key"), api_key="s3cret-key")
    with TestClient(create_app(settings)) as keyed_client:
        wait_until(lambda: keyed_client.get("/health/ready").status_code == 200, 30, "the model to load")
        yield keyed_client


@pytest.mark.parametrize("path", ["/predict", "/predict/batch", "/model/reload"])
def test_protected_routes_need_the_api_key(keyed, path):
    body = {"records": [SEED_PAYLOAD]} if path.endswith("batch") else SEED_PAYLOAD
    missing = keyed.post(path, json=body)
    wrong = keyed.post(path, json=body, headers={"X-API-Key": "s3cret-kex"})
    right = keyed.post(path, json=body, headers={"X-API-Key": "s3cret-key"})
    assert missing.status_code == 401 and wrong.status_code == 401
    assert "s3cret" not in missing.text + wrong.text
    assert right.status_code == 200, right.text


def test_health_and_info_need_no_api_key(keyed):
    assert keyed.get("/health").status_code == 200
    assert keyed.get("/model/info").status_code == 200
    assert keyed.get("/metrics").status_code == 200


@pytest.mark.parametrize(
    ("declared", "answered_by"),
    [
        ("100", "app"),
        (str(MAX_BODY + 1), "guard"),
        ("9" * 25, "guard"),  # beyond any int64
        ("9" * 5000, "guard"),  # int() refuses strings this long: no 500
        ("\u00b2", "app"),  # str.isdigit() says yes, int() says no: left to the app and the parser
        ("12a", "app"),
    ],
)
def test_declared_body_limit_judges_odd_content_lengths_without_crashing(declared, answered_by):
    sent: list[dict] = []

    async def app(scope, receive, send):
        sent.append({"type": "app"})

    async def send(message):
        sent.append(message)

    async def receive():
        return {"type": "http.request", "body": b"", "more_body": False}

    headers = [(b"content-length", declared.encode())]
    scope = {"type": "http", "method": "POST", "path": "/predict", "headers": headers}
    asyncio.run(DeclaredBodyLimit(app, MAX_BODY)(scope, receive, send))
    if answered_by == "app":
        assert sent == [{"type": "app"}]
    else:
        assert sent[0]["status"] == 413
        assert json.loads(sent[1]["body"])["error"] == "body_too_large"
