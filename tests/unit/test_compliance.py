"""Monotone candidates and the monotonicity probe (issue 11)."""

from __future__ import annotations

import numpy as np
import pytest

from credit_risk.constraints import MODEL_FEATURES, MonotoneLogisticRegression, monotonic_cst
from credit_risk.features import FEATURES, TARGET
from credit_risk.training.candidates import CANDIDATES, split_dataset
from credit_risk.training.compliance import (
    AGE_STEPS,
    PAST_DUE_STEPS,
    check_compliance,
    check_monotonicity,
    probe_sample,
)
from support.data import synthetic_frame


def _split(seed: int = 3):
    return split_dataset(synthetic_frame(3000, seed=seed), 42)


def test_monotonic_cst_marks_the_three_past_due_counts_up_and_age_down():
    cst = dict(zip(MODEL_FEATURES, monotonic_cst(), strict=True))
    assert {f for f, c in cst.items() if c == 1} == {
        "NumberOfTime30_59DaysPastDueNotWorse",
        "NumberOfTimes90DaysLate",
        "NumberOfTime60_89DaysPastDueNotWorse",
    }
    assert {f for f, c in cst.items() if c == -1} == {"age"}


def test_probe_counts_steps_as_the_issue_measured_them():
    X = probe_sample(_split().X_test)
    report = check_monotonicity(lambda rows: np.zeros(len(rows)), X)
    assert report.rows == 200
    assert report.past_due_steps == 3 * 200 * (len(PAST_DUE_STEPS) - 1) == 3600
    assert report.age_steps == 200 * (len(AGE_STEPS) - 1) == 800
    assert report.passed


def test_probe_finds_a_model_whose_risk_falls_with_delinquency():
    X = probe_sample(_split().X_test)
    i = FEATURES.index("NumberOfTimes90DaysLate")
    report = check_monotonicity(lambda rows: 1 / (1 + rows[:, i]), X)
    assert report.past_due_violations == 200 * 6 and report.age_violations == 0
    assert not report.passed


@pytest.mark.parametrize("name", [c.name for c in CANDIDATES])
def test_each_candidate_passes_the_compliance_checks(name):
    split = _split()
    pipeline = next(c for c in CANDIDATES if c.name == name).build(42).fit(split.X_train, split.y_train)
    report, failures = check_compliance(pipeline, probe_sample(split.X_test))
    assert failures == [] and report.passed, report.summary()


def test_unconstrained_boosting_fails_the_compliance_checks():
    split = _split()
    pipeline = CANDIDATES[0].build(42).set_params(model__monotonic_cst=None).fit(split.X_train, split.y_train)
    report, failures = check_compliance(pipeline, probe_sample(split.X_test))
    assert not report.passed and failures[0].startswith("not monotone: ")


def test_monotone_logistic_regression_drops_a_wrong_signed_column():
    df = synthetic_frame(3000, seed=3)
    X = df[list(FEATURES)].fillna(0).to_numpy(dtype=np.float64).copy()
    i = FEATURES.index("NumberOfTime60_89DaysPastDueNotWorse")
    y = df[TARGET].to_numpy()
    # Make the 60-89 count look protective: more of it among the non-defaulters.
    X[:, i] = np.where(y == 0, np.random.default_rng(0).poisson(1.0, len(y)), 0)
    cst = [1 if f == FEATURES[i] else 0 for f in FEATURES]
    model = MonotoneLogisticRegression(monotonic_cst=cst, C=1.0, max_iter=1000).fit(X, y)
    assert model.coef_[0, i] == 0 and list(model.dropped_) == [i]
    free = MonotoneLogisticRegression(C=1.0, max_iter=1000).fit(X, y)
    assert free.coef_[0, i] < 0
    np.testing.assert_allclose(model.predict_proba(X)[:, 1], 1 / (1 + np.exp(-model.decision_function(X))))
