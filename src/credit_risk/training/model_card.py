"""The model card of a version (issue 11): what it does, what it assumes, where it fails.

Markdown from our own template (skops.card writes a Hugging Face card around a pickled model:
a poorer fit for a registry version's description). The trainer logs it as `model_card.md` and
sets it as the registered version's description, which the MLflow UI shows on the version page.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from sklearn.metrics import brier_score_loss, roc_auc_score

from credit_risk.reasons import ELDERLY_AGE, MAX_REASONS, reason_table
from credit_risk.training.compliance import MonotonicityReport
from credit_risk.training.evaluation import ks_statistic

BOOTSTRAP_RESAMPLES = 300
CALIBRATION_BINS = 10
# MLflow keeps a version's description in a VARCHAR(5000) (PostgreSQL enforces it).
MAX_DESCRIPTION_CHARS = 5000


@dataclass(frozen=True)
class CardInputs:
    """Everything the card states, gathered by the trainer's pipeline."""

    model_name: str
    version: str
    run_id: str
    model: str
    candidates: dict[str, float]  # name -> validation AUC
    threshold: float
    metrics: dict[str, float]
    y_test: np.ndarray
    test_proba: np.ndarray
    dataset_sha256: str
    rows: int
    target_rate: float
    data_warnings: list[str]
    compliance: MonotonicityReport
    compliance_failures: list[str]
    decision: str
    decision_reason: str
    # The stability reference's section (monitoring.reference.card_section), Markdown.
    stability: str = ""


def bootstrap_intervals(
    y: np.ndarray, proba: np.ndarray, seed: int = 0, resamples: int = BOOTSTRAP_RESAMPLES
) -> dict[str, tuple[float, float]]:
    """95 % percentile-bootstrap intervals of AUC, KS and Brier score on the test split."""
    rng = np.random.default_rng(seed)
    values: dict[str, list[float]] = {"roc_auc": [], "ks": [], "brier": []}
    for _ in range(resamples):
        i = rng.integers(0, len(y), len(y))
        if y[i].min() == y[i].max():
            continue
        values["roc_auc"].append(roc_auc_score(y[i], proba[i]))
        values["ks"].append(ks_statistic(y[i], proba[i]))
        values["brier"].append(brier_score_loss(y[i], proba[i]))
    return {k: (float(np.percentile(v, 2.5)), float(np.percentile(v, 97.5))) for k, v in values.items()}


def expected_calibration_error(y: np.ndarray, proba: np.ndarray, bins: int = CALIBRATION_BINS) -> float:
    """ECE over quantile bins: the row-weighted mean gap between predicted and observed rates."""
    edges = np.quantile(proba, np.linspace(0, 1, bins + 1))
    which = np.clip(np.searchsorted(edges, proba, side="right") - 1, 0, bins - 1)
    gap = 0.0
    for b in range(bins):
        mask = which == b
        if mask.any():
            gap += mask.sum() * abs(proba[mask].mean() - y[mask].mean())
    return float(gap / len(y))


def build(card: CardInputs) -> str:
    """The card as Markdown."""
    ci = bootstrap_intervals(card.y_test, card.test_proba)
    ece = expected_calibration_error(card.y_test, card.test_proba)
    m = card.metrics
    ranked = sorted(card.candidates.items(), key=lambda kv: -kv[1])
    candidates = ", ".join(f"{name} {auc:.4f}" for name, auc in ranked)
    warnings = "; ".join(card.data_warnings) or "none"
    c = card.compliance
    checks = "passed" if not card.compliance_failures else "FAILED: " + "; ".join(card.compliance_failures)
    codes = "\n".join(f"| {r['code']} | {r['feature']} | {r['text']} |" for r in reason_table())
    return f"""# {card.model_name} version {card.version}: {card.model}

**Intended use.** Scores an applicant's probability of serious delinquency (90+ days past due)
within two years, from the ten *Give Me Some Credit* fields, to support a credit decision.
Not for other populations or products without revalidation. **Decision rule:** decline
(`prediction` 1) when the probability is >= **{card.threshold:.4f}**, the threshold that
maximises F1 on the validation split (20 %). Every decline carries up to {MAX_REASONS} reason codes.

**Data.** SHA256 `{card.dataset_sha256}`, {card.rows:,} rows, target rate {card.target_rate:.4f};
stratified 60/20/20 train/validation/test split. Validation warnings: {warnings}.

**Candidates** (validation AUC): {candidates}. The winner has the highest validation AUC
(ties go to the earlier candidate); both are monotone by construction.

**Test metrics** (95 % bootstrap intervals, {BOOTSTRAP_RESAMPLES} resamples of the test split):

| metric | value | 95 % interval |
| --- | --- | --- |
| AUC | {m["roc_auc"]:.4f} | {ci["roc_auc"][0]:.4f} to {ci["roc_auc"][1]:.4f} |
| KS | {m["ks"]:.4f} | {ci["ks"][0]:.4f} to {ci["ks"][1]:.4f} |
| Brier | {m["brier"]:.4f} | {ci["brier"][0]:.4f} to {ci["brier"][1]:.4f} |

Precision {m["precision"]:.3f}, recall {m["recall"]:.3f} at the threshold.

**Calibration.** Expected calibration error {ece:.4f} ({CALIBRATION_BINS} quantile bins);
plot `plots/calibration_curve.png` on run `{card.run_id}`.

**Compliance checks** ({checks}): raising a past-due count (0 to 6) lowered the probability
in {c.past_due_violations} of {c.past_due_steps} steps; raising the age of a {ELDERLY_AGE}+ applicant
(62 to 82) raised it in {c.age_violations} of {c.age_steps} steps ({c.rows} real test rows). Age is
never a reason code at {ELDERLY_AGE}+. Gate: {card.decision} ({card.decision_reason}).

**Reason codes** (exact contributions in log-odds: TreeSHAP or coefficient x value):

| code | field | adverse-action wording |
| --- | --- | --- |
{codes}

{card.stability}

**Known limitations.** 96/98 in the past-due counts are reporting codes, treated as missing plus
a flag; a fifth of incomes are missing (its own reason code); the file has 609 duplicate rows;
the data period and population of the Kaggle file are unknown, so drift cannot be dated.
"""


def description(card_text: str, run_id: str) -> str:
    """The card for the version's description, cut at a section if it exceeds MLflow's limit."""
    if len(card_text) <= MAX_DESCRIPTION_CHARS:
        return card_text
    note = f"\n\n(Cut to fit; the whole card is `model_card.md` on run `{run_id}`.)"
    cut = card_text[: MAX_DESCRIPTION_CHARS - len(note)]
    return cut[: cut.rfind("\n\n")] + note
