"""Reason codes (issue 11): exact contributions, folding into the applicant's fields, the age rule."""

from __future__ import annotations

import functools

import numpy as np
import pytest
import shap

from credit_risk.features import FEATURES, TARGET
from credit_risk.reasons import (
    ELDERLY_AGE,
    MODEL_FEATURES,
    REASON_CODES,
    LinearContributions,
    TreeShap,
    fold,
    make_explainer,
    reason_table,
    reasons_for,
    top_reasons,
)
from credit_risk.training.candidates import CANDIDATES
from credit_risk.training.compliance import monotonic_cst
from credit_risk.training.data import load_dataset
from support.data import REAL_CSV, synthetic_frame

_CODE = {r.code: i for i, r in enumerate(REASON_CODES)}


@functools.cache
def _real() -> tuple[np.ndarray, np.ndarray]:
    typed, _ = load_dataset(REAL_CSV)
    return typed[list(FEATURES)].to_numpy(dtype=np.float64), typed[TARGET].to_numpy()


@functools.cache
def _fitted(name: str, rows: int = 40_000):
    """A candidate as the trainer builds it (monotone HGB), fitted on real rows."""
    X, y = _real()
    pipeline = next(c for c in CANDIDATES if c.name == name).build(42)
    if name == "hist_gradient_boosting":
        pipeline.set_params(model__monotonic_cst=monotonic_cst())
    return pipeline.fit(X[:rows], y[:rows])


@pytest.fixture
def real_rows(real_csv) -> np.ndarray:
    """Held-out real rows, with every kind of row the data has: missing income, 96/98 codes."""
    X, _ = _real()
    held_out = X[100_000:]
    coded = np.flatnonzero(held_out[:, FEATURES.index("NumberOfTimes90DaysLate")] >= 96)[:50]
    return np.concatenate([held_out[:3000], held_out[coded]])


@pytest.mark.realdata
def test_tree_shap_equals_shap_library_on_real_rows(real_rows):
    pipeline = _fitted("hist_gradient_boosting")
    explainer = make_explainer(pipeline)  # what the API uses
    assert isinstance(explainer, TreeShap)
    ours = explainer.contributions(real_rows)
    hgb_input = pipeline[:-1].transform(real_rows)
    library = shap.TreeExplainer(pipeline[-1], feature_perturbation="tree_path_dependent")
    theirs = library.shap_values(hgb_input)
    assert np.isnan(hgb_input).any(), "the rows must exercise the missing-value paths"
    np.testing.assert_allclose(ours, theirs, rtol=0, atol=1e-12)
    assert explainer.base == pytest.approx(float(np.ravel(library.expected_value)[0]), abs=1e-12)


@pytest.mark.realdata
@pytest.mark.parametrize("rows", [1, 7, 3050], ids=["one-row", "few-rows", "many-rows"])
def test_tree_shap_is_locally_accurate_on_real_rows(real_rows, rows):
    pipeline = _fitted("hist_gradient_boosting")
    explainer = make_explainer(
        pipeline
    )  # the API's explainer (missing cells only where CreditFeatures has them)
    X = real_rows[:rows]
    contributions = explainer.contributions(X)
    raw = pipeline[-1].decision_function(pipeline[:-1].transform(X))
    np.testing.assert_allclose(explainer.base + contributions.sum(axis=1), raw, rtol=0, atol=1e-9)
    folded = fold(X, contributions)
    np.testing.assert_allclose(explainer.base + folded.sum(axis=1), raw, rtol=0, atol=1e-9)


@pytest.mark.realdata
def test_logistic_contributions_are_coefficient_times_transformed_value(real_rows):
    pipeline = _fitted("logistic_regression")
    explainer = make_explainer(pipeline)
    assert isinstance(explainer, LinearContributions)
    contributions = explainer.contributions(real_rows)
    transformed = pipeline[:-1].transform(real_rows)
    np.testing.assert_array_equal(contributions, transformed * pipeline[-1].coef_.ravel())
    raw = pipeline.decision_function(real_rows)
    np.testing.assert_allclose(explainer.base + contributions.sum(axis=1), raw, rtol=0, atol=1e-9)


