"""The promotion gate against a real registry: scoring the Production version, or one it cannot load."""

from __future__ import annotations

import pytest
from mlflow.tracking import MlflowClient
from sklearn.metrics import roc_auc_score

from credit_risk.features import FEATURES, TARGET
from credit_risk.model_io import log_model
from credit_risk.training.candidates import CANDIDATES
from credit_risk.training.gate import Champion, decide, evaluate_champion
from support.data import synthetic_frame
from support.registration import log_sklearn, register

NO_CHAMPION = Champion()


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
