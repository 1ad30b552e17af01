"""The test metrics: the names the API shows are the ones the trainer computes, and KS is right."""

from __future__ import annotations

import numpy as np

from credit_risk.model_io import TEST_METRICS
from credit_risk.training.evaluation import classification_metrics, ks_statistic


def test_trainer_computes_exactly_the_metrics_the_api_shows():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 500)
    proba = np.clip(0.3 * y + rng.random(500) * 0.7, 0, 1)
    assert tuple(classification_metrics(y, proba, 0.5)) == TEST_METRICS


def test_ks_is_the_largest_gap_between_the_two_score_distributions():
    rng = np.random.default_rng(1)
    y = rng.integers(0, 2, 2000)
    proba = rng.beta(2 + 2 * y, 5 - 2 * y)
    cuts = np.unique(proba)
    bad = np.searchsorted(np.sort(proba[y == 1]), cuts, side="right") / (y == 1).sum()
    good = np.searchsorted(np.sort(proba[y == 0]), cuts, side="right") / (y == 0).sum()
    assert np.isclose(ks_statistic(y, proba), np.max(good - bad), rtol=0, atol=1e-12)
