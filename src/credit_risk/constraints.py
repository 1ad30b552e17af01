"""The model's shape constraints (issue 11), shared by the trainer and every process that loads a model.

Risk never falls as a past-due count rises and never rises with age. HistGradientBoosting takes
them as `monotonic_cst`; the logistic candidate is `MonotoneLogisticRegression`, whose dotted
name is in every saved logistic model's skops trusted-type list (so it lives here, not in training/).
"""

from __future__ import annotations

import numpy as np
from scipy.special import expit
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.linear_model import LogisticRegression

from credit_risk.features import FEATURES, PAST_DUE

# The model's input columns: CreditFeatures' output.
ENGINEERED: tuple[str, ...] = ("past_due_code_flag", "income_missing", "dependents_missing")
MODEL_FEATURES: tuple[str, ...] = (*FEATURES, *ENGINEERED)
INCREASING: tuple[str, ...] = PAST_DUE
DECREASING: tuple[str, ...] = ("age",)


def monotonic_cst() -> list[int]:
    """scikit-learn's `monotonic_cst` for the model's input: +1 increasing, -1 decreasing, 0 free."""
    return [1 if f in INCREASING else -1 if f in DECREASING else 0 for f in MODEL_FEATURES]


class MonotoneLogisticRegression(ClassifierMixin, BaseEstimator):
    """A logistic regression whose constrained coefficients have the required sign (or are 0).

    Fitted as scikit-learn's LogisticRegression; a constrained column whose coefficient comes
    out with the wrong sign is left out (coefficient exactly 0) and the rest refitted, until
    every sign agrees. Its inputs must be monotone in the raw fields (log1p and scaling are).
    """

    def __init__(self, monotonic_cst=None, C: float = 1.0, max_iter: int = 100, random_state=None):
        self.monotonic_cst = monotonic_cst
        self.C = C
        self.max_iter = max_iter
        self.random_state = random_state

    def fit(self, X, y):
        X = np.asarray(X, dtype=np.float64)
        cst = np.zeros(X.shape[1]) if self.monotonic_cst is None else np.asarray(self.monotonic_cst)
        if cst.shape != (X.shape[1],):
            raise ValueError(f"monotonic_cst has {cst.size} entries for {X.shape[1]} columns")
        keep = np.ones(X.shape[1], dtype=bool)
        while True:
            lr = LogisticRegression(C=self.C, max_iter=self.max_iter, random_state=self.random_state)
            lr.fit(X[:, keep], y)
            coef = np.zeros(X.shape[1])
            coef[keep] = lr.coef_.ravel()
            wrong = keep & (cst * coef < 0)
            if not wrong.any():
                break
            keep &= ~wrong
        self.coef_ = coef[None, :]
        self.intercept_ = lr.intercept_.astype(np.float64)
        self.classes_ = lr.classes_
        self.n_features_in_ = X.shape[1]
        self.n_iter_ = lr.n_iter_
        self.dropped_ = np.flatnonzero(~keep)
        return self

    def decision_function(self, X):
        return np.asarray(X, dtype=np.float64) @ self.coef_[0] + self.intercept_[0]

    def predict_proba(self, X):
        p = expit(self.decision_function(X))
        return np.column_stack([1 - p, p])

    def predict(self, X):
        return self.classes_[(self.decision_function(X) > 0).astype(int)]
