"""The stability reference: bins and counts of the training split, fixed when a version is trained.

The trainer logs it as `stability_reference.json` on the version's run; the API loads it beside
the model; the offline report reads it from the same run. Everything here is numpy and the
standard library (the API image has no pandas).

`Reference.tally` turns rows and scores into one flat count vector: the bins of every
characteristic (the ten inputs, then the score), then one "outside the training range" count per
characteristic. Counts add, so a live window is a sum of tallies and keeps no rows.
"""

from __future__ import annotations

import json
import logging
import tempfile
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from credit_risk.features import FEATURES, NULLABLE, PAST_DUE, PAST_DUE_CODES
from credit_risk.monitoring.bins import ACT_FROM, WATCH_FROM, FieldBins, band, fit_bins, psi

log = logging.getLogger(__name__)

REFERENCE_ARTIFACT = "stability_reference.json"
FORMAT_VERSION = 1
SCORE = "score"
CHARACTERISTICS: tuple[str, ...] = (*FEATURES, SCORE)


@dataclass(frozen=True)
class Figures:
    """The stability figures of one characteristic over some population."""

    psi: float | None
    band: str | None
    window_size: int
    missing_share: float | None
    outside_range_share: float | None

    def to_dict(self) -> dict:
        """JSON-ready form."""
        return {
            "psi": self.psi,
            "band": self.band,
            "window_size": self.window_size,
            "missing_share": self.missing_share,
            "outside_range_share": self.outside_range_share,
        }


class Reference:
    """Bins and training counts of every characteristic, with a vectorised tally on them."""

    def __init__(self, bins: list[FieldBins], counts: list[np.ndarray], meta: dict | None = None):
        if [b.name for b in bins] != list(CHARACTERISTICS):
            raise ValueError(f"a reference covers {list(CHARACTERISTICS)}, got {[b.name for b in bins]}")
        self.bins = bins
        self.counts = [np.asarray(c, dtype=np.int64) for c in counts]
        self.meta = dict(meta or {})
        self.rows = int(self.counts[0].sum())
        self._compile()

    def _compile(self) -> None:
        """Padded arrays so that one tally is a handful of numpy calls, whatever the row count."""
        k = len(self.bins)
        width = max(1, *(len(b.edges) for b in self.bins))
        self._edges = np.full((k, width), np.inf)
        self._codes = np.full((k, len(PAST_DUE_CODES)), np.nan)
        sizes = np.array([b.n_bins for b in self.bins])
        self.offsets = np.concatenate([[0], np.cumsum(sizes)[:-1]])
        self.n_bins_total = int(sizes.sum())
        self.size = self.n_bins_total + k  # then one outside-range counter per characteristic
        self._has_missing = np.array([b.has_missing for b in self.bins])
        self._numeric_base = self.offsets + self._has_missing + np.array([len(b.codes) for b in self.bins])
        self._code_base = self.offsets + self._has_missing
        self._low = np.array([b.low for b in self.bins])
        self._high = np.array([b.high for b in self.bins])
        self._outside_slot = self.n_bins_total + np.arange(k)
        for i, b in enumerate(self.bins):
            self._edges[i, : len(b.edges)] = b.edges
            self._codes[i, : len(b.codes)] = b.codes

    # -- building and storing -------------------------------------------------------------

    @classmethod
    def from_training(cls, X: np.ndarray, scores: np.ndarray, meta: dict | None = None) -> Reference:
        """Fit the bins on the training split (FEATURES order) and its scores, and count it."""
        X = np.asarray(X, dtype=np.float64)
        columns = np.column_stack([X, np.asarray(scores, dtype=np.float64)])
        bins = [
            fit_bins(
                name,
                columns[:, i],
                codes=tuple(float(c) for c in PAST_DUE_CODES) if name in PAST_DUE else (),
                nullable=name in NULLABLE,
            )
            for i, name in enumerate(CHARACTERISTICS)
        ]
        counts = [b.count(columns[:, i]) for i, b in enumerate(bins)]
        meta = {"created_at": datetime.now(UTC).isoformat(timespec="seconds"), **(meta or {})}
        return cls(bins, counts, meta)

    def to_dict(self) -> dict:
        """The JSON document logged as REFERENCE_ARTIFACT."""
        return {
            "format": FORMAT_VERSION,
            **self.meta,
            "rows": self.rows,
            "bands": {"watch_from": WATCH_FROM, "act_above": ACT_FROM},
            "characteristics": {
                b.name: {**b.to_dict(), "labels": b.labels(), "counts": c.tolist()}
                for b, c in zip(self.bins, self.counts, strict=True)
            },
        }

    @classmethod
    def from_dict(cls, d: dict) -> Reference:
        """Read a REFERENCE_ARTIFACT document (ValueError when it is not one we can use)."""
        if d.get("format") != FORMAT_VERSION:
            raise ValueError(f"stability reference format {d.get('format')!r}, expected {FORMAT_VERSION}")
        chars = d["characteristics"]
        bins = [FieldBins.from_dict(name, chars[name]) for name in CHARACTERISTICS]
        counts = [np.asarray(chars[name]["counts"], dtype=np.int64) for name in CHARACTERISTICS]
        for b, c in zip(bins, counts, strict=True):
            if len(c) != b.n_bins:
                raise ValueError(f"{b.name}: {len(c)} counts for {b.n_bins} bins")
        meta = {k: v for k, v in d.items() if k not in ("format", "rows", "bands", "characteristics")}
        return cls(bins, counts, meta)

    # -- counting ---------------------------------------------------------------------------

    def tally(self, X: np.ndarray, scores: np.ndarray) -> np.ndarray:
        """Flat counts (bins of every characteristic, then outside-range counts) of some rows."""
        cols = np.empty((len(scores), len(self.bins)))
        cols[:, :-1] = X
        cols[:, -1] = scores
        return np.bincount(self._flat_bins(cols), minlength=self.size)

    def tally_empty(self) -> np.ndarray:
        """The count vector of no rows."""
        return np.zeros(self.size, dtype=np.int64)

    def _flat_bins(self, cols: np.ndarray) -> np.ndarray:
        # Right-closed intervals: the bin is the number of edges below the value (bins.FieldBins).
        numeric = (self._edges[None, :, :] < cols[:, :, None]).sum(axis=2) + self._numeric_base
        code_hit = cols[:, :, None] == self._codes[None, :, :]
        is_code = code_hit.any(axis=2)
        missing = np.isnan(cols)
        idx = np.where(is_code, self._code_base + code_hit.argmax(axis=2), numeric)
        # NaN where a field has no missing bin lands in its first bin (FieldBins.assign does the same).
        idx = np.where(missing, self.offsets, idx)
        outside = ~missing & ~is_code & ((cols < self._low) | (cols > self._high))
        extra = np.broadcast_to(self._outside_slot, cols.shape)[outside]
        return np.concatenate([idx.ravel(), extra])

    def split(self, counts: np.ndarray) -> list[tuple[np.ndarray, int]]:
        """Per characteristic: (its bin counts, its outside-range count) out of a flat count vector."""
        out = []
        for i, b in enumerate(self.bins):
            start = self.offsets[i]
            out.append((counts[start : start + b.n_bins], int(counts[self.n_bins_total + i])))
        return out

    def figures(self, counts: np.ndarray) -> dict[str, Figures]:
        """PSI, band, window size, missing share and outside-range share of every characteristic."""
        out = {}
        for b, ref, (live, outside) in zip(self.bins, self.counts, self.split(counts), strict=True):
            n = int(live.sum())
            value = psi(ref, live)
            out[b.name] = Figures(
                psi=value,
                band=band(value),
                window_size=n,
                missing_share=(float(live[0]) / n if b.has_missing else 0.0) if n else None,
                outside_range_share=outside / n if n else None,
            )
        return out


