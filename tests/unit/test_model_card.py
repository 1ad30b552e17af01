"""The model card (issue 11): its figures and its sections."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from credit_risk.reasons import REASON_CODES
from credit_risk.training.compliance import MonotonicityReport
from credit_risk.training.model_card import (
    MAX_DESCRIPTION_CHARS,
    CardInputs,
    bootstrap_intervals,
    build,
    description,
    expected_calibration_error,
)


def _scores(n: int = 4000, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    proba = rng.beta(1, 12, n)
    return (rng.random(n) < proba).astype(int), proba


def test_bootstrap_interval_brackets_the_point_estimate():
    y, proba = _scores()
    low, high = bootstrap_intervals(y, proba)["roc_auc"]
    assert low < roc_auc_score(y, proba) < high and high - low < 0.1


def test_expected_calibration_error_is_small_when_calibrated_and_large_when_not():
    y, proba = _scores()
    assert expected_calibration_error(y, proba) < 0.01
    assert expected_calibration_error(y, np.clip(proba * 3, 0, 1)) > 0.1


def _inputs() -> CardInputs:
    y, proba = _scores()
    report = MonotonicityReport(200, 3600, 0, 800, 0, 0.0)
    metrics = {"roc_auc": 0.866, "ks": 0.58, "brier": 0.049, "precision": 0.4, "recall": 0.5}
    return CardInputs(
        "credit-risk-model", "7", "abc123", "hist_gradient_boosting",
        {"hist_gradient_boosting": 0.865, "logistic_regression": 0.85}, 0.2312, metrics, y, proba,
        "f58ea347" * 8, 150_000, 0.0668, ["609 duplicate rows"], report, [], "promoted", "test AUC ok",
    )  # fmt: skip


def test_card_states_use_data_metrics_compliance_reasons_and_limitations():
    card = build(_inputs())
    for needle in (
        "# credit-risk-model version 7: hist_gradient_boosting",
        "**Intended use.**",
        "decline\n(`prediction` 1) when the probability is >= **0.2312**",
        "SHA256 `f58ea347",
        "150,000 rows, target rate 0.0668",
        "609 duplicate rows",
        "hist_gradient_boosting 0.8650, logistic_regression 0.8500",
        "| AUC | 0.8660 |",
        "Expected calibration error",
        "in 0 of 3600 steps",
        "Known limitations",
        "96/98",
    ):
        assert needle in card, needle
    for r in REASON_CODES:
        assert f"| {r.code} | {r.feature} | {r.text} |" in card


def test_card_fits_the_registry_description_and_a_long_one_is_cut_at_a_section():
    card = build(_inputs())
    assert len(card) <= MAX_DESCRIPTION_CHARS and description(card, "abc123") == card
    long = card + "\n\n" + "x" * MAX_DESCRIPTION_CHARS
    cut = description(long, "abc123")
    assert len(cut) <= MAX_DESCRIPTION_CHARS and cut.endswith("on run `abc123`.)")
    assert cut.startswith(card.rstrip()[:1000])


@pytest.mark.parametrize("bad", [np.zeros(50), np.ones(50)])
def test_bootstrap_skips_resamples_with_one_class(bad):
    y = np.concatenate([bad, [1 - bad[0]]]).astype(int)
    proba = np.linspace(0, 1, len(y))
    assert set(bootstrap_intervals(y, proba, resamples=50)) == {"roc_auc", "ks", "brier"}
