"""Stability against the training split, end to end on the real file (issue 12, parts 1-3).

One trainer run (real file, in-process) and one API process are shared by the module: the API
scores the training file's own rows, then a shifted population (only high utilisation); the
live endpoint, the gauges and `python -m credit_risk.monitor` must tell the two apart.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

import httpx
import numpy as np
import pandas as pd
import pytest
from mlflow.tracking import MlflowClient
from sklearn.metrics import roc_auc_score

from credit_risk.devtools.tracking_server import server_env
from credit_risk.features import FEATURES
from credit_risk.monitoring.cli import EXIT_ACT, EXIT_CANNOT_RUN, EXIT_STABLE
from credit_risk.monitoring.reference import REFERENCE_ARTIFACT, Reference
from credit_risk.settings import TrainerSettings
from credit_risk.training.data import load_dataset
from credit_risk.training.pipeline import train
from support.api import start_api_process, wait_until
from support.data import REAL_CSV

pytestmark = [pytest.mark.integration, pytest.mark.realdata]

WINDOW = 2000
UTILISATION = "RevolvingUtilizationOfUnsecuredLines"


@pytest.fixture(scope="module")
def trained(mlflow_server):
    """The real file trained once and promoted; (tracking URI, model name, version, run id)."""
    if not REAL_CSV.exists():
        pytest.skip(f"{REAL_CSV} not present: run `make data` to fetch it")
    name = f"credit-risk-stability-{uuid.uuid4().hex[:8]}"
    with pytest.MonkeyPatch.context() as mp:
        for var in ("TRACKING_URI", "HTTP_REQUEST_MAX_RETRIES", "HTTP_REQUEST_TIMEOUT"):
            mp.delenv(f"MLFLOW_{var}", raising=False)
        mp.delenv("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", raising=False)
        settings = TrainerSettings(
            mlflow_tracking_uri=mlflow_server.url, model_name=name, experiment=name, promote="always"
        )
        result = train(REAL_CSV, settings)
    return mlflow_server.url, name, result.version, result.run_id


@pytest.fixture(scope="module")
def frame() -> pd.DataFrame:
    typed, _ = load_dataset(REAL_CSV)
    return typed


def _bodies(df: pd.DataFrame) -> list[dict]:
    rows = df.loc[:, list(FEATURES)].astype("float64")
    return [{k: (None if pd.isna(v) else float(v)) for k, v in r.items()} for r in rows.to_dict("records")]


def _reference(tracking_uri: str, run_id: str, tmp_path) -> Reference:
    path = MlflowClient(tracking_uri).download_artifacts(run_id, REFERENCE_ARTIFACT, str(tmp_path))
    return Reference.from_dict(json.loads(Path(path).read_text()))


def _psi_by_hand(reference: Reference, values: np.ndarray) -> float:
    """PSI of utilisation (no missing bin, no codes) with pandas.cut on the reference's edges."""
    b = reference.bins[FEATURES.index(UTILISATION)]
    assert not b.has_missing and not b.codes
    live = pd.cut(pd.Series(values), [-np.inf, *b.edges, np.inf], right=True).value_counts(sort=False)
    ref = reference.counts[FEATURES.index(UTILISATION)]
    e = np.maximum(ref / ref.sum(), 1e-4)
    a = np.maximum(live.to_numpy() / live.sum(), 1e-4)
    return float(np.sum((a - e) * np.log(a / e)))


def _monitor(tracking_uri: str, name: str, experiment: str, *args: str) -> subprocess.CompletedProcess:
    env = {
        "OUTCOME_EXPERIMENT": experiment.replace("predictions-", "outcomes-"),
        "MLFLOW_WAIT_SECONDS": "3",
        "MLFLOW_TRACKING_URI": tracking_uri,
        "MODEL_NAME": name,
        "PREDICTION_EXPERIMENT": experiment,
        "MONITORING_EXPERIMENT": f"{experiment}-monitoring",
    }
    return subprocess.run(
        [sys.executable, "-m", "credit_risk.monitor", *args],
        env=server_env(env),
        capture_output=True,
        text=True,
        timeout=180,
    )


def _iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="milliseconds")


def test_trainer_logs_a_reference_of_the_training_split(trained, tmp_path):
    tracking_uri, _, _, run_id = trained
    reference = _reference(tracking_uri, run_id, tmp_path)
    run = MlflowClient(tracking_uri).get_run(run_id)
    assert reference.rows == int(run.data.params["train_rows"])
    income = reference.bins[FEATURES.index("MonthlyIncome")]
    assert income.has_missing and len(income.edges) == 9
    late = reference.bins[FEATURES.index("NumberOfTimes90DaysLate")]
    assert late.codes == (96.0, 98.0)
    assert len(reference.bins[-1].edges) == 9  # score deciles


