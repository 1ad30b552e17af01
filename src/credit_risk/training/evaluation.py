"""Metrics and diagnostic plots for a scored split."""

from __future__ import annotations

import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from sklearn.calibration import CalibrationDisplay
from sklearn.inspection import permutation_importance
from sklearn.metrics import (
    PrecisionRecallDisplay,
    RocCurveDisplay,
    accuracy_score,
    brier_score_loss,
    f1_score,
    log_loss,
    precision_score,
    recall_score,
    roc_auc_score,
    roc_curve,
)

from credit_risk.features import FEATURES

# Permutation importance re-scores the model once per feature and repeat: a sample keeps it
# to a couple of seconds on the real file without changing the ranking.
IMPORTANCE_MAX_ROWS = 10_000
IMPORTANCE_REPEATS = 3


def ks_statistic(y_true: np.ndarray, proba: np.ndarray) -> float:
    """Kolmogorov-Smirnov: the largest gap between the score distributions of the two classes."""
    fpr, tpr, _ = roc_curve(y_true, proba)
    return float(np.max(tpr - fpr))


def classification_metrics(y_true: np.ndarray, proba: np.ndarray, threshold: float) -> dict[str, float]:
    """The metrics named in model_io.TEST_METRICS; a row is positive when proba >= threshold."""
    predicted = (proba >= threshold).astype(int)
    auc = roc_auc_score(y_true, proba)
    return {
        "roc_auc": float(auc),
        "gini": float(2 * auc - 1),
        "ks": ks_statistic(y_true, proba),
        "precision": float(precision_score(y_true, predicted, zero_division=0)),
        "recall": float(recall_score(y_true, predicted, zero_division=0)),
        "f1": float(f1_score(y_true, predicted, zero_division=0)),
        "accuracy": float(accuracy_score(y_true, predicted)),
        "brier": float(brier_score_loss(y_true, proba)),
        "log_loss": float(log_loss(y_true, proba, labels=[0, 1])),
    }


def feature_importance(pipeline, X: np.ndarray, y: np.ndarray, seed: int) -> dict[str, float]:
    """Mean drop in test AUC when each input column is shuffled (works for any model family)."""
    if len(y) > IMPORTANCE_MAX_ROWS:
        rows = np.random.default_rng(seed).choice(len(y), IMPORTANCE_MAX_ROWS, replace=False)
        X, y = X[rows], y[rows]
    result = permutation_importance(
        pipeline, X, y, scoring="roc_auc", n_repeats=IMPORTANCE_REPEATS, random_state=seed, n_jobs=1
    )
    return {name: float(v) for name, v in zip(FEATURES, result.importances_mean, strict=True)}


def _figure(title: str, figsize: tuple[float, float] = (6, 5)) -> tuple[Figure, Axes]:
    # A bare Figure, not pyplot: no global figure registry to leak, no display backend needed.
    # Constrained layout keeps the title and long tick labels inside the image.
    fig = Figure(figsize=figsize, dpi=100, layout="constrained")
    ax = fig.subplots()
    ax.set_title(title)
    return fig, ax


def plots(y_true: np.ndarray, proba: np.ndarray, importance: dict[str, float]) -> dict[str, Figure]:
    """ROC, precision-recall, calibration and feature-importance figures, keyed by file name."""
    figures = {}
    fig, ax = _figure("ROC curve (test split)")
    RocCurveDisplay.from_predictions(y_true, proba, ax=ax, plot_chance_level=True)
    figures["roc_curve.png"] = fig

    fig, ax = _figure("Precision-recall curve (test split)")
    PrecisionRecallDisplay.from_predictions(y_true, proba, ax=ax, plot_chance_level=True)
    figures["precision_recall_curve.png"] = fig

    fig, ax = _figure("Calibration (test split, quantile bins)")
    display = CalibrationDisplay.from_predictions(y_true, proba, n_bins=10, strategy="quantile", ax=ax)
    # Every probability is far below 1 here (under 0.4 on the real file): zoom to the data, or
    # the curve is a smudge in the bottom-left corner of the unit square.
    upper = min(1.0, 1.1 * float(max(display.prob_pred.max(), display.prob_true.max())))
    ax.set_xlim(0, upper)
    ax.set_ylim(0, upper)
    figures["calibration_curve.png"] = fig

    fig, ax = _figure("Permutation importance (drop in test AUC)", figsize=(9, 5))
    ranked = sorted(importance.items(), key=lambda kv: kv[1])
    ax.barh([k for k, _ in ranked], [v for _, v in ranked])
    ax.set_xlabel("mean AUC drop when shuffled")
    figures["feature_importance.png"] = fig
    return figures
