"""The cost of the monotone constraints (issue 11): 5-fold stratified CV AUC on the real file.

Fits today's HistGradientBoosting candidate with and without `monotonic_cst` on the same folds
(StratifiedKFold, shuffle, seed 42) and prints mean ± std AUC and the paired difference; then
counts monotonicity violations of both fold-0 models on 200 real rows of fold 0's held-out part.

    python bench/monotone_cv.py [--csv data/cs-training.csv] [--folds 5] [--threads 2]
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import numpy as np
from sklearn.base import clone
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import StratifiedKFold
from threadpoolctl import threadpool_limits

from credit_risk.features import FEATURES, TARGET
from credit_risk.training.candidates import CANDIDATES
from credit_risk.training.compliance import check_monotonicity, monotonic_cst, probe_sample
from credit_risk.training.data import load_dataset


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--csv", type=Path, default=Path("data/cs-training.csv"))
    p.add_argument("--folds", type=int, default=5)
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args()
    typed, _ = load_dataset(args.csv)
    X = typed[list(FEATURES)].to_numpy(dtype=np.float64)
    y = typed[TARGET].to_numpy(dtype=np.int64)
    hgb = next(c for c in CANDIDATES if c.name == "hist_gradient_boosting")
    base = hgb.build(42)
    base.set_params(model__monotonic_cst=None)
    models = {"unconstrained": base, "monotone": clone(base).set_params(model__monotonic_cst=monotonic_cst())}
    aucs: dict[str, list[float]] = {k: [] for k in models}
    print(f"load: {os.getloadavg()[0]:.2f} (1-min average, {os.cpu_count()} cores)")
    folds = StratifiedKFold(n_splits=args.folds, shuffle=True, random_state=42).split(X, y)
    with threadpool_limits(args.threads):
        for i, (tr, te) in enumerate(folds):
            for name, model in models.items():
                start = time.perf_counter()
                fitted = clone(model).fit(X[tr], y[tr])
                aucs[name].append(float(roc_auc_score(y[te], fitted.predict_proba(X[te])[:, 1])))
                line = f"fold {i} {name:13s} AUC {aucs[name][-1]:.4f} ({time.perf_counter() - start:.1f}s)"
                if i == 0:
                    report = check_monotonicity(
                        lambda r, m=fitted: m.predict_proba(r)[:, 1], probe_sample(X[te])
                    )
                    line += f"; {report.summary()}"
                print(line, flush=True)
    for name, values in aucs.items():
        print(f"{name:13s} AUC {np.mean(values):.4f} ± {np.std(values, ddof=1):.4f} over {args.folds} folds")
    diff = np.array(aucs["monotone"]) - np.array(aucs["unconstrained"])
    print(f"monotone - unconstrained: {diff.mean():+.4f} ± {diff.std(ddof=1):.4f} (paired, per fold)")
    print(f"load at end: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