def test_live_window_and_report_tell_own_rows_from_a_shifted_population(trained, frame, tmp_path):
    tracking_uri, name, version, run_id = trained
    reference = _reference(tracking_uri, run_id, tmp_path)
    experiment = f"predictions-{uuid.uuid4().hex[:8]}"
    env = {
        "MLFLOW_TRACKING_URI": tracking_uri,
        "MODEL_NAME": name,
        "PREDICTION_EXPERIMENT": experiment,
        "PREDICTION_LOG_SPOOL_DIR": str(tmp_path / "spool"),
        "PREDICTION_LOG_FLUSH_SECONDS": "0.2",
        "STABILITY_WINDOW": str(WINDOW),
    }
    api = start_api_process(env, tmp_path / "api.log")
    own = frame.sample(WINDOW, random_state=1)
    shifted = frame[frame[UTILISATION] > 0.9].sample(WINDOW, random_state=2)
    try:
        wait_until(lambda: httpx.get(f"{api.url}/health/ready").status_code == 200, 60, "the model")
        t0 = int(time.time() * 1000)
        for start in range(0, WINDOW, 500):
            r = httpx.post(f"{api.url}/predict/batch", json={"records": _bodies(own[start : start + 500])})
            assert r.status_code == 200
        stable = httpx.get(f"{api.url}/monitoring/stability").json()
        assert stable["model_version"] == version and stable["window_size"] == WINDOW
        assert stable["reference_rows"] == reference.rows
        bands = {k: v["band"] for k, v in stable["features"].items()} | {"score": stable["score"]["band"]}
        assert set(bands.values()) == {"stable"}, stable
        assert all(v["psi"] < 0.10 for v in [*stable["features"].values(), stable["score"]])
        income = stable["features"]["MonthlyIncome"]
        assert income["missing_share"] == pytest.approx(own["MonthlyIncome"].isna().mean())
        scrape = httpx.get(f"{api.url}/metrics").text
        assert f'credit_risk_psi{{feature="score",model_version="{version}"}}' in scrape
        assert f'credit_risk_psi{{feature="{UTILISATION}",model_version="{version}"}}' in scrape

        time.sleep(0.05)
        t_mid = int(time.time() * 1000)
        time.sleep(0.05)
        for body in _bodies(shifted[:200]):  # single rows too: /predict feeds the window as well
            assert httpx.post(f"{api.url}/predict", json=body).status_code == 200
        for start in range(200, WINDOW, 600):
            r = httpx.post(
                f"{api.url}/predict/batch", json={"records": _bodies(shifted[start : start + 600])}
            )
            assert r.status_code == 200
        live = httpx.get(f"{api.url}/monitoring/stability").json()
    finally:
        assert api.terminate_cleanly(), api.log()[-3000:]
    util = live["features"][UTILISATION]
    assert util["band"] == "act" and live["band"] == "act"
    # The window rolled: it holds only shifted rows now (the last 90-100% of WINDOW of them).
    assert 0.9 * WINDOW <= live["window_size"] <= WINDOW
    kept = shifted[UTILISATION].to_numpy()[-live["window_size"] :]
    assert util["psi"] == pytest.approx(_psi_by_hand(reference, kept), rel=1e-9)

    # Offline, on the logged chunks: the shifted period is `act` (exit 20), the first one stable.
    out = _monitor(tracking_uri, name, experiment, "--last", str(WINDOW))
    assert out.returncode == EXIT_ACT, out.stderr[-3000:]
    assert "chunks" in out.stderr  # the progress line
    out = _monitor(tracking_uri, name, experiment, "--since", _iso(t0), "--until", _iso(t_mid))
    assert out.returncode == EXIT_STABLE, out.stderr[-3000:]

    client = MlflowClient(tracking_uri)
    (first, second) = sorted(
        client.search_runs([client.get_experiment_by_name(f"{experiment}-monitoring").experiment_id]),
        key=lambda r: r.info.start_time,
    )
    assert first.data.tags["band"] == "act" and second.data.tags["band"] == "stable"
    assert first.data.metrics[f"psi.{UTILISATION}"] == pytest.approx(
        _psi_by_hand(reference, shifted[UTILISATION].to_numpy()), rel=1e-9
    )
    assert first.data.metrics["predictions"] == WINDOW
    artifacts = {f.path for f in client.list_artifacts(first.info.run_id)}
    assert {"summary.json", "report.md", "plots"} <= artifacts
    plots = {f.path for f in client.list_artifacts(first.info.run_id, "plots")}
    assert f"plots/psi_{UTILISATION}.png" in plots
    assert {f.path for f in client.list_artifacts(second.info.run_id)} == {"summary.json", "report.md"}