def test_engineered_flags_fold_into_their_source_field():
    X = synthetic_frame(4, seed=3).loc[:, list(FEATURES)].to_numpy(dtype=np.float64).copy()
    X[0, FEATURES.index("MonthlyIncome")] = np.nan
    X[1, FEATURES.index("MonthlyIncome")] = 5000.0
    X[2, [FEATURES.index(c) for c in ("NumberOfTimes90DaysLate", "NumberOfTime60_89DaysPastDueNotWorse")]] = (
        98
    )
    X[3, FEATURES.index("NumberOfDependents")] = np.nan
    contributions = np.arange(1, 14, dtype=np.float64)[None, :].repeat(4, axis=0)
    c = dict(zip(MODEL_FEATURES, contributions[0], strict=True))
    folded = fold(X, contributions)
    np.testing.assert_allclose(folded.sum(axis=1), contributions.sum(axis=1))
    # A missing income is "Income not reported", carrying the income column and its flag.
    assert folded[0, _CODE["R07"]] == c["MonthlyIncome"] + c["income_missing"]
    assert folded[0, _CODE["R06"]] == 0
    assert folded[1, _CODE["R06"]] == c["MonthlyIncome"] + c["income_missing"]
    # Two coded counts share the 96/98 flag; the uncoded one keeps its own code.
    coded = c["NumberOfTimes90DaysLate"] + c["NumberOfTime60_89DaysPastDueNotWorse"] + c["past_due_code_flag"]
    assert folded[2, _CODE["R13"]] == pytest.approx(coded)
    assert folded[2, _CODE["R04"]] == c["NumberOfTime30_59DaysPastDueNotWorse"]
    assert folded[3, _CODE["R11"]] == c["NumberOfDependents"] + c["dependents_missing"]


def test_reasons_only_raise_risk_largest_first_at_most_four():
    X = synthetic_frame(1, seed=4).loc[:, list(FEATURES)].to_numpy(dtype=np.float64).copy()
    X[0, FEATURES.index("age")] = 40
    by_code = np.zeros((1, len(REASON_CODES)))
    by_code[0, [_CODE["R05"], _CODE["R02"], _CODE["R01"], _CODE["R08"], _CODE["R09"], _CODE["R03"]]] = (
        0.2,
        0.9,
        0.5,
        0.1,
        0.05,
        -0.3,
    )
    (reasons,) = top_reasons(X, by_code)
    assert [r["code"] for r in reasons] == ["R02", "R01", "R05", "R08"]
    assert reasons[0]["text"] == "Too many payments 90 or more days past due"
    assert reasons[0]["value"] == X[0, FEATURES.index("NumberOfTimes90DaysLate")]
    by_code[0] = -np.abs(by_code[0])
    assert top_reasons(X, by_code) == [[]]


def test_age_is_never_a_reason_at_62_or_older():
    X = synthetic_frame(2, seed=5).loc[:, list(FEATURES)].to_numpy(dtype=np.float64).copy()
    X[:, FEATURES.index("age")] = [ELDERLY_AGE - 1, ELDERLY_AGE]
    by_code = np.zeros((2, len(REASON_CODES)))
    by_code[:, _CODE["R12"]] = 1.0
    by_code[:, _CODE["R01"]] = 0.5
    young, elderly = top_reasons(X, by_code)
    assert [r["code"] for r in young] == ["R12", "R01"]
    assert [r["code"] for r in elderly] == ["R01"]


def test_missing_value_is_reported_as_null_with_its_own_code():
    X = synthetic_frame(1, seed=6).loc[:, list(FEATURES)].to_numpy(dtype=np.float64).copy()
    X[0, FEATURES.index("MonthlyIncome")] = np.nan
    by_code = np.zeros((1, len(REASON_CODES)))
    by_code[0, _CODE["R07"]] = 0.4
    assert top_reasons(X, by_code) == [
        [
            {
                "code": "R07",
                "feature": "MonthlyIncome",
                "text": "Income not reported",
                "value": None,
                "contribution": 0.4,
            }
        ]
    ]


@pytest.mark.realdata
def test_reasons_for_explains_declines_and_on_request_everyone(real_rows):
    pipeline = _fitted("hist_gradient_boosting")
    explainer = make_explainer(pipeline)
    X = real_rows[:200]
    preds = (pipeline.predict_proba(X)[:, 1] >= 0.23).astype(int)
    assert 0 < preds.sum() < len(preds)
    declines = reasons_for(explainer, X, preds, explain_all=False)
    assert all(bool(r) == bool(p) for r, p in zip(declines, preds, strict=True) if p == 0)
    assert all(1 <= len(r) <= 4 for r, p in zip(declines, preds, strict=True) if p == 1)
    everyone = reasons_for(explainer, X, preds, explain_all=True)
    assert sum(map(bool, everyone)) > preds.sum()
    for r, d in zip(everyone, declines, strict=True):
        if d:  # the same reasons; the sums' last bit depends on the row count's code path (_few/_many)
            assert [{**x, "contribution": pytest.approx(x["contribution"], rel=1e-12)} for x in r] == d
        assert [x["contribution"] for x in r] == sorted((x["contribution"] for x in r), reverse=True)
        assert all(x["contribution"] > 0 for x in r)


def test_reason_table_is_one_row_per_code_with_wording():
    table = reason_table()
    assert len({r["code"] for r in table}) == len(table) == len(REASON_CODES)
    assert {r["feature"] for r in table} == set(FEATURES)
    assert all(r["text"] and not r["text"].startswith(r["feature"]) for r in table)
