"""Batches of real rows, every size class the API scores differently, against the model itself.

Up to 32 rows go through the fast path, up to INLINE_ROWS are scored inline, then in a thread,
and from SPLIT_ROWS in two halves in two threads: each answer must be the served model's own
`predict_proba` for that row, value for value and in request order (a swapped pair of halves,
or a row scored by another path, fails here).
"""

from __future__ import annotations

import math
import uuid

import numpy as np
import pandas as pd
import pytest
from fastapi.testclient import TestClient
from mlflow.tracking import MlflowClient

from credit_risk.api.app import create_app
from credit_risk.features import CSV_TO_API, FEATURES
from credit_risk.model_io import load_model_version
from credit_risk.settings import ApiSettings
from support.api import register_model, wait_until
from support.data import REAL_CSV
from support.requirements import unavailable

pytestmark = pytest.mark.integration

SIZES = [1, 31, 32, 33, 1999, 2000, 2500, 10_000]
THRESHOLD = 0.3


@pytest.fixture(scope="module")
def real_rows() -> list[dict]:
    """The first 10,000 rows of the real file as request bodies (null where the file is empty)."""
    if not REAL_CSV.exists():  # under CI a failure: .ci/run runs `make data`
        unavailable("data", f"{REAL_CSV} not present: run `make data`")
    df = pd.read_csv(REAL_CSV, index_col=0, nrows=max(SIZES)).rename(columns=CSV_TO_API)
    return [
        {k: (None if pd.isna(v) else float(v)) for k, v in row.items()}
        for row in df.loc[:, list(FEATURES)].to_dict("records")
    ]


@pytest.fixture(scope="module")
def served(mlflow_server, tmp_path_factory):
    """An app serving a Production version, and that version loaded the way the API loads it."""
    name = f"api-batches-{uuid.uuid4().hex[:8]}"
    version = register_model(mlflow_server.url, name, threshold=THRESHOLD)
    model = load_model_version(MlflowClient(mlflow_server.url), name, version)
    settings = ApiSettings(
        mlflow_tracking_uri=mlflow_server.url,
        model_name=name,
        prediction_experiment=f"predictions-{uuid.uuid4().hex[:8]}",
        prediction_log_spool_dir=tmp_path_factory.mktemp("spool"),
    )
    with TestClient(create_app(settings)) as client:
        wait_until(lambda: client.get("/health/ready").status_code == 200, 30, "the model to load")
        yield client, model


@pytest.mark.parametrize("size", SIZES)
def test_batch_of_real_rows_is_the_models_predict_proba_in_order(served, real_rows, size):
    client, model = served
    # A different slice per size, so that no two sizes share their first rows.
    start = (size * 7) % (len(real_rows) - size + 1)
    records = real_rows[start : start + size]
    resp = client.post("/predict/batch", json={"records": records})
    assert resp.status_code == 200, resp.text[:500]
    body = resp.json()
    assert body["model_version"] == model.version
    X = np.array([[math.nan if r[f] is None else r[f] for f in FEATURES] for r in records], dtype=np.float64)
    expected = model.predict_proba(X)
    got = [p["probability"] for p in body["predictions"]]
    assert len(got) == size
    wrong = [i for i, (g, e) in enumerate(zip(got, expected, strict=True)) if g != e]
    assert not wrong, (
        f"{len(wrong)} rows differ, first at {wrong[:5]}: {[(got[i], expected[i]) for i in wrong[:5]]}"
    )
    assert [p["prediction"] for p in body["predictions"]] == [int(e >= model.threshold) for e in expected]
    assert len({p["prediction_id"] for p in body["predictions"]}) == size
