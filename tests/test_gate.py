"""The promotion gate's rules, and how it treats a Production version it cannot load."""

from __future__ import annotations

import pytest
from mlflow.tracking import MlflowClient
from sklearn.metrics import roc_auc_score

from conftest import synthetic_frame
from credit_risk.features import FEATURES, TARGET
from credit_risk.gate import Champion, decide, evaluate_champion
from credit_risk.model_io import log_model
from credit_risk.modeling import CANDIDATES
from registration import log_sklearn, register

NO_CHAMPION = Champion()


def test_gate_promotes_a_first_model_that_clears_the_minimum():
    decision = decide("auto", 0.80, 0.75, NO_CHAMPION)
    assert decision.promote and "no version in Production" in decision.reason


def test_gate_rejects_a_model_below_the_minimum_even_without_a_champion():
    decision = decide("auto", 0.74, 0.75, NO_CHAMPION)
    assert decision.decision == "rejected"
    assert decision.reason == "test AUC 0.7400 is below the minimum 0.7500"


def test_gate_rejects_a_challenger_worse_than_the_champion_on_the_same_split():
    decision = decide("auto", 0.80, 0.75, Champion("4", 0.81, "Production version 4"))
    assert decision.decision == "rejected"
    assert "below Production version 4's 0.8100" in decision.reason


def test_gate_promotes_a_challenger_as_good_as_the_champion():
    decision = decide("auto", 0.81, 0.75, Champion("4", 0.81, "Production version 4"))
    assert decision.promote and "Production version 4's 0.8100" in decision.reason


def test_gate_names_every_failed_condition():
    decision = decide("auto", 0.70, 0.75, Champion("2", 0.86, "Production version 2"))
    assert "below the minimum" in decision.reason and "below Production version 2's" in decision.reason


def test_promote_never_skips_even_an_excellent_model():
    decision = decide("never", 0.99, 0.75, NO_CHAMPION)
    assert decision.decision == "skipped" and not decision.promote


def test_promote_always_promotes_below_the_minimum_and_the_champion():
    decision = decide("always", 0.55, 0.75, Champion("3", 0.9, "Production version 3"))
    assert decision.promote and "always" in decision.reason


def test_gate_treats_no_production_version_as_no_champion(tracking_uri, model_name):
    frame = synthetic_frame(300, seed=2)
    champion = evaluate_champion(
        MlflowClient(tracking_uri), model_name, frame[list(FEATURES)].to_numpy(), frame[TARGET].to_numpy()
    )
    assert champion == NO_CHAMPION


@pytest.fixture
def fitted():
    frame = synthetic_frame(1000, seed=3)
    X, y = frame[list(FEATURES)].to_numpy(), frame[TARGET].to_numpy()
    return CANDIDATES[1].build(0).fit(X, y), frame


def test_gate_scores_a_loadable_champion_on_the_given_rows(tracking_uri, model_name, fitted, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", tracking_uri)
    pipeline, frame = fitted
    version = register(
        tracking_uri, model_name, lambda: log_model(pipeline, frame.head(5), 0.3, "sha"), production=True
    )
    X, y = frame[list(FEATURES)].to_numpy(), frame[TARGET].to_numpy()
    champion = evaluate_champion(MlflowClient(tracking_uri), model_name, X[:200], y[:200])
    assert champion.version == version
    assert champion.roc_auc == pytest.approx(roc_auc_score(y[:200], pipeline.predict_proba(X[:200])[:, 1]))


def test_gate_treats_an_unloadable_champion_as_none_and_says_why(
    tracking_uri, model_name, fitted, monkeypatch
):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", tracking_uri)
    pipeline, frame = fitted

    pickled = lambda: log_sklearn(pipeline, frame.head(5), serialization_format="cloudpickle")  # noqa: E731
    version = register(tracking_uri, model_name, pickled, production=True)
    X, y = frame[list(FEATURES)].to_numpy(), frame[TARGET].to_numpy()
    champion = evaluate_champion(MlflowClient(tracking_uri), model_name, X, y)
    assert champion.version == version and champion.roc_auc is None
    assert f"Production version {version} cannot be loaded" in champion.note and "skops" in champion.note
    decision = decide("auto", 0.8, 0.75, champion)
    assert decision.promote and "cannot be loaded" in decision.reason
