"""Reason codes: exact contributions of the served model, folded into the applicant's own fields (issue 11).

Shared by the API (reasons on declines) and the trainer (the model card's table). The import is
light on purpose: numpy and scikit-learn's pipeline classes only, no pandas, matplotlib or mlflow.

Contributions are in log-odds, the model's raw score, and exact for the model served:
- logistic regression: coefficient * transformed (imputed, log1p, standardised) value, the
  intercept as the base;
- HistGradientBoosting: path-dependent TreeSHAP, the values `shap.TreeExplainer` gives (a test
  checks them against the library), computed here without shap and numba (see `TreeShap`).
Either way base + sum of contributions = the model's log-odds (local accuracy).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np

from credit_risk.constraints import MODEL_FEATURES
from credit_risk.features import FEATURES, NULLABLE, PAST_DUE, is_past_due_code

MAX_REASONS = 4
# Regulation B §1002.6(b)(2): age may not count against an applicant aged 62 or older.
ELDERLY_AGE = 62


@dataclass(frozen=True)
class ReasonCode:
    """One adverse-action reason: its stable code, the field it comes from, the wording."""

    code: str
    feature: str
    text: str


# The one table of reasons. A field has a second code for the state that is itself the reason
# (income or dependents not reported, a past-due count given as a 96/98 reporting code).
REASON_CODES: tuple[ReasonCode, ...] = (
    ReasonCode(
        "R01",
        "RevolvingUtilizationOfUnsecuredLines",
        "Proportion of revolving balances to credit limits is too high",
    ),
    ReasonCode("R02", "NumberOfTimes90DaysLate", "Too many payments 90 or more days past due"),
    ReasonCode("R03", "NumberOfTime60_89DaysPastDueNotWorse", "Too many payments 60 to 89 days past due"),
    ReasonCode("R04", "NumberOfTime30_59DaysPastDueNotWorse", "Too many payments 30 to 59 days past due"),
    ReasonCode("R05", "DebtRatio", "Debt obligations are too high relative to income"),
    ReasonCode("R06", "MonthlyIncome", "Income insufficient for the obligations reported"),
    ReasonCode("R07", "MonthlyIncome", "Income not reported"),
    ReasonCode("R08", "NumberOfOpenCreditLinesAndLoans", "Number of open credit lines and loans"),
    ReasonCode("R09", "NumberRealEstateLoansOrLines", "Number of real estate loans or lines"),
    ReasonCode("R10", "NumberOfDependents", "Number of dependents relative to income"),
    ReasonCode("R11", "NumberOfDependents", "Number of dependents not reported"),
    ReasonCode("R12", "age", "Age of applicant"),
    ReasonCode("R13", "NumberOfTimes90DaysLate", "Delinquency history reported with a special status code"),
)
_CODE_INDEX = {r.code: i for i, r in enumerate(REASON_CODES)}
_PRESENT = {r.feature: r.code for r in reversed(REASON_CODES)}  # the first code of each field
_MISSING = {"MonthlyIncome": "R07", "NumberOfDependents": "R11"}
_CODED = "R13"
_AGE = FEATURES.index("age")
_PAST_DUE_IDX = [FEATURES.index(c) for c in PAST_DUE]
_INCOME = FEATURES.index("MonthlyIncome")
_DEPENDENTS = FEATURES.index("NumberOfDependents")
_CODED_BITS = 4 << np.arange(len(PAST_DUE))  # bits 2, 3, 4: each count given as a code


def _state(X: np.ndarray) -> np.ndarray:
    """Each row's folding state as 5 bits: income missing, dependents missing, each count coded."""
    coded = is_past_due_code(X[:, _PAST_DUE_IDX]).astype(np.intp)
    return np.isnan(X[:, _INCOME]).astype(np.intp) + 2 * np.isnan(X[:, _DEPENDENTS]) + coded @ _CODED_BITS


@functools.cache
def _fold_matrix(state: int) -> np.ndarray:
    """model features -> reason codes for one state: where each contribution goes (13 * codes)."""
    income_missing, dependents_missing = bool(state & 1), bool(state & 2)
    coded = [bool(state & (4 << k)) for k in range(len(PAST_DUE))]
    m = np.zeros((len(MODEL_FEATURES), len(REASON_CODES)))
    col = {name: i for i, name in enumerate(MODEL_FEATURES)}
    for name, code in _PRESENT.items():
        if name in PAST_DUE:
            continue
        missing = {"MonthlyIncome": income_missing, "NumberOfDependents": dependents_missing}.get(name, False)
        target = _CODE_INDEX[_MISSING[name] if missing else code]
        m[col[name], target] = 1.0
        if name in _MISSING:  # the flag folds into its field
            m[col["income_missing" if name == "MonthlyIncome" else "dependents_missing"], target] = 1.0
    # The 96/98 flag is shared by the coded counts; with none coded, by all three counts equally.
    sharing = [k for k in range(len(PAST_DUE)) if coded[k]] or list(range(len(PAST_DUE)))
    for k, name in enumerate(PAST_DUE):
        target = _CODE_INDEX[_CODED if coded[k] else _PRESENT[name]]
        m[col[name], target] += 1.0
        if k in sharing:
            m[col["past_due_code_flag"], target] += 1.0 / len(sharing)
    return m


