"""Bins, PSI and the live window, on synthetic rows (nothing running)."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from credit_risk.features import FEATURES
from credit_risk.monitoring.bins import ACT, STABLE, WATCH, band, fit_bins, psi
from credit_risk.monitoring.live import StabilityMonitor
from credit_risk.monitoring.reference import CHARACTERISTICS, SCORE, Reference, card_section
from support.data import synthetic_frame


def _rows(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    X = synthetic_frame(n, seed=seed)[list(FEATURES)].to_numpy(dtype=np.float64, copy=True)
    X[::97, 2] = 98  # some 96/98 reporting codes in a past-due column
    X[1::193, 2] = 96
    scores = 1 / (1 + np.exp(-(X[:, 0] * 2 - 2)))
    return X, scores


@pytest.fixture(scope="module")
def reference() -> Reference:
    X, scores = _rows(5000, seed=1)
    return Reference.from_training(X, scores)


def test_band_edges_follow_the_rule_of_thumb():
    assert [band(v) for v in (0.0, 0.0999, 0.10, 0.25, 0.2501)] == [STABLE, STABLE, WATCH, WATCH, ACT]
    assert band(None) is None


def test_psi_of_identical_shares_is_zero_and_of_a_shift_is_large():
    assert psi(np.array([10, 20, 30]), np.array([1, 2, 3])) == pytest.approx(0.0)
    assert psi(np.array([50, 50]), np.array([90, 10])) > 0.25


def test_count_field_mostly_zero_gets_a_bin_for_zero_not_empty_deciles():
    values = np.array([0.0] * 85 + [1.0] * 10 + [2.0, 3.0, 4.0, 5.0, 98.0])
    bins = fit_bins("x", values, codes=(96.0, 98.0))
    counts = bins.count(values)
    assert bins.labels()[:3] == ["code 96", "code 98", "<= 0"]
    assert counts.tolist()[:4] == [0, 1, 85, 10]
    assert bins.high == 5.0  # the code is no part of the range


def test_reference_round_trips_through_its_json(reference):
    again = Reference.from_dict(json.loads(json.dumps(reference.to_dict())))
    X, scores = _rows(300, seed=2)
    assert np.array_equal(again.tally(X, scores), reference.tally(X, scores))
    assert [b.name for b in again.bins] == list(CHARACTERISTICS)


def test_tally_agrees_with_each_fields_own_binning(reference):
    X, scores = _rows(2000, seed=3)
    X[5, 4] = np.nan
    X[6, 0] = 1e9  # outside the training range
    per_field = reference.split(reference.tally(X, scores))
    cols = np.column_stack([X, scores])
    for i, b in enumerate(reference.bins):
        counts, outside = per_field[i]
        assert counts.tolist() == b.count(cols[:, i]).tolist(), b.name
        assert outside == b.outside(cols[:, i]), b.name


def test_psi_equals_a_computation_with_pandas_cut_on_the_same_edges(reference):
    X, scores = _rows(3000, seed=4)
    X = X[X[:, 0] > np.quantile(X[:, 0], 0.5)]  # only the higher utilisations
    scores = 1 / (1 + np.exp(-(X[:, 0] * 2 - 2)))
    figures = reference.figures(reference.tally(X, scores))
    b = reference.bins[0]
    edges = [-np.inf, *b.edges, np.inf]
    live = pd.cut(pd.Series(X[:, 0]), edges, right=True).value_counts(sort=False).to_numpy()
    ref = reference.counts[0]
    e, a = np.maximum(ref / ref.sum(), 1e-4), np.maximum(live / live.sum(), 1e-4)
    assert figures[FEATURES[0]].psi == pytest.approx(float(np.sum((a - e) * np.log(a / e))), rel=1e-12)
    assert figures[FEATURES[0]].band == ACT


def test_rows_from_the_same_population_are_stable(reference):
    X, scores = _rows(5000, seed=7)
    figures = reference.figures(reference.tally(X, scores))
    assert {name: f.band for name, f in figures.items()} == dict.fromkeys(CHARACTERISTICS, STABLE)
    assert figures["MonthlyIncome"].missing_share == pytest.approx(0.15, abs=0.03)


def test_live_window_rolls_in_blocks_and_keeps_counts_only(reference):
    monitor = StabilityMonitor(capacity=100)
    X, scores = _rows(250, seed=8)
    for i in range(250):
        monitor.observe("1", reference, X[i : i + 1], scores[i : i + 1])
    rows, figures = monitor.figures("1")
    assert 90 <= rows <= 100
    assert figures[SCORE].window_size == rows
    assert monitor.figures("2") is None
    monitor.observe("2", None, X[:1], scores[:1])  # a version without a reference is not counted
    assert monitor.figures("2") is None


def test_card_section_lists_every_characteristic(reference):
    text = card_section(reference)
    assert text.startswith("## Stability reference")
    for name in CHARACTERISTICS:
        assert f"| {name} |" in text


def test_a_batch_fills_blocks_exactly_so_the_window_never_exceeds_its_capacity(reference):
    monitor = StabilityMonitor(capacity=1000)
    X, scores = _rows(2600, seed=9)
    monitor.observe("1", reference, X[:1000], scores[:1000])
    assert monitor.figures("1")[0] == 1000
    monitor.observe("1", reference, X[1000:2600], scores[1000:2600])
    rows, figures = monitor.figures("1")
    assert rows == 1000
    expected = reference.figures(reference.tally(X[1600:], scores[1600:]))
    assert figures["age"].psi == pytest.approx(expected["age"].psi)


def test_the_api_side_of_monitoring_imports_neither_pandas_nor_matplotlib():
    # The API image is being slimmed (no pandas, no matplotlib): the live window must work without
    # them. scikit-learn imports pandas when it is installed, so both are made unimportable here.
    code = (
        "import sys; sys.modules['pandas'] = sys.modules['matplotlib'] = None;"
        "import numpy as np; from credit_risk.monitoring.live import StabilityMonitor;"
        "from credit_risk.monitoring.reference import Reference;"
        "r = Reference.from_training(np.random.rand(100, 10), np.random.rand(100));"
        "StabilityMonitor(50).observe('1', r, np.random.rand(3, 10), np.random.rand(3))"
    )
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).returncode == 0
