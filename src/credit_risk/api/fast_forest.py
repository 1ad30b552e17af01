"""A one-row fast path for HistGradientBoosting pipelines, checked against scikit-learn at load.

scikit-learn predicts tree by tree: for the trained model (about 200 trees) that is 200 Python
calls and about 2 ms for a single row, which alone caps one core at ~470 predictions a second.
Here all trees are flattened into one node table and walked together, one numpy step per tree
level, with the same rules as scikit-learn's predictor (`x <= threshold` goes left, NaN follows
`missing_go_to_left`) and the same sequential sum of leaf values, so the result is identical,
not merely close. One row, the common case, has every node decided at once and then one gather
per level. A model version is only served through this path after a probe of several
hundred rows gives bit-identical probabilities; otherwise (or for another model family, or a big
batch, where scikit-learn's compiled loop wins) scikit-learn's own `predict_proba` is used.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import numpy as np
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.pipeline import Pipeline

from credit_risk.features import FEATURES
from credit_risk.model_io import LoadedModel

log = logging.getLogger(__name__)

# Above this many rows scikit-learn's compiled per-tree loop is faster than walking all trees at once.
MAX_FAST_ROWS = 32
PROBE_ROWS = 512


class FlatForest:
    """All trees of a binary HistGradientBoostingClassifier in one node table."""

    def __init__(self, pipeline: Pipeline):
        if not isinstance(pipeline, Pipeline):
            raise TypeError("not a scikit-learn Pipeline")
        *transformers, (_, hgb) = pipeline.steps
        if not isinstance(hgb, HistGradientBoostingClassifier) or hgb.n_trees_per_iteration_ != 1:
            raise TypeError("the last step is not a binary HistGradientBoostingClassifier")
        if getattr(hgb, "_preprocessor", None) is not None:
            raise TypeError("categorical features are not supported by the fast path")
        self._transformers = [t for _, t in transformers]
        self._loss = hgb._loss
        nodes = [p[0].nodes for p in hgb._predictors]
        if any(n["is_categorical"].any() for n in nodes):
            raise TypeError("categorical splits are not supported by the fast path")
        sizes = np.array([len(n) for n in nodes])
        offsets = np.concatenate([[0], np.cumsum(sizes)[:-1]])
        table = np.concatenate(nodes)
        shift = np.repeat(offsets, sizes)
        leaf = table["is_leaf"].astype(bool)
        own = np.arange(len(table))
        # Leaves point at themselves, so every tree can take the same (maximum) number of steps.
        self._left = np.where(leaf, own, table["left"].astype(np.intp) + shift)
        self._right = np.where(leaf, own, table["right"].astype(np.intp) + shift)
        self._feature = np.where(leaf, 0, table["feature_idx"]).astype(np.intp)
        self._threshold = table["num_threshold"].astype(np.float64)
        self._missing_left = table["missing_go_to_left"].astype(bool)
        self._value = table["value"].astype(np.float64)
        self._roots = offsets.astype(np.intp)
        self._depth = int(table["depth"].max())
        self._baseline = float(hgb._baseline_prediction.ravel()[0])
        self.n_trees = len(nodes)

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        """Probability of class 1 for each row (rows in FEATURES order, float64)."""
        for t in self._transformers:
            X = t.transform(X)
        n = X.shape[0]
        if n == 1:
            return self._predict_one(X[0])
        rows = np.arange(n)[:, None]
        cur = np.broadcast_to(self._roots, (n, self.n_trees))
        for _ in range(self._depth):
            x = X[rows, self._feature[cur]]
            go_left = np.where(np.isnan(x), self._missing_left[cur], x <= self._threshold[cur])
            cur = np.where(go_left, self._left[cur], self._right[cur])
        # scikit-learn adds tree after tree to the baseline: cumsum keeps that exact order.
        leaves = np.concatenate([np.full((n, 1), self._baseline), self._value[cur]], axis=1)
        raw = np.cumsum(leaves, axis=1)[:, -1:]
        return self._loss.predict_proba(raw)[:, 1]

    def _predict_one(self, x_row: np.ndarray) -> np.ndarray:
        # The common case: every node's decision for this row at once (a few numpy calls over the
        # ~5,000 nodes), then one gather per level; a third of the cost of deciding level by level.
        x = x_row[self._feature]
        go_left = x <= self._threshold
        missing = np.isnan(x)
        if missing.any():
            go_left |= missing & self._missing_left
        step = np.where(go_left, self._left, self._right)
        cur = self._roots
        for _ in range(self._depth):
            cur = step[cur]
        raw = np.cumsum(np.concatenate([[self._baseline], self._value[cur]]))[-1:]
        return self._loss.predict_proba(raw[:, None])[:, 1]


def probe_rows(n: int = PROBE_ROWS, seed: int = 0) -> np.ndarray:
    """Rows spanning the data's ranges, with missing values and the 96/98 codes, in FEATURES order."""
    rng = np.random.default_rng(seed)
    X = np.column_stack(
        [
            rng.exponential(0.5, n),  # utilisation
            rng.integers(18, 100, n),  # age
            rng.poisson(0.5, n),
            rng.exponential(1.0, n) * rng.choice([1, 1000], n),  # debt ratio, huge when income is missing
            rng.gamma(2.0, 3000.0, n).round(),
            rng.poisson(8, n),
            rng.poisson(0.3, n),
            rng.poisson(1, n),
            rng.poisson(0.2, n),
            rng.poisson(0.8, n),
        ]
    ).astype(np.float64)
    X[rng.random(n) < 0.2, FEATURES.index("MonthlyIncome")] = np.nan
    X[rng.random(n) < 0.05, FEATURES.index("NumberOfDependents")] = np.nan
    coded = rng.random(n) < 0.05
    for col in ("NumberOfTime30_59DaysPastDueNotWorse", "NumberOfTimes90DaysLate"):
        X[coded, FEATURES.index(col)] = 98
    return X


def make_scorer(model: LoadedModel) -> tuple[Callable[[np.ndarray], np.ndarray], str]:
    """The fastest exact way to score this model, and its name ("flat-forest" or "scikit-learn")."""
    try:
        forest = FlatForest(model.pipeline)
    except (TypeError, AttributeError, KeyError, ValueError) as e:
        log.info("version %s: scikit-learn's predict_proba for every call (%s)", model.version, e)
        return model.predict_proba, "scikit-learn"
    probe = probe_rows()
    expected = model.predict_proba(probe)
    # Row by row (the one-row path) and in small blocks (the 2-D walk): both must match exactly.
    one = np.concatenate([forest.predict_proba(probe[i : i + 1]) for i in range(len(probe))])
    got = np.concatenate([forest.predict_proba(probe[i : i + 8]) for i in range(0, len(probe), 8)])
    if not np.array_equal(one, expected):
        got = one
    if not np.array_equal(got, expected):
        worst = float(np.max(np.abs(got - expected)))
        log.warning("version %s: fast path differs from scikit-learn by %.3g; not used", model.version, worst)
        return model.predict_proba, "scikit-learn"

    def score(X: np.ndarray) -> np.ndarray:
        return forest.predict_proba(X) if len(X) <= MAX_FAST_ROWS else model.predict_proba(X)

    return score, "flat-forest"
