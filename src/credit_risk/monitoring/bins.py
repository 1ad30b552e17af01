"""Fixed bins and the population stability index (PSI) on them; numpy and the standard library only.

A characteristic's bins are fixed at training (monitoring.reference): a bin for missing values
(nullable fields only), one per 96/98 reporting code (past-due fields only), then the numeric
bins cut at the training deciles. Intervals are closed on the right, as in pandas.cut:
(-inf, e0], (e0, e1], ..., (e_last, +inf), so a count field that is mostly 0 gets a bin of its
own for 0 instead of empty decile bins. The API's live window and the offline report both call
`FieldBins.assign`, so both compute PSI on exactly the same bins.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np

# Bands of credit scoring's rule of thumb (docs/monitoring.md).
STABLE, WATCH, ACT = "stable", "watch", "act"
WATCH_FROM, ACT_FROM = 0.10, 0.25
# A bin empty on one side would make PSI infinite; its share is floored at this value instead
# (the usual practice; 1e-4 adds at most ~0.001 per empty bin at the shares seen here).
SHARE_FLOOR = 1e-4
DECILES = np.linspace(0.1, 0.9, 9)


def band(psi: float | None) -> str | None:
    """`stable` under 0.10, `watch` from 0.10 to 0.25, `act` above; None when there is no figure."""
    if psi is None or not np.isfinite(psi):
        return None
    if psi > ACT_FROM:
        return ACT
    return WATCH if psi >= WATCH_FROM else STABLE


def worst(bands: list[str | None]) -> str | None:
    """The most severe of some bands (None when there is none)."""
    order = {STABLE: 0, WATCH: 1, ACT: 2}
    known = [b for b in bands if b is not None]
    return max(known, key=order.__getitem__) if known else None


def psi(expected: np.ndarray, actual: np.ndarray) -> float | None:
    """PSI = sum((a - e) * ln(a / e)) over bins, on shares of two count vectors; None if one is empty."""
    e_total, a_total = float(np.sum(expected)), float(np.sum(actual))
    if e_total <= 0 or a_total <= 0:
        return None
    e = np.maximum(np.asarray(expected, dtype=np.float64) / e_total, SHARE_FLOOR)
    a = np.maximum(np.asarray(actual, dtype=np.float64) / a_total, SHARE_FLOOR)
    return float(np.sum((a - e) * np.log(a / e)))


@dataclass(frozen=True)
class FieldBins:
    """The bins of one characteristic: [missing], [one per code], then len(edges) + 1 numeric bins."""

    name: str
    edges: tuple[float, ...]
    codes: tuple[float, ...] = ()
    has_missing: bool = False
    low: float = float("nan")  # the training range of the numeric values (codes excluded)
    high: float = float("nan")

    @property
    def n_bins(self) -> int:
        """How many bins in all."""
        return int(self.has_missing) + len(self.codes) + len(self.edges) + 1

    def labels(self) -> list[str]:
        """A readable label per bin, in bin order."""
        out = ["missing"] if self.has_missing else []
        out += [f"code {c:g}" for c in self.codes]
        cuts = [f"{e:.4g}" for e in self.edges]
        if not cuts:
            return [*out, "all"]
        out.append(f"<= {cuts[0]}")
        out += [f"({a}, {b}]" for a, b in itertools.pairwise(cuts)]
        out.append(f"> {cuts[-1]}")
        return out

    def assign(self, values: np.ndarray) -> np.ndarray:
        """The bin index of each value (int64)."""
        x = np.asarray(values, dtype=np.float64)
        first_numeric = int(self.has_missing) + len(self.codes)
        out = np.searchsorted(np.asarray(self.edges), x, side="left") + first_numeric
        for i, code in enumerate(self.codes):
            out[x == code] = int(self.has_missing) + i
        missing = np.isnan(x)
        if missing.any():
            # A field without a missing bin never sees NaN from the API (validation); the offline
            # report may, from a hand-edited log: it lands in the first bin rather than failing.
            out[missing] = 0
        return out

    def count(self, values: np.ndarray) -> np.ndarray:
        """Counts per bin of some values."""
        return np.bincount(self.assign(values), minlength=self.n_bins)

    def outside(self, values: np.ndarray) -> int:
        """How many numeric values (not missing, not a code) fall outside the training range."""
        x = np.asarray(values, dtype=np.float64)
        numeric = ~np.isnan(x)
        for code in self.codes:
            numeric &= x != code
        return int(np.count_nonzero(numeric & ((x < self.low) | (x > self.high))))

    def to_dict(self) -> dict:
        """JSON-ready form."""
        return {
            "edges": list(self.edges),
            "codes": list(self.codes),
            "has_missing": self.has_missing,
            "low": self.low,
            "high": self.high,
        }

    @classmethod
    def from_dict(cls, name: str, d: dict) -> FieldBins:
        """The inverse of to_dict."""
        return cls(
            name,
            tuple(float(e) for e in d["edges"]),
            tuple(float(c) for c in d.get("codes", ())),
            bool(d.get("has_missing", False)),
            float(d["low"]),
            float(d["high"]),
        )


def fit_bins(
    name: str, values: np.ndarray, codes: tuple[float, ...] = (), nullable: bool = False
) -> FieldBins:
    """Bins from the training values: deciles of the numeric values, own bins for missing and codes."""
    x = np.asarray(values, dtype=np.float64)
    numeric = x[~np.isnan(x)]
    for code in codes:
        numeric = numeric[numeric != code]
    if numeric.size == 0:
        return FieldBins(name, (), tuple(codes), nullable)
    # Unique cut points: a field that is 0 for most rows has fewer than 9 (see the module doc).
    # The top value is no cut: a bin "(max, inf)" would be empty at training by construction.
    edges = np.unique(np.quantile(numeric, DECILES, method="lower"))
    top = float(numeric.max())
    edges = tuple(float(e) for e in edges if e < top)
    return FieldBins(name, edges, tuple(float(c) for c in codes), nullable, float(numeric.min()), top)
