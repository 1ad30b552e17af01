"""The cost of reason codes in-process (issue 11): per single-row request and per 10,000-row batch.

Fits the trainer's HistGradientBoosting candidate (monotone) on the real file's training split,
builds the API's scorer (fast_forest) and explainer (reasons), then times, alternating in one
process: scoring one row; scoring plus reasons for one row (a decline, as the seed payload is);
scoring 10,000 real rows; the same with reasons for all of them (`explain=true`).

    python bench/reasons_cost.py [--csv data/cs-training.csv] [--repeats 2000]
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from pathlib import Path

import numpy as np

from credit_risk.api.fast_forest import make_scorer
from credit_risk.api.schemas import EXAMPLE_RECORD
from credit_risk.features import FEATURES
from credit_risk.model_io import LoadedModel
from credit_risk.reasons import make_explainer, reasons_for
from credit_risk.training.candidates import CANDIDATES, split_dataset
from credit_risk.training.data import load_dataset


def _per_call_us(fn, repeats: int) -> float:
    start = time.process_time()
    for _ in range(repeats):
        fn()
    return (time.process_time() - start) / repeats * 1e6


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--csv", type=Path, default=Path("data/cs-training.csv"))
    p.add_argument("--repeats", type=int, default=2000)
    args = p.parse_args()
    typed, _ = load_dataset(args.csv)
    split = split_dataset(typed, 42)
    pipeline = CANDIDATES[0].build(42).fit(split.X_train, split.y_train)
    model = LoadedModel("bench", "1", "run", pipeline, 0.23, "hash")
    score, scorer = make_scorer(model)
    start = time.perf_counter()
    explainer = make_explainer(pipeline)
    build_s = time.perf_counter() - start
    x = np.array([[EXAMPLE_RECORD[f] for f in FEATURES]], dtype=np.float64)
    one = np.array([1], dtype=np.int8)
    batch = split.X_test[:10_000]
    preds = (score(batch) >= model.threshold).astype(np.int8)
    print(f"load: {os.getloadavg()[0]:.2f} (1-min average, {os.cpu_count()} cores); scorer {scorer}")
    print(f"explainer: built in {build_s:.1f}s, {explainer.cells * 8 / 1e6:.0f} MB of tables, "
          f"{explainer.n_trees} tables")  # fmt: skip
    single, single_r, many, many_r = [], [], [], []
    for _ in range(5):  # alternating rounds: the machine's noise hits both alike
        single.append(_per_call_us(lambda: score(x), args.repeats))
        single_r.append(_per_call_us(lambda: (score(x), reasons_for(explainer, x, one, False)), args.repeats))
        many.append(_per_call_us(lambda: score(batch), 3) / 1e3)
        many_r.append(
            _per_call_us(lambda: (score(batch), reasons_for(explainer, batch, preds, True)), 3) / 1e3
        )
    s, sr = statistics.median(single), statistics.median(single_r)
    m, mr = statistics.median(many), statistics.median(many_r)
    print(f"one row: score {s:.0f} us CPU, score + reasons {sr:.0f} us (reasons {sr - s:.0f} us)")
    print(f"10,000 rows: score {m:.0f} ms CPU, score + reasons for all {mr:.0f} ms (reasons {mr - m:.0f} ms)")
    print(f"load at end: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
