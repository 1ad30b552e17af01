"""The one-row fast path must give scikit-learn's probabilities bit for bit, or not be used."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline

from credit_risk.api import fast_forest
from credit_risk.api.fast_forest import FlatForest, make_scorer, probe_rows
from credit_risk.features import FEATURES, TARGET, CreditFeatures
from credit_risk.model_io import LoadedModel
from support.api import fitted_pipeline
from support.data import synthetic_frame


def _loaded(pipeline) -> LoadedModel:
    return LoadedModel("m", "1", "run", pipeline, 0.3, "hash")


@pytest.fixture(scope="module")
def deep_pipeline():
    """More and deeper trees than the test models, trained with missing values present."""
    df = synthetic_frame(4000, seed=2)
    X = df.loc[:, list(FEATURES)].to_numpy(dtype=np.float64)
    model = HistGradientBoostingClassifier(max_iter=150, max_leaf_nodes=31, random_state=0)
    return make_pipeline(CreditFeatures(), model).fit(X, df[TARGET].to_numpy())


@pytest.mark.parametrize("rows_per_call", [1, 7, fast_forest.MAX_FAST_ROWS])
def test_fast_path_is_bit_identical_to_scikit_learn(deep_pipeline, rows_per_call):
    X = probe_rows(700, seed=11)
    X[::9, FEATURES.index("NumberOfTimes90DaysLate")] = 96  # the other reporting code
    forest = FlatForest(deep_pipeline)
    step = rows_per_call
    got = np.concatenate([forest.predict_proba(X[i : i + step]) for i in range(0, len(X), step)])
    assert np.array_equal(got, deep_pipeline.predict_proba(X)[:, 1])


@pytest.mark.parametrize(
    ("rows", "scorer"),
    [
        (1, "flat-forest"),
        (fast_forest.MAX_FAST_ROWS, "flat-forest"),
        (fast_forest.MAX_FAST_ROWS + 1, "scikit-learn"),
        (200, "scikit-learn"),
    ],
)
def test_scorer_uses_the_fast_path_for_small_inputs_and_scikit_learn_for_batches(
    deep_pipeline, monkeypatch, rows, scorer
):
    score, kind = make_scorer(_loaded(deep_pipeline))
    assert kind == "flat-forest"
    # The outputs are identical either way: watch which one is called.
    calls: list[str] = []
    fast, exact = FlatForest.predict_proba, LoadedModel.predict_proba
    monkeypatch.setattr(
        FlatForest, "predict_proba", lambda self, X: calls.append("flat-forest") or fast(self, X)
    )
    monkeypatch.setattr(
        LoadedModel, "predict_proba", lambda self, X: calls.append("scikit-learn") or exact(self, X)
    )
    X = probe_rows(rows, seed=12)
    assert np.array_equal(score(X), deep_pipeline.predict_proba(X)[:, 1])
    assert calls == [scorer]


@pytest.mark.filterwarnings(
    "ignore::sklearn.exceptions.ConvergenceWarning"
)  # fit quality is beside the point
def test_scorer_keeps_scikit_learn_for_other_model_families():
    df = synthetic_frame(1000, seed=3)
    X = df.loc[:, list(FEATURES)].to_numpy(dtype=np.float64)
    linear = make_pipeline(CreditFeatures(), SimpleImputer(), LogisticRegression(max_iter=500))
    linear.fit(X, df[TARGET].to_numpy())
    _, kind = make_scorer(_loaded(linear))
    assert kind == "scikit-learn"


def test_scorer_refuses_a_fast_path_that_disagrees(monkeypatch):
    pipeline, _ = fitted_pipeline(0)
    exact = FlatForest.predict_proba
    monkeypatch.setattr(FlatForest, "predict_proba", lambda self, X: exact(self, X) + 1e-15)
    _, kind = make_scorer(_loaded(pipeline))
    assert kind == "scikit-learn"
