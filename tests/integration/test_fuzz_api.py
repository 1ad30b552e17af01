"""Hostile requests against the real API process: a schemathesis fuzz run, raw-socket bodies, odd JSON.

`python -m credit_risk.api` (uvicorn, httptools) runs as a subprocess serving a real Production
model from the `mlflow server` fixture. Cases already in tests/integration/test_api_input.py (wrong types for
`age`, NaN/Infinity in /predict, bodies over the cap sent whole) are not repeated here.
"""

from __future__ import annotations

import json
import socket
import time
import uuid
from collections import Counter

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.config import SchemathesisConfig
from schemathesis.core.failures import FailureGroup

from credit_risk.features import FEATURES
from support.api import SEED_PAYLOAD, register_model, start_api_process, wait_until

pytestmark = pytest.mark.integration

API_KEY = "fuzz-key-0123456789"
MAX_BODY = 64 * 1024
MAX_BATCH = 50
# Per operation and generation mode; /predict and /predict/batch are the ones with a body.
FUZZ_EXAMPLES = 100
HEADERS = {"X-API-Key": API_KEY, "Content-Type": "application/json"}


@pytest.fixture(scope="module")
def api(mlflow_server, tmp_path_factory):
    """The API as a subprocess, with a key, a small body cap and a Production model."""
    name = f"fuzz-{uuid.uuid4().hex[:8]}"
    register_model(mlflow_server.url, name)
    root = tmp_path_factory.mktemp("fuzz-api")
    env = {
        "MLFLOW_TRACKING_URI": mlflow_server.url,
        "MODEL_NAME": name,
        "MODEL_POLL_SECONDS": "2",
        "API_KEY": API_KEY,
        "MAX_BODY_BYTES": str(MAX_BODY),
        "MAX_BATCH_SIZE": str(MAX_BATCH),
        "PREDICTION_EXPERIMENT": f"fuzz-predictions-{uuid.uuid4().hex[:8]}",
        "PREDICTION_LOG_SPOOL_DIR": str(root / "spool"),
    }
    process = start_api_process(env, root / "api.log")
    wait_until(lambda: httpx.get(f"{process.url}/health/ready").status_code == 200, 60, "the model to load")
    yield process
    process.terminate()


def _post(api, path: str, text: str) -> httpx.Response:
    return httpx.post(f"{api.url}{path}", content=text, headers=HEADERS, timeout=30)


def _assert_alive_and_clean(api) -> None:
    assert api.process.poll() is None, api.log()[-3000:]
    assert httpx.get(f"{api.url}/health/live").status_code == 200
    log = api.log()
    assert "Traceback" not in log and "Exception in ASGI application" not in log, log[-3000:]


# --- property-based fuzzing over the OpenAPI schema ---------------------------------------------


# schemathesis' own list of statuses that reject invalid data, plus 413: a body over MAX_BODY_BYTES
# is refused before it is read (seen: an invalid oversize /outcomes body, counted as "accepted").
FUZZ_CONFIG = SchemathesisConfig.from_dict(
    {
        "checks": {
            "negative_data_rejection": {
                "expected-statuses": [400, 401, 403, 404, 405, 406, 409, 413, 415, 422, 428, 429, "5xx"]
            }
        }
    }
)


def _fuzz(api, operation, mode: GenerationMode, seen: Counter, failures: list[str]) -> None:
    """Run one operation's generated cases in one mode; count (operation, mode, status)."""

    @settings(
        max_examples=FUZZ_EXAMPLES,
        deadline=None,
        database=None,
        derandomize=True,
        suppress_health_check=list(HealthCheck),
    )
    @given(case=operation.as_strategy(generation_mode=mode))
    def run(case):
        response = case.call(base_url=api.url, headers={"X-API-Key": API_KEY}, timeout=30)
        seen[(operation.label, mode.value, response.status_code)] += 1
        try:
            # schemathesis' default checks: no 5xx, documented status codes and content types,
            # responses matching their schemas, invalid data rejected, valid data accepted.
            case.validate_response(response, headers={"X-API-Key": API_KEY})
        except (AssertionError, FailureGroup) as e:
            failures.append(f"{case.method} {case.path} -> {response.status_code}: {e!s:.500}")

    try:
        run()
    except Unsatisfiable:
        # No invalid request exists for an operation without parameters or body (GET /).
        assert mode is GenerationMode.NEGATIVE and operation.method.upper() == "GET", operation.label


def test_schemathesis_fuzz_finds_no_server_error_and_no_schema_violation(api):
    schema = schemathesis.openapi.from_url(f"{api.url}/openapi.json", config=FUZZ_CONFIG)
    operations = [result.ok() for result in schema.get_all_operations()]
    assert {"POST /predict", "POST /predict/batch", "GET /model/info"} <= {op.label for op in operations}
    seen: Counter[tuple[str, str, int]] = Counter()
    failures: list[str] = []
    for operation in operations:
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            _fuzz(api, operation, mode, seen, failures)

    statuses = Counter()
    for (label, mode, status), count in sorted(seen.items()):
        print(f"  {label} {mode}: {count} x {status}")
        statuses[status] += count
    print(f"schemathesis: {statuses.total()} requests over {len(operations)} operations, {dict(statuses)}")
    assert not [code for code in statuses if code >= 500], statuses
    assert not failures, failures[:5]
    # Not vacuous: valid bodies were scored (200) and invalid ones rejected (422).
    assert seen[("POST /predict", "positive", 200)] > 0 and seen[("POST /predict/batch", "negative", 422)] > 0
    _assert_alive_and_clean(api)