def dump(reference: Reference) -> str:
    """The artifact's text."""
    return json.dumps(reference.to_dict(), indent=1)


def load_reference(client, run_id: str) -> Reference | None:
    """The reference logged on a version's run; None when it has none (an older version) or is unreadable."""
    with tempfile.TemporaryDirectory(prefix="credit-risk-reference-") as tmp:
        try:
            path = client.download_artifacts(run_id, REFERENCE_ARTIFACT, tmp)
            return Reference.from_dict(json.loads(Path(path).read_text()))
        except Exception as e:  # no artifact, storage down, or a document we cannot use
            log.warning("no stability reference for run %s: %s", run_id, str(e).splitlines()[0][:300])
            return None


def card_section(reference: Reference) -> str:
    """The model card's "Stability reference" section (Markdown): what PSI will be measured against."""
    lines = [
        "## Stability reference",
        "",
        f"Bins and counts of the training split ({reference.rows:,} rows), logged as "
        f"`{REFERENCE_ARTIFACT}`. The API and `python -m credit_risk.monitor` measure the population "
        f"stability index against it: under {WATCH_FROM:.2f} stable, {WATCH_FROM:.2f} to "
        f"{ACT_FROM:.2f} watch, above {ACT_FROM:.2f} act.",
        "",
        "| characteristic | bins | training range | missing | 96/98 codes |",
        "| --- | --- | --- | --- | --- |",
    ]
    for b, c in zip(reference.bins, reference.counts, strict=True):
        n = max(int(c.sum()), 1)
        missing = f"{c[0] / n:.1%}" if b.has_missing else "-"
        codes = (
            ", ".join(f"{code:g}: {c[int(b.has_missing) + i] / n:.2%}" for i, code in enumerate(b.codes))
            if b.codes
            else "-"
        )
        lines.append(f"| {b.name} | {b.n_bins} | {b.low:.4g} to {b.high:.4g} | {missing} | {codes} |")
    return "\n".join(lines) + "\n"