def fold(X: np.ndarray, contributions: np.ndarray) -> np.ndarray:
    """Contributions over the 13 model features -> contributions per reason code (rows * codes).

    A flag folds into the field it is computed from, and the field's code follows its state:
    a missing income is "Income not reported"; the 96/98 code flag and the coded counts go to R13.
    Linear for a given state (which fields are missing or coded): one matrix per state.
    """
    states = _state(X)
    if len(X) == 1:
        return contributions @ _fold_matrix(int(states[0]))
    out = np.empty((len(X), len(REASON_CODES)))
    for state in np.unique(states).tolist():
        rows = states == state
        out[rows] = contributions[rows] @ _fold_matrix(state)
    return out


_AGE_CODES = np.array([r.feature == "age" for r in REASON_CODES])
_CODE_FEATURE = np.array([FEATURES.index(r.feature) for r in REASON_CODES], dtype=np.intp)


def top_reasons(X: np.ndarray, by_code: np.ndarray, max_reasons: int = MAX_REASONS) -> list[list[dict]]:
    """Per row, the codes that raised the risk (contribution > 0), largest first, at most `max_reasons`.

    Age is never a reason for an applicant aged 62 or older, whatever its contribution.
    """
    if max_reasons <= 0 or len(X) == 0:
        return [[] for _ in range(len(X))]
    allowed = np.where(_AGE_CODES[None, :] & (X[:, _AGE] >= ELDERLY_AGE)[:, None], -np.inf, by_code)
    order = np.argsort(-allowed, axis=1, kind="stable")[:, :max_reasons]
    top = np.take_along_axis(allowed, order, axis=1)
    values = X[:, _CODE_FEATURE]
    out = []
    for i, (codes, contributions) in enumerate(zip(order.tolist(), top.tolist(), strict=True)):
        row = []
        for c, contribution in zip(codes, contributions, strict=True):
            if not contribution > 0:
                break
            rc = REASON_CODES[c]
            value = values[i, c]
            row.append(
                {
                    "code": rc.code,
                    "feature": rc.feature,
                    "text": rc.text,
                    "value": None if value != value else float(value),  # NaN: not reported
                    "contribution": contribution,
                }
            )
        out.append(row)
    return out


def reasons_for(
    explainer, X: np.ndarray, preds: np.ndarray, explain_all: bool, max_reasons: int = MAX_REASONS
) -> list[list[dict]]:
    """Reasons for each row: for declines (prediction 1), and for every row when `explain_all`."""
    n = len(X)
    rows = np.arange(n) if explain_all else np.flatnonzero(preds == 1)
    out: list[list[dict]] = [[] for _ in range(n)]
    if explainer is None or max_reasons <= 0 or len(rows) == 0:
        return out
    part = X[rows]
    contributions = explainer.contributions(part)
    for i, reasons in zip(
        rows.tolist(), top_reasons(part, fold(part, contributions), max_reasons), strict=True
    ):
        out[i] = reasons
    return out


def reason_table() -> list[dict[str, str]]:
    """The code table as served by `GET /model/reasons` and printed in the model card."""
    return [r.__dict__.copy() for r in REASON_CODES]


class LinearContributions:
    """Coefficient * transformed value for a pipeline ending in a logistic regression."""

    kind = "linear"

    def __init__(self, pipeline):
        *steps, (_, lr) = pipeline.steps
        self._steps = [s for _, s in steps]
        self._coef = np.asarray(lr.coef_, dtype=np.float64).ravel()
        self.base = float(np.ravel(lr.intercept_)[0])

    def contributions(self, X: np.ndarray) -> np.ndarray:
        for s in self._steps:
            X = s.transform(X)
        return np.asarray(X, dtype=np.float64) * self._coef


@functools.cache  # a handful of k (a path's depth), asked for once per leaf
def _gauss_legendre_01(k: int) -> tuple[np.ndarray, np.ndarray]:
    t, w = np.polynomial.legendre.leggauss(k)
    return (t + 1) / 2, w / 2


