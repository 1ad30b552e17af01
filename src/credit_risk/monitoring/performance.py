"""Realized performance once outcomes arrive: per month of decision, against the version's test metrics.

Offline only (scikit-learn): the API never imports this.
"""

from __future__ import annotations

from datetime import UTC, datetime

import numpy as np
from sklearn.metrics import roc_auc_score, roc_curve

from credit_risk.monitoring.outcomes import Outcome
from credit_risk.monitoring.predictions import LoggedPredictions


def _ks(y: np.ndarray, p: np.ndarray) -> float:
    fpr, tpr, _ = roc_curve(y, p)
    return float(np.max(tpr - fpr))


def _row(label: str, y: np.ndarray, p: np.ndarray, test: dict[str, float]) -> dict:
    both = 0 < int(y.sum()) < len(y)  # AUC and KS need both classes
    bad_rate, mean_p = float(y.mean()), float(p.mean())
    return {
        "month": label,
        "labelled": len(y),
        "bad_rate": bad_rate,
        "mean_probability": mean_p,
        # Calibration in the large: observed bad rate over the mean predicted probability (1 = calibrated).
        "calibration_ratio": bad_rate / mean_p if mean_p > 0 else None,
        "brier": float(np.mean((p - y) ** 2)),
        "auc": float(roc_auc_score(y, p)) if both else None,
        "ks": _ks(y, p) if both else None,
        "test_auc": test.get("roc_auc"),
        "test_ks": test.get("ks"),
        "test_brier": test.get("brier"),
    }


def join(
    logged: LoggedPredictions, outcomes: dict[str, Outcome]
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(decision time ms, probability, defaulted) of the logged predictions that have an outcome."""
    rows = [(i, outcomes[pid].defaulted) for i, pid in enumerate(logged.ids) if pid in outcomes]
    idx = np.array([r[0] for r in rows], dtype=np.int64)
    y = np.array([r[1] for r in rows], dtype=np.int64)
    return logged.ts_ms[idx], logged.probability[idx], y


def performance_table(
    logged: LoggedPredictions, outcomes: dict[str, Outcome], test: dict[str, float]
) -> list[dict]:
    """One row per month of decision (UTC), then one for all of them; empty when nothing is labelled."""
    ts, p, y = join(logged, outcomes)
    if not len(y):
        return []
    months = np.array([datetime.fromtimestamp(t / 1000, UTC).strftime("%Y-%m") for t in ts])
    table = [_row(m, y[months == m], p[months == m], test) for m in sorted(set(months))]
    table.append(_row("all", y, p, test))
    return table


def _fmt(v) -> str:
    return "-" if v is None else (f"{v:,}" if isinstance(v, int) else f"{v:.4f}")


def markdown(table: list[dict]) -> str:
    """The report's performance section."""
    cols = ("month", "labelled", "auc", "test_auc", "ks", "test_ks", "bad_rate", "mean_probability",
            "calibration_ratio", "brier", "test_brier")  # fmt: skip
    lines = [
        "## Realized performance",
        "",
        "Predictions joined to their observed outcomes, by month of decision (UTC), against the "
        "version's own test-split metrics.",
        "",
        "| " + " | ".join(cols) + " |",
        "| " + " | ".join("---" for _ in cols) + " |",
    ]
    lines += [
        "| " + " | ".join(_fmt(row[c]) if c != "month" else row[c] for c in cols) + " |" for row in table
    ]
    return "\n".join(lines)


def metrics(table: list[dict]) -> dict[str, float]:
    """MLflow metrics of the table: `realized_auc`, ... for all months, `realized_auc.<month>` per month."""
    out = {}
    for row in table:
        suffix = "" if row["month"] == "all" else f".{row['month']}"
        for key, name in (("auc", "realized_auc"), ("ks", "realized_ks"), ("bad_rate", "realized_bad_rate"),
                          ("calibration_ratio", "calibration_ratio"), ("labelled", "labelled")):  # fmt: skip
            if row[key] is not None:
                out[f"{name}{suffix}"] = float(row[key])
    return out