def test_monitor_exit_status_says_it_could_not_run(trained):
    tracking_uri, name, _, _ = trained
    out = _monitor(tracking_uri, name, f"never-logged-{uuid.uuid4().hex[:6]}")
    assert out.returncode == EXIT_CANNOT_RUN
    assert "nothing was logged" in out.stderr
    out = _monitor("http://127.0.0.1:9", name, "x", "--last", "10")
    assert out.returncode == EXIT_CANNOT_RUN


def test_report_gives_realized_auc_equal_to_scikit_learns_on_the_joined_labels(trained, frame, tmp_path):
    tracking_uri, name, _, _ = trained
    tag = uuid.uuid4().hex[:8]
    env = {
        "MLFLOW_TRACKING_URI": tracking_uri,
        "MODEL_NAME": name,
        "PREDICTION_EXPERIMENT": f"predictions-{tag}",
        "OUTCOME_EXPERIMENT": f"outcomes-{tag}",
        "PREDICTION_LOG_SPOOL_DIR": str(tmp_path / "spool"),
        "PREDICTION_LOG_FLUSH_SECONDS": "0.2",
    }
    rows = frame.sample(1000, random_state=3)
    api = start_api_process(env, tmp_path / "api.log")
    try:
        wait_until(lambda: httpx.get(f"{api.url}/health/ready").status_code == 200, 60, "the model")
        out = httpx.post(f"{api.url}/predict/batch", json={"records": _bodies(rows)}, timeout=60).json()
        ids = [p["prediction_id"] for p in out["predictions"]]
        probs = np.array([p["probability"] for p in out["predictions"]])
        labels = rows["SeriousDlqin2yrs"].to_numpy()
        posted = {
            "outcomes": [
                {"prediction_id": i, "defaulted": int(y)}
                for i, y in zip(ids[:600], labels[:600], strict=True)
            ]
        }
        r = httpx.post(f"{api.url}/outcomes", json=posted, timeout=60)
        assert r.status_code == 200 and r.json()["recorded"] == 600, r.text
    finally:
        assert api.terminate_cleanly(), api.log()[-3000:]
    # The rest from a CSV, with one id already posted: recorded once.
    csv = tmp_path / "outcomes.csv"
    lines = [f"{i},{int(y)}" for i, y in zip(ids[599:], labels[599:], strict=True)]
    csv.write_text("prediction_id,defaulted\n" + "\n".join(lines) + "\n")
    cli_env = {k: v for k, v in env.items() if not k.startswith("PREDICTION_LOG")}
    out = subprocess.run(
        [sys.executable, "-m", "credit_risk.monitor", "outcomes", "--csv", str(csv)],
        env=server_env(cli_env), capture_output=True, text=True, timeout=180,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-3000:]
    assert "400 outcomes recorded, 1 already recorded" in out.stderr

    out = _monitor(tracking_uri, name, f"predictions-{tag}", "--last", "1000")
    assert out.returncode == EXIT_STABLE, out.stderr[-3000:]
    client = MlflowClient(tracking_uri)
    (run,) = client.search_runs(
        [client.get_experiment_by_name(f"predictions-{tag}-monitoring").experiment_id]
    )
    path = client.download_artifacts(run.info.run_id, "summary.json", str(tmp_path))
    table = json.loads(Path(path).read_text())["performance"]
    overall = table[-1]
    assert overall["month"] == "all" and overall["labelled"] == 1000
    assert overall["auc"] == pytest.approx(roc_auc_score(labels, probs), rel=1e-12)
    assert overall["bad_rate"] == pytest.approx(labels.mean())
    assert overall["test_auc"] == pytest.approx(client.get_run(trained[3]).data.metrics["roc_auc"])
    assert run.data.metrics["realized_auc"] == pytest.approx(overall["auc"])
    report = client.download_artifacts(run.info.run_id, "report.md", str(tmp_path))
    assert "## Realized performance" in Path(report).read_text()
