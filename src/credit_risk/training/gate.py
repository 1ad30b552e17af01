"""The promotion gate: does the new version (challenger) replace the Production one (champion)?"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
from mlflow.tracking import MlflowClient
from sklearn.metrics import roc_auc_score

from credit_risk.model_io import ModelRejected, load_model_version
from credit_risk.registry import production_version
from credit_risk.settings import PromoteMode

log = logging.getLogger(__name__)

PROMOTED, REJECTED, SKIPPED = "promoted", "rejected", "skipped"


@dataclass(frozen=True)
class Champion:
    """The current Production version and its AUC on the challenger's test split."""

    version: str | None = None
    roc_auc: float | None = None
    # Why there is no usable champion (none in Production, or it failed to load).
    note: str = "no version in Production"


@dataclass(frozen=True)
class Decision:
    """The gate's outcome, logged as tags on the run and on the version."""

    decision: Literal["promoted", "rejected", "skipped"]
    reason: str

    @property
    def promote(self) -> bool:
        return self.decision == PROMOTED


def evaluate_champion(client: MlflowClient, name: str, X_test: np.ndarray, y_test: np.ndarray) -> Champion:
    """Score the Production version on the new test split: a fair comparison, not its old number."""
    current = production_version(client, name)
    if current is None:
        return Champion()
    try:
        champion = load_model_version(client, name, current.version)
    except ModelRejected as e:
        log.warning("Production version %s cannot be loaded, treated as no champion: %s", current.version, e)
        return Champion(current.version, None, f"Production version {current.version} cannot be loaded ({e})")
    auc = float(roc_auc_score(y_test, champion.predict_proba(X_test)))
    return Champion(current.version, auc, f"Production version {current.version}")


def decide(
    mode: PromoteMode, roc_auc: float, min_auc: float, champion: Champion, compliance: Sequence[str] = ()
) -> Decision:
    """Promote when forced, or when the challenger clears the floor, matches the champion and
    passes the compliance checks (`compliance`: what failed, training/compliance.py)."""
    if mode == "never":
        return Decision(SKIPPED, "--promote never: registered only")
    if mode == "always":
        failed = f"; compliance checks failed: {'; '.join(compliance)}" if compliance else ""
        return Decision(PROMOTED, f"--promote always (test AUC {roc_auc:.4f}, gate not applied){failed}")
    failures = list(compliance)
    if roc_auc < min_auc:
        failures.append(f"test AUC {roc_auc:.4f} is below the minimum {min_auc:.4f}")
    if champion.roc_auc is not None and roc_auc < champion.roc_auc:
        failures.append(
            f"test AUC {roc_auc:.4f} is below Production version {champion.version}'s "
            f"{champion.roc_auc:.4f} on the same test split"
        )
    if failures:
        return Decision(REJECTED, "; ".join(failures))
    if champion.roc_auc is None:
        return Decision(PROMOTED, f"test AUC {roc_auc:.4f} >= minimum {min_auc:.4f}; {champion.note}")
    return Decision(
        PROMOTED,
        f"test AUC {roc_auc:.4f} >= minimum {min_auc:.4f} and >= Production version "
        f"{champion.version}'s {champion.roc_auc:.4f} on the same test split",
    )
