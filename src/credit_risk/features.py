"""The data contract: column names, the CSV-to-API name map, and the feature transformer."""

from __future__ import annotations

import numpy as np
from sklearn.base import BaseEstimator, TransformerMixin

TARGET = "SeriousDlqin2yrs"

# The order is the model's input order everywhere: training, signature, API.
FEATURES: tuple[str, ...] = (
    "RevolvingUtilizationOfUnsecuredLines",
    "age",
    "NumberOfTime30_59DaysPastDueNotWorse",
    "DebtRatio",
    "MonthlyIncome",
    "NumberOfOpenCreditLinesAndLoans",
    "NumberOfTimes90DaysLate",
    "NumberRealEstateLoansOrLines",
    "NumberOfTime60_89DaysPastDueNotWorse",
    "NumberOfDependents",
)

# The one place where the Kaggle file's hyphenated names become the API's names.
CSV_TO_API: dict[str, str] = {
    "NumberOfTime30-59DaysPastDueNotWorse": "NumberOfTime30_59DaysPastDueNotWorse",
    "NumberOfTime60-89DaysPastDueNotWorse": "NumberOfTime60_89DaysPastDueNotWorse",
}

# Columns the real file leaves empty for some applicants; every other feature is required.
NULLABLE: frozenset[str] = frozenset({"MonthlyIncome", "NumberOfDependents"})

PAST_DUE: tuple[str, ...] = (
    "NumberOfTime30_59DaysPastDueNotWorse",
    "NumberOfTimes90DaysLate",
    "NumberOfTime60_89DaysPastDueNotWorse",
)

# 96 and 98 in the past-due counts are reporting codes, not counts (docs/data.md).
PAST_DUE_CODES: tuple[int, ...] = (96, 98)

# Non-negative counts; age is bounded separately.
COUNT_COLUMNS: tuple[str, ...] = (
    *PAST_DUE,
    "NumberOfOpenCreditLinesAndLoans",
    "NumberRealEstateLoansOrLines",
    "NumberOfDependents",
)
AGE_RANGE = (0, 120)

_PAST_DUE_IDX = [FEATURES.index(c) for c in PAST_DUE]
_INCOME_IDX = FEATURES.index("MonthlyIncome")
_DEPENDENTS_IDX = FEATURES.index("NumberOfDependents")


def is_past_due_code(values: np.ndarray) -> np.ndarray:
    """True where a past-due count is a 96/98 reporting code.

    One comparison per code: a third of np.isin's cost on the one-row request path.
    """
    hit = values == PAST_DUE_CODES[0]
    for code in PAST_DUE_CODES[1:]:
        hit |= values == code
    return hit


class CreditFeatures(TransformerMixin, BaseEstimator):
    """Turns the ten raw columns (in FEATURES order) into model features.

    The 96/98 past-due codes become missing values plus a flag, so no model reads them
    as "98 late payments"; missing income and dependents get flags of their own, since
    being missing is itself predictive in this data. Works on a plain float array so the
    API can call the model without building a DataFrame per request.
    """

    def fit(self, X, y=None):  # noqa: ARG002 - sklearn's signature
        self.n_features_in_ = np.asarray(X).shape[1]
        return self

    def transform(self, X):
        X = np.array(X, dtype=np.float64)  # a copy: callers' arrays stay untouched
        past_due = X[:, _PAST_DUE_IDX]
        coded = is_past_due_code(past_due)
        past_due[coded] = np.nan
        X[:, _PAST_DUE_IDX] = past_due
        flags = np.column_stack(
            [
                coded.any(axis=1),
                np.isnan(X[:, _INCOME_IDX]),
                np.isnan(X[:, _DEPENDENTS_IDX]),
            ]
        ).astype(np.float64)
        return np.hstack([X, flags])

    def get_feature_names_out(self, input_features=None):  # noqa: ARG002 - sklearn's signature
        return np.array(
            [*FEATURES, "past_due_code_flag", "income_missing", "dependents_missing"], dtype=object
        )