# --- bodies over the cap, never read whole --------------------------------------------------------


def _raw_request(api, head: bytes) -> socket.socket:
    host, port = api.url.removeprefix("http://").split(":")
    sock = socket.create_connection((host, int(port)), timeout=10)
    sock.sendall(head)
    return sock


def _read_status(sock: socket.socket) -> str:
    data = b""
    while b"\r\n" not in data:
        chunk = sock.recv(4096)
        if not chunk:
            break
        data += chunk
    return data.split(b"\r\n", 1)[0].decode()


def test_huge_content_length_is_413_before_the_body_arrives(api):
    # Claims 10 GB, sends 1 KB and then nothing: the answer must come without waiting for the rest.
    head = (
        b"POST /predict/batch HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n"
        + f"X-API-Key: {API_KEY}\r\nContent-Length: {10 * 1024**3}\r\n\r\n".encode()
    )
    start = time.monotonic()
    with _raw_request(api, head + b'{"records": [' + b" " * 1024) as sock:
        status = _read_status(sock)
    assert status.startswith("HTTP/1.1 413 "), status
    assert time.monotonic() - start < 10
    _assert_alive_and_clean(api)


def test_chunked_body_over_the_cap_is_413_while_it_is_still_streaming(api):
    head = (
        b"POST /predict/batch HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n"
        + f"X-API-Key: {API_KEY}\r\nTransfer-Encoding: chunked\r\n\r\n".encode()
    )
    piece = b" " * 8192
    chunk = f"{len(piece):x}\r\n".encode() + piece + b"\r\n"
    with _raw_request(api, head) as sock:
        sent = 0
        # Twice the cap, then stop without the closing zero-length chunk: the body never ends.
        while sent < 2 * MAX_BODY:
            try:
                sock.sendall(chunk)
            except (BrokenPipeError, ConnectionResetError):
                break  # the server answered and closed: also fine
            sent += len(piece)
        status = _read_status(sock)
    assert status.startswith("HTTP/1.1 413 "), status
    _assert_alive_and_clean(api)


# --- JSON a parser chokes on -------------------------------------------------------------------------


def _with_literal(field: str, literal: str, batch: bool) -> str:
    record = json.dumps({**SEED_PAYLOAD, field: "@@"}).replace('"@@"', literal)
    return '{"records": [' + record + "]}" if batch else record


@pytest.mark.parametrize("path", ["/predict", "/predict/batch"])
@pytest.mark.parametrize(("shape", "depth"), [("[", 30_000), ('{"records":', 5_000), ('{"a":', 1_000)])
def test_deeply_nested_json_is_422(api, path, shape, depth):
    # Far deeper than any parser's recursion limit, yet under the body cap (64 KiB here).
    closing = "]" if shape == "[" else "}"
    text = shape * depth + "1" + closing * depth
    assert len(text) < MAX_BODY
    resp = _post(api, path, text)
    assert resp.status_code == 422, resp.text[:500]
    assert resp.json()["error"] == "invalid_input"
    _assert_alive_and_clean(api)


@pytest.mark.parametrize("path", ["/predict", "/predict/batch"])
@pytest.mark.parametrize(
    "literal", ["1" + "0" * 400, "-" + "9" * 400, "1" + "0" * 5000, "1e400", "-1e400", "1e-400"]
)
def test_huge_number_literals_are_422(api, path, literal):
    resp = _post(api, path, _with_literal("DebtRatio", literal, batch=path.endswith("batch")))
    if literal == "1e-400":  # underflows to 0.0, a valid ratio
        assert resp.status_code == 200, resp.text[:500]
        return
    assert resp.status_code == 422, resp.text[:500]
    assert resp.json()["error"] == "invalid_input"
    assert "DebtRatio" in resp.text or "not valid JSON" in resp.text


@pytest.mark.parametrize("literal", ["NaN", "Infinity", "-Infinity"])
def test_nan_and_infinity_in_a_batch_record_are_422(api, literal):
    resp = _post(api, "/predict/batch", _with_literal("MonthlyIncome", literal, batch=True))
    assert resp.status_code == 422, resp.text[:500]


@pytest.mark.parametrize("path", ["/predict", "/predict/batch"])
@pytest.mark.parametrize("field", FEATURES)
def test_string_in_a_numeric_field_is_422_naming_it(api, path, field):
    resp = _post(api, path, _with_literal(field, '"1"', batch=path.endswith("batch")))
    assert resp.status_code == 422, resp.text[:500]
    named = [f["field"] for f in resp.json()["fields"]]
    assert named == [f"records[0].{field}" if path.endswith("batch") else field]


def test_api_survived_every_hostile_request(api):
    # Last in the file: the process answered everything above without a crash or a traceback.
    resp = httpx.post(f"{api.url}/predict", json=SEED_PAYLOAD, headers=HEADERS)
    assert resp.status_code == 200, resp.text
    _assert_alive_and_clean(api)
