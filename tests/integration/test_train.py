"""The trainer end to end against a real `mlflow server`: run contents, registry, gate, failures."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pytest
from mlflow.tracking import MlflowClient
from sklearn.metrics import roc_auc_score

from credit_risk.devtools.tracking_server import free_port, server_env, start_tracking_server
from credit_risk.features import FEATURES, TARGET
from credit_risk.model_io import load_model_version
from credit_risk.registry import PRODUCTION_ALIAS
from credit_risk.training.candidates import CANDIDATES, split_dataset
from credit_risk.training.cli import EXIT_BAD_DATA, EXIT_NO_SERVER, EXIT_OK
from credit_risk.training.data import load_dataset
from support.data import synthetic_frame, write_kaggle_csv

pytestmark = pytest.mark.integration

TEST_METRICS = ("roc_auc", "gini", "ks", "precision", "recall", "f1", "accuracy", "brier", "log_loss")
STAGES = ("load and validate", "fingerprint", "connect", "candidates", "evaluate", "log model", "register")
PLOTS = ("roc_curve.png", "precision_recall_curve.png", "calibration_curve.png", "feature_importance.png")


def run_cli(csv: Path, tracking_uri: str, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    """`python -m credit_risk.train` as the Dockerfile runs it."""
    return subprocess.run(
        [sys.executable, "-m", "credit_risk.train", "--csv", str(csv), *args],
        env=server_env({"MLFLOW_TRACKING_URI": tracking_uri}),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def stage_of(client: MlflowClient, name: str, version: str) -> str:
    return client.get_model_version(name, version).current_stage


def alias_version(client: MlflowClient, name: str) -> str:
    return client.get_model_version_by_alias(name, PRODUCTION_ALIAS).version


# --- one CLI run, inspected from every side ------------------------------------------------


@pytest.fixture(scope="module")
def cli_run(mlflow_server, tmp_path_factory):
    """One `python -m credit_risk.train` run on synthetic data, shared by the checks below."""
    csv = write_kaggle_csv(synthetic_frame(3000, seed=3), tmp_path_factory.mktemp("cli") / "cs-training.csv")
    name = "credit-risk-cli-run"
    proc = run_cli(
        csv, mlflow_server.url, "--experiment", name, "--model-name", name, "--seed", "7", "--min-auc", "0.6"
    )
    assert proc.returncode == EXIT_OK, proc.stderr[-3000:]
    client = MlflowClient(mlflow_server.url)
    (mv,) = client.search_model_versions(f"name='{name}'")
    return {
        "proc": proc,
        "csv": csv,
        "client": client,
        "name": name,
        "mv": mv,
        "run": client.get_run(mv.run_id),
    }


def test_cli_logs_each_stage_with_its_duration(cli_run):
    stderr = cli_run["proc"].stderr
    for name in (*STAGES, "promotion gate"):
        assert any(f"stage {name}" in line and line.rstrip().endswith("s") for line in stderr.splitlines()), (
            name
        )
    assert f"run {cli_run['run'].info.run_id}" in stderr and "version 1 promoted" in stderr


def test_run_params_fingerprint_the_exact_file(cli_run):
    params = cli_run["run"].data.params
    csv = cli_run["csv"]
    frame = synthetic_frame(3000, seed=3)
    assert params["dataset_hash"] == hashlib.sha256(csv.read_bytes()).hexdigest()
    assert int(params["dataset_rows"]) == len(frame)
    assert float(params["target_rate"]) == pytest.approx(frame[TARGET].mean())
    assert params["seed"] == "7"
    assert params["model"] in {c.name for c in CANDIDATES}
    chosen = next(c for c in CANDIDATES if c.name == params["model"])
    assert {f"model.{k}" for k in chosen.params} <= set(params)


def test_run_metrics_are_the_models_scores_on_the_test_split(cli_run):
    metrics = cli_run["run"].data.metrics
    for name in TEST_METRICS:
        assert name in metrics and f"val_{name}" in metrics, name
    assert metrics["gini"] == pytest.approx(2 * metrics["roc_auc"] - 1)
    assert 0 < metrics["decision_threshold"] < 1
    # Recompute from the registered model and the same seeded split: the logged AUC is the test AUC.
    typed, _ = load_dataset(cli_run["csv"])
    split = split_dataset(typed, seed=7)
    model = load_model_version(cli_run["client"], cli_run["name"], cli_run["mv"].version)
    proba = model.predict_proba(split.X_test)
    assert metrics["roc_auc"] == pytest.approx(roc_auc_score(split.y_test, proba))
    assert metrics["recall"] == pytest.approx(np.mean(proba[split.y_test == 1] >= model.threshold))
    assert model.threshold == pytest.approx(metrics["decision_threshold"])


def test_run_artifacts_hold_report_plots_and_model(cli_run, tmp_path):
    client, run_id = cli_run["client"], cli_run["run"].info.run_id
    files = {a.path for a in client.list_artifacts(run_id)} | {
        a.path for a in client.list_artifacts(run_id, "plots")
    }
    assert {"validation_report.json", "feature_importance.json"} <= files
    for plot in PLOTS:
        local = Path(client.download_artifacts(run_id, f"plots/{plot}", str(tmp_path)))
        assert local.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", plot
    report = json.loads(
        Path(client.download_artifacts(run_id, "validation_report.json", str(tmp_path))).read_text()
    )
    assert report["ok"] and report["rows"] == 3000
    assert any(w["column"] == "MonthlyIncome" for w in report["warnings"])


def test_run_records_the_dataset_as_an_input(cli_run):
    (dataset_input,) = cli_run["run"].inputs.dataset_inputs
    assert dataset_input.dataset.name == "cs-training"
    assert dataset_input.dataset.source and str(cli_run["csv"].name) in dataset_input.dataset.source
    tags = {t.key: t.value for t in dataset_input.tags}
    assert tags["dataset_hash"] == cli_run["run"].data.params["dataset_hash"]


def test_each_candidate_is_a_nested_run(cli_run):
    client, run = cli_run["client"], cli_run["run"]
    children = client.search_runs(
        [run.info.experiment_id], filter_string=f"tags.mlflow.parentRunId = '{run.info.run_id}'"
    )
    assert {c.info.run_name for c in children} == {c.name for c in CANDIDATES}
    best = max(children, key=lambda c: c.data.metrics["val_roc_auc"])
    assert best.info.run_name == run.data.params["model"]


def test_first_version_is_registered_in_production_with_its_lineage(cli_run):
    client, name, mv, run = cli_run["client"], cli_run["name"], cli_run["mv"], cli_run["run"]
    assert mv.current_stage == "Production"
    assert alias_version(client, name) == mv.version
    assert mv.tags["dataset_hash"] == run.data.params["dataset_hash"]
    assert float(mv.tags["decision_threshold"]) == pytest.approx(run.data.metrics["decision_threshold"])
    assert mv.tags["promotion_decision"] == run.data.tags["promotion_decision"] == "promoted"
    assert "no version in Production" in mv.tags["promotion_reason"]
    model = load_model_version(client, name, mv.version)
    assert model.dataset_hash == mv.tags["dataset_hash"]


# --- the promotion gate across several versions --------------------------------------------


def test_gate_promotes_a_better_model_and_rejects_a_worse_one(
    run_training, model_name, tmp_path, tracking_uri
):
    client = MlflowClient(tracking_uri)
    useless = write_kaggle_csv(synthetic_frame(3000, seed=11, signal=0.0), tmp_path / "useless.csv")
    good = write_kaggle_csv(synthetic_frame(3000, seed=12), tmp_path / "good.csv")
    small = write_kaggle_csv(synthetic_frame(400, seed=18), tmp_path / "small.csv")

    v1 = run_training(useless, model_name, promote="always")
    assert stage_of(client, model_name, v1.version) == "Production"

    v2 = run_training(good, model_name, min_auc=0.6)
    assert v2.decision.decision == "promoted", v2.decision.reason
    assert stage_of(client, model_name, v2.version) == "Production"
    assert stage_of(client, model_name, v1.version) == "Archived"
    assert alias_version(client, model_name) == v2.version
    champion_auc = client.get_run(v2.run_id).data.metrics["champion_roc_auc"]
    assert champion_auc <= v2.metrics["roc_auc"]

    # Trained on 240 rows, v3 ranks its own test rows worse than v2 (trained on 1,800) does.
    v3 = run_training(small, model_name, min_auc=0.0)
    run = client.get_run(v3.run_id)
    # The champion's score is recomputed here, not taken from the trainer: same split, same rows.
    split = split_dataset(load_dataset(small)[0], seed=42)
    champion = load_model_version(client, model_name, v2.version).predict_proba(split.X_test)
    assert run.data.metrics["champion_roc_auc"] == pytest.approx(roc_auc_score(split.y_test, champion))
    assert run.data.metrics["champion_roc_auc"] > v3.metrics["roc_auc"]
    assert v3.decision.decision == "rejected"
    mv3 = client.get_model_version(model_name, v3.version)
    assert mv3.current_stage == "None"
    assert mv3.tags["promotion_decision"] == run.data.tags["promotion_decision"] == "rejected"
    assert f"Production version {v2.version}" in mv3.tags["promotion_reason"]
    assert stage_of(client, model_name, v2.version) == "Production"
    assert alias_version(client, model_name) == v2.version


def test_gate_rejects_a_model_below_the_minimum_auc(run_training, model_name, tmp_path, tracking_uri):
    csv = write_kaggle_csv(synthetic_frame(2000, seed=21), tmp_path / "f.csv")
    result = run_training(csv, model_name, min_auc=0.99)
    mv = MlflowClient(tracking_uri).get_model_version(model_name, result.version)
    assert result.metrics["roc_auc"] < 0.99
    assert mv.current_stage == "None" and mv.tags["promotion_decision"] == "rejected"
    assert "below the minimum 0.9900" in mv.tags["promotion_reason"]


def test_promote_never_registers_without_promoting(run_training, model_name, tmp_path, tracking_uri):
    csv = write_kaggle_csv(synthetic_frame(2000, seed=22), tmp_path / "f.csv")
    result = run_training(csv, model_name, promote="never")
    client = MlflowClient(tracking_uri)
    mv = client.get_model_version(model_name, result.version)
    assert mv.current_stage == "None" and mv.tags["promotion_decision"] == "skipped"
    assert not client.get_registered_model(model_name).aliases


# --- reproducibility ------------------------------------------------------------------------


def test_same_file_and_seed_give_identical_metrics_and_predictions(
    run_training, model_name, tmp_path, tracking_uri
):
    csv = write_kaggle_csv(synthetic_frame(3000, seed=31), tmp_path / "f.csv")
    first = run_training(csv, model_name, seed=5, promote="never")
    second = run_training(csv, model_name, seed=5, promote="never")
    other_seed = run_training(csv, model_name, seed=6, promote="never")
    client = MlflowClient(tracking_uri)
    m1, m2 = (client.get_run(r.run_id).data.metrics for r in (first, second))
    assert m1 == m2 and first.threshold == second.threshold
    X = synthetic_frame(3000, seed=31)[list(FEATURES)].to_numpy()
    p1, p2 = (load_model_version(client, model_name, r.version).predict_proba(X) for r in (first, second))
    np.testing.assert_array_equal(p1, p2)
    # The seed matters: another seed draws another split, so the scores move.
    assert other_seed.metrics != first.metrics


# --- failures ---------------------------------------------------------------------------------


def test_bad_csv_exits_2_names_each_problem_and_creates_no_version(tracking_uri, model_name, tmp_path):
    df = synthetic_frame(500, seed=41)
    df.loc[[10, 11], "MonthlyIncome"] = -100.0
    df.loc[[20], "age"] = 130.0
    csv = write_kaggle_csv(df, tmp_path / "bad.csv")
    proc = run_cli(csv, tracking_uri, "--model-name", model_name, "--experiment", model_name)
    assert proc.returncode == EXIT_BAD_DATA
    assert "MonthlyIncome: 2 row(s): negative value (e.g. line 12)" in proc.stderr
    assert "age: 1 row(s): age outside 0-120 (e.g. line 22)" in proc.stderr
    assert "Traceback" not in proc.stderr
    client = MlflowClient(tracking_uri)
    assert client.search_model_versions(f"name='{model_name}'") == []
    assert client.get_experiment_by_name(model_name) is None  # validation comes before any run


def test_unreachable_server_exits_3_after_a_bounded_wait(tmp_path):
    csv = write_kaggle_csv(synthetic_frame(500, seed=42), tmp_path / "f.csv")
    dead = f"http://127.0.0.1:{free_port()}"
    start = time.monotonic()
    proc = run_cli(csv, dead, "--wait-seconds", "3", timeout=60)
    elapsed = time.monotonic() - start
    assert proc.returncode == EXIT_NO_SERVER
    assert f"MLflow tracking server at {dead} is not reachable after 3s" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert elapsed < 30, f"took {elapsed:.0f}s"


def test_server_lost_mid_run_exits_3_with_one_line_and_no_traceback(tmp_path):
    root = tmp_path / "mlflow"
    server = start_tracking_server(
        f"sqlite:///{root / 'mlflow.db'}", str(root / "artifacts"), root / "server.log"
    )
    csv = write_kaggle_csv(synthetic_frame(2000, seed=44), tmp_path / "f.csv")
    proc = subprocess.Popen(
        [sys.executable, "-m", "credit_risk.train", "--csv", str(csv)],
        env=server_env({"MLFLOW_TRACKING_URI": server.url}),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    lines, lost_at = [], None
    try:
        for line in proc.stderr:
            lines.append(line)
            if "stage log inputs" in line:
                server.stop()  # the candidates' nested runs are next: they meet a dead server
                lost_at = time.monotonic()
        proc.wait(timeout=60)
    finally:
        server.stop()
        proc.kill()
    stderr = "".join(lines)
    assert proc.returncode == EXIT_NO_SERVER, stderr[-3000:]
    assert f"the MLflow tracking server at {server.url} stopped answering during training" in stderr
    assert "Traceback" not in stderr
    assert lost_at is not None
    assert time.monotonic() - lost_at < 45  # MLflow's retries are cut to seconds, not minutes


def test_empty_tracking_uri_exits_3_instead_of_logging_to_a_local_file(tmp_path):
    # An empty MLFLOW_TRACKING_URI would make MLflow fall back to ./mlflow.db without a word.
    csv = write_kaggle_csv(synthetic_frame(200, seed=43), tmp_path / "f.csv")
    proc = subprocess.run(
        [sys.executable, "-m", "credit_risk.train", "--csv", str(csv)],
        env=server_env({"MLFLOW_TRACKING_URI": ""}),
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == EXIT_NO_SERVER
    assert "MLFLOW_TRACKING_URI is not set or empty" in proc.stderr and "Traceback" not in proc.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f.csv"]


# --- the real file ----------------------------------------------------------------------------


@pytest.mark.realdata
def test_real_data_reaches_test_auc_085(run_training, real_csv, model_name):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = run_training(real_csv, model_name, promote="never")
    assert result.metrics["roc_auc"] >= 0.85, result.metrics