def _leaf_table(z: np.ndarray, value: float) -> np.ndarray:
    """Shapley values of one leaf's game for every pattern of its path's features (2^d * d).

    The leaf's share of E[f | x_S] is value * prod_{j in S} o_j * prod_{j not in S} z_j, with o_j
    whether x satisfies the path's conditions on feature j and z_j the fraction of training rows
    (cover) that does. The Shapley value of such a product game is (o_i - z_i) * the integral over
    t in [0, 1] of prod_{j != i} (t o_j + (1 - t) z_j): a polynomial of degree d - 1, integrated
    exactly by Gauss-Legendre with d // 2 + 1 nodes.
    """
    d = len(z)
    patterns = ((np.arange(2**d)[:, None] >> np.arange(d)) & 1).astype(np.float64)  # (P, d)
    t, w = _gauss_legendre_01(d // 2 + 1)
    factors = t[:, None, None] * patterns[None] + (1 - t)[:, None, None] * z[None, None, :]  # (K, P, d)
    phi = np.zeros((2**d, d))
    for i in range(d):
        others = np.prod(np.delete(factors, i, axis=2), axis=2)  # (K, P)
        phi[:, i] = (patterns[:, i] - z[i]) * (w @ others)
    return value * phi


class TreeShap:
    """Path-dependent TreeSHAP for a binary HistGradientBoostingClassifier, as shap computes it.

    A tree's values depend on x only through which side of each of the tree's thresholds x falls
    (and whether a value is missing), so each tree gets a table over its cells (the product of
    its features' intervals) built at load from the leaves' product games (`_leaf_table`).
    Scoring rows is then three vectorised steps over all trees at once: a global bin per
    feature, a cell per tree (lookup tables give each feature's part of the cell index), and a
    sum of the cells' table entries per feature. Exact up to float rounding; a test checks it
    against shap's own TreeExplainer.
    """

    kind = "tree_shap"
    MAX_CELLS = 1 << 15  # per table: a tree with more cells is cut into groups of leaves

    def __init__(self, pipeline, nullable: frozenset[int] | None = None):
        *steps, (_, hgb) = pipeline.steps
        if getattr(hgb, "n_trees_per_iteration_", None) != 1 or not hasattr(hgb, "_predictors"):
            raise TypeError("the last step is not a binary HistGradientBoostingClassifier")
        if getattr(hgb, "_preprocessor", None) is not None:
            raise TypeError("categorical features are not supported")
        trees = [p[0].nodes for p in hgb._predictors]
        if any(t["is_categorical"].any() for t in trees):
            raise TypeError("categorical splits are not supported")
        self._steps = [s for _, s in steps]
        n_features = int(hgb.n_features_in_)
        self.n_features = n_features
        # Only these columns may be missing: the others get no missing cell (smaller tables).
        self._nullable = frozenset(range(n_features)) if nullable is None else frozenset(nullable)
        self._not_nullable = np.array(sorted(set(range(n_features)) - self._nullable), dtype=np.intp)
        thresholds = [set() for _ in range(n_features)]
        for t in trees:
            inner = t[~t["is_leaf"].astype(bool)]
            for f, th in zip(inner["feature_idx"], inner["num_threshold"], strict=True):
                thresholds[int(f)].add(float(th))
        # Global bin b of feature f holds (g[b-1], g[b]]; bin len(g) is above all, len(g) + 1 missing.
        self._global = [np.array(sorted(s)) for s in thresholds]
        self._missing_bin = [len(g) + 1 for g in self._global]
        n_bins = max(len(g) for g in self._global) + 2
        base = float(np.ravel(hgb._baseline_prediction)[0])
        luts, entry_feature, entry_tree, entry_col, offsets, widths = [], [], [], [], [], []
        size = 0
        groups = []
        for t in trees:
            expected, tables = self._tree_tables(t)
            base += expected  # a single-leaf tree is a constant: all of it in the base
            groups.extend(tables)
        for table, feats, local in groups:
            ti = len(offsets)  # the group's index
            stride = 1
            for k, (f, th) in enumerate(zip(feats, local, strict=True)):
                g = self._global[f]
                lut = np.zeros(n_bins, dtype=np.intp)
                lut[: len(g) + 1] = np.searchsorted(th, np.append(g, np.inf), side="left") * stride
                if f in self._nullable:
                    lut[len(g) + 1] = (len(th) + 1) * stride
                luts.append(lut)
                entry_feature.append(f)
                entry_tree.append(ti)
                entry_col.append(k)
                stride *= self._n_local(f, th)
            offsets.append(size)
            widths.append(len(feats))
            size += table.size
        self.base = base
        self.n_trees = len(offsets)
        self._lut = np.array(luts, dtype=np.intp)  # (entries, n_bins): a feature's part of a tree's cell
        self._entry_feature = np.array(entry_feature, dtype=np.intp)
        self._entry_tree = np.array(entry_tree, dtype=np.intp)
        self._entry_rows = np.arange(len(luts))
        self._tree_starts = np.searchsorted(self._entry_tree, np.arange(self.n_trees))
        # Every tree's (cells * its features) table, flattened: filled in place, each group's table
        # dropped once copied. A concatenate would hold them all twice at the peak: tens of MiB
        # per model, in a swap while the old model still serves.
        self._table = np.empty(size)
        for start in reversed(offsets):
            table = groups.pop()[0]
            self._table[start : start + table.size] = table.ravel()
        table = None  # the last group's
        self._entry_base = np.array(offsets, dtype=np.intp)[self._entry_tree] + np.array(
            entry_col, dtype=np.intp
        )
        self._entry_width = np.array(widths, dtype=np.intp)[self._entry_tree]
        # Sums the entries' values into the model's features (entries * features, one 1 per row).
        self._to_feature = np.zeros((len(luts), n_features))
        self._to_feature[self._entry_rows, self._entry_feature] = 1.0
        self.cells = size
        # The same, tree by tree, for big blocks: (its features, their lookup tables, its table).
        self._trees = []
        for ti, start in enumerate(offsets):
            rows = np.flatnonzero(self._entry_tree == ti)
            feats = self._entry_feature[rows]
            n_cells = (len(self._table) if ti + 1 == len(offsets) else offsets[ti + 1]) - start
            table = self._table[start : start + n_cells].reshape(-1, len(feats))
            self._trees.append((feats, [self._lut[r] for r in rows], table))
        # Every feature's global thresholds in one row, for the few-rows binning.
        self._all_thresholds = np.concatenate(self._global)
        self._threshold_feature = np.repeat(np.arange(n_features), [len(g) for g in self._global])
        counts = np.array([len(g) for g in self._global])
        if (counts == 0).any():  # reduceat needs a non-empty segment per feature
            self._all_thresholds = np.concatenate(
                [np.append(g, np.inf) if len(g) == 0 else g for g in self._global]
            )
            self._threshold_feature = np.repeat(np.arange(n_features), np.maximum(counts, 1))
        self._threshold_starts = np.concatenate([[0], np.cumsum(np.maximum(counts, 1))[:-1]])
        self._missing = np.array(self._missing_bin, dtype=np.intp)

    def _n_local(self, f: int, th: np.ndarray) -> int:
        return len(th) + (2 if f in self._nullable else 1)

    def _tree_tables(self, nodes):
        """A tree's expected value, and its tables: [(table (cells * features), features, thresholds)].

        The game is a sum over leaves, so a tree whose cells would be too many is cut into
        groups of leaves (halves, recursively), each with a table over its own cells.
        """
        paths = [(float(nodes["value"][leaf]), conditions) for leaf, conditions in self._paths(nodes)]
        expected = sum(v * float(np.prod([c[3] for c in cond.values()])) for v, cond in paths)
        return expected, [t for t in self._group_tables(paths) if t is not None]

    def _group_tables(self, paths):
        feats = sorted({f for _, cond in paths for f in cond})
        if not feats:
            return [None]
        # A group's local thresholds on f: the ends of its leaves' intervals on f.
        local = [
            np.unique([e for _, cond in paths if f in cond for e in cond[f][:2] if np.isfinite(e)])
            for f in feats
        ]
        # One representative value per local bin: th[b] for bin b, +inf above all, then missing.
        reps = [
            np.concatenate([th, [np.inf], [np.nan] if f in self._nullable else []])
            for f, th in zip(feats, local, strict=True)
        ]
        n_cells = int(np.prod([len(r) for r in reps]))
        if n_cells > self.MAX_CELLS:
            if len(paths) == 1:
                raise ValueError(f"a leaf has {n_cells} cells (more than {self.MAX_CELLS})")
            half = len(paths) // 2
            return self._group_tables(paths[:half]) + self._group_tables(paths[half:])
        # Each cell's local bin on each feature (first feature varies fastest), and per feature
        # and local bin whether a leaf's condition holds: the conditions are tested on the few
        # bins, then gathered over the cells.
        grids = np.meshgrid(*(np.arange(len(r)) for r in reps), indexing="ij")
        cell_bins = [g.ravel(order="F") for g in grids]
        table = np.zeros((len(feats), n_cells))  # feature-major while filling: rows contiguous
        col = {f: k for k, f in enumerate(feats)}
        for value, conditions in paths:
            if not conditions:
                continue
            z = np.array([c[3] for c in conditions.values()], dtype=np.float64)
            bits = np.zeros(n_cells, dtype=np.intp)
            for j, (f, (lo, hi, nan_ok, _)) in enumerate(conditions.items()):
                x = reps[col[f]]
                with np.errstate(invalid="ignore"):
                    ok = np.where(np.isnan(x), nan_ok, (x > lo) & (x <= hi)).astype(np.intp) << j
                bits |= ok[cell_bins[col[f]]]
            cols = [col[f] for f in conditions]
            table[cols] += _leaf_table(z, value).T[:, bits]  # (d, cells)
        return [(np.ascontiguousarray(table.T), feats, local)]

    @staticmethod
    def _paths(nodes):
        """(leaf, {feature: (lo, hi, missing follows the path, cover fraction)}) for every leaf."""
        stack = [(0, {})]
        while stack:
            node, cond = stack.pop()
            if nodes["is_leaf"][node]:
                yield node, cond
                continue
            f = int(nodes["feature_idx"][node])
            th = float(nodes["num_threshold"][node])
            miss_left = bool(nodes["missing_go_to_left"][node])
            parent = float(nodes["count"][node])
            for child, left in ((int(nodes["left"][node]), True), (int(nodes["right"][node]), False)):
                lo, hi, nan_ok, z = cond.get(f, (-np.inf, np.inf, True, 1.0))
                lo, hi = (lo, min(hi, th)) if left else (max(lo, th), hi)
                cover = z * float(nodes["count"][child]) / parent
                stack.append((child, {**cond, f: (lo, hi, nan_ok and miss_left == left, cover)}))

    def contributions(self, X: np.ndarray) -> np.ndarray:
        """TreeSHAP values (rows * model features) in log-odds, for raw rows."""
        for s in self._steps:
            X = s.transform(X)
        X = np.asarray(X, dtype=np.float64)
        if len(self._not_nullable) and np.isnan(X[:, self._not_nullable]).any():
            raise ValueError("a value is missing in a column the explainer was built without missing cells")
        if len(X) <= self.SMALL:
            return self._few(X)
        return self._many(X)

    # Up to this many rows all trees are done in one step per stage; above it, tree by tree, so
    # that each tree's table stays in the CPU cache while every row reads it.
    SMALL = 16

    def _bins_few(self, X: np.ndarray) -> np.ndarray:
        # One comparison against every threshold of every feature, counted per feature.
        below = self._all_thresholds < X[:, self._threshold_feature]
        bins = np.add.reduceat(below, self._threshold_starts, axis=1)
        return np.where(np.isnan(X), self._missing, bins)

    def _few(self, X: np.ndarray) -> np.ndarray:
        bins = self._bins_few(X)
        parts = self._lut[self._entry_rows, bins[:, self._entry_feature]]  # (rows, entries)
        cell = np.add.reduceat(parts, self._tree_starts, axis=1)  # (rows, trees)
        values = self._table[self._entry_base + cell[:, self._entry_tree] * self._entry_width]
        return values @ self._to_feature

    def _many(self, X: np.ndarray) -> np.ndarray:
        bins = np.empty((self.n_features, len(X)), dtype=np.intp)  # feature-major: rows contiguous
        for f, g in enumerate(self._global):
            x = X[:, f]
            bins[f] = np.searchsorted(g, x, side="left")
            if f in self._nullable:
                bins[f, np.isnan(x)] = self._missing_bin[f]
        out = np.zeros((self.n_features, len(X)))
        for feats, luts, table in self._trees:
            cell = luts[0][bins[feats[0]]]
            for f, lut in zip(feats[1:], luts[1:], strict=True):
                cell += lut[bins[f]]
            values = table[cell]
            for k, f in enumerate(feats):
                out[f] += values[:, k]
        return out.T


# What CreditFeatures can leave missing: the nullable fields and the past-due counts (96/98).
NULLABLE_MODEL_COLUMNS = frozenset(i for i, f in enumerate(MODEL_FEATURES) if f in NULLABLE or f in PAST_DUE)


def make_explainer(pipeline):
    """The exact contribution method for this pipeline's model family (TypeError if none)."""
    last = pipeline.steps[-1][1]
    if hasattr(last, "coef_"):
        return LinearContributions(pipeline)
    return TreeShap(pipeline, nullable=NULLABLE_MODEL_COLUMNS)
