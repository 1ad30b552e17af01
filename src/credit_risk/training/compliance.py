"""Credit-sense properties a served model must have, and the probe that checks them (issue 11).

Risk must never fall as a past-due count rises, and never rise with age: the first is what
makes reason codes consistent, the second keeps age from counting against elderly applicants
(Regulation B §1002.6(b)(2)). The constraints are imposed at fit time (`monotonic_cst`) and
checked on real rows before promotion, whatever the model family.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from credit_risk.constraints import INCREASING, monotonic_cst
from credit_risk.features import FEATURES

# The probe of issue 11: each past-due count set to 0, 1, ..., 6 and the age to 62, 67, ..., 82.
PAST_DUE_STEPS = tuple(range(7))
ELDERLY_AGE = 62
AGE_STEPS = tuple(range(ELDERLY_AGE, 83, 5))
PROBE_ROWS = 200
# Probabilities equal to within float noise are not a violation.
TOLERANCE = 1e-12


@dataclass(frozen=True)
class MonotonicityReport:
    """Violations found on the probe: steps where the probability moved the forbidden way."""

    rows: int
    past_due_steps: int
    past_due_violations: int
    age_steps: int
    age_violations: int
    worst: float

    @property
    def passed(self) -> bool:
        return self.past_due_violations == 0 and self.age_violations == 0

    def summary(self) -> str:
        """One sentence for tags, logs and the model card."""
        return (
            f"raising a past-due count (0 to 6) lowered the probability in {self.past_due_violations} of "
            f"{self.past_due_steps} steps; raising the age of a 62+ applicant (62 to 82) raised it in "
            f"{self.age_violations} of {self.age_steps} steps ({self.rows} real rows, largest wrong move "
            f"{self.worst:.3g})"
        )

    def to_dict(self) -> dict:
        return {**self.__dict__, "passed": self.passed}


def probe_sample(X: np.ndarray, n: int = PROBE_ROWS, seed: int = 0) -> np.ndarray:
    """A fixed random sample of real rows (FEATURES order)."""
    rows = np.random.default_rng(seed).choice(len(X), size=min(n, len(X)), replace=False)
    return X[np.sort(rows)]


def _violations(proba: Callable[[np.ndarray], np.ndarray], X: np.ndarray, column: str, steps, sign: int):
    # One model call for all rows and steps; column j of `p` is the probability at steps[j].
    idx = FEATURES.index(column)
    grid = np.repeat(X[None, :, :], len(steps), axis=0)
    grid[:, :, idx] = np.asarray(steps, dtype=np.float64)[:, None]
    p = proba(grid.reshape(-1, X.shape[1])).reshape(len(steps), len(X)).T
    moves = sign * np.diff(p, axis=1)  # > 0 is the wrong direction
    wrong = moves > TOLERANCE
    return int(wrong.sum()), int(moves.size), float(moves.max(initial=0.0))


def check_monotonicity(proba: Callable[[np.ndarray], np.ndarray], X_probe: np.ndarray) -> MonotonicityReport:
    """Count the forbidden moves of `proba` (rows -> P(default)) on the probe rows."""
    pd_wrong = pd_steps = 0
    worst = 0.0
    for column in INCREASING:
        wrong, steps, w = _violations(proba, X_probe, column, PAST_DUE_STEPS, sign=-1)
        pd_wrong, pd_steps, worst = pd_wrong + wrong, pd_steps + steps, max(worst, w)
    age_wrong, age_steps, w = _violations(proba, X_probe, "age", AGE_STEPS, sign=1)
    return MonotonicityReport(len(X_probe), pd_steps, pd_wrong, age_steps, age_wrong, max(worst, w))


def check_compliance(pipeline, X_probe: np.ndarray) -> tuple[MonotonicityReport, list[str]]:
    """The promotion gate's compliance checks on a fitted pipeline: its report and what failed.

    Monotone on the probe of real rows, and exact reason codes computable for it (the API gives
    reasons on every decline, so a model it cannot explain must not be served).
    """
    from credit_risk.reasons import make_explainer  # the API's own explainer, built as it builds it

    report = check_monotonicity(lambda X: pipeline.predict_proba(X)[:, 1], X_probe)
    failures = [] if report.passed else [f"not monotone: {report.summary()}"]
    try:
        make_explainer(pipeline)
    except (TypeError, ValueError, AttributeError) as e:
        failures.append(f"no exact reason codes for this model: {e}")
    return report, failures


__all__ = ["MonotonicityReport", "check_compliance", "check_monotonicity", "monotonic_cst", "probe_sample"]
