"""The promotion gate's compliance checks (issue 11) through the real trainer and a real `mlflow server`."""

from __future__ import annotations

import json

from mlflow.tracking import MlflowClient

from credit_risk.training import pipeline as train_module
from credit_risk.training.candidates import CANDIDATES, Candidate
from support.data import synthetic_frame, write_kaggle_csv


def _unconstrained_hgb() -> Candidate:
    hgb = next(c for c in CANDIDATES if c.name == "hist_gradient_boosting")
    return Candidate("unconstrained_hgb", hgb.make, {**hgb.params, "monotonic_cst": None})


def test_gate_refuses_a_non_monotone_model_with_the_reason_in_its_tags(
    run_training, model_name, tracking_uri, tmp_path, monkeypatch
):
    monkeypatch.setattr(train_module, "CANDIDATES", (_unconstrained_hgb(),))
    csv = write_kaggle_csv(synthetic_frame(3000, seed=3), tmp_path / "cs-training.csv")
    result = run_training(csv, model_name, min_auc=0.5)
    client = MlflowClient(tracking_uri)
    mv = client.get_model_version(model_name, result.version)
    assert result.decision.decision == "rejected" and mv.current_stage == "None"
    assert mv.tags["promotion_decision"] == "rejected"
    reason = mv.tags["promotion_reason"]
    assert reason.startswith("not monotone: raising a past-due count (0 to 6) lowered the probability in ")
    run = client.get_run(result.run_id)
    assert run.data.tags["monotonicity"] == "failed"
    client.download_artifacts(result.run_id, "compliance.json", str(tmp_path))
    report = json.loads((tmp_path / "compliance.json").read_text())
    assert report["passed"] is False
    assert report["past_due_violations"] + report["age_violations"] > 0
    assert f"{report['past_due_violations']} of {report['past_due_steps']} steps" in reason
    assert client.get_registered_model(model_name).latest_versions[0].current_stage == "None"


def test_gate_promotes_the_monotone_candidates_and_records_the_check(
    run_training, model_name, tracking_uri, tmp_path
):
    csv = write_kaggle_csv(synthetic_frame(3000, seed=3), tmp_path / "cs-training.csv")
    result = run_training(csv, model_name, min_auc=0.5)
    assert result.decision.decision == "promoted", result.decision.reason
    client = MlflowClient(tracking_uri)
    run = client.get_run(result.run_id)
    assert run.data.tags["monotonicity"] == "passed"
    # The model card: logged on the run and shown as the version's description.
    client.download_artifacts(result.run_id, "model_card.md", str(tmp_path))
    card = (tmp_path / "model_card.md").read_text()
    assert client.get_model_version(model_name, result.version).description == card
    assert f"# {model_name} version {result.version}: {result.model}" in card
    assert "Compliance checks** (passed)" in card and "Gate: promoted" in card


def test_promote_always_still_records_a_failed_compliance_check(
    run_training, model_name, tracking_uri, tmp_path, monkeypatch
):
    monkeypatch.setattr(train_module, "CANDIDATES", (_unconstrained_hgb(),))
    csv = write_kaggle_csv(synthetic_frame(3000, seed=3), tmp_path / "cs-training.csv")
    result = run_training(csv, model_name, promote="always")
    mv = MlflowClient(tracking_uri).get_model_version(model_name, result.version)
    assert mv.current_stage == "Production"
    assert "compliance checks failed: not monotone" in mv.tags["promotion_reason"]
