"""The test metrics: the names the API shows are the ones the trainer computes, and KS is right;
the plots show their data and their titles."""

from __future__ import annotations

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg

from credit_risk.features import FEATURES
from credit_risk.model_io import TEST_METRICS
from credit_risk.training.evaluation import classification_metrics, ks_statistic, plots


def test_trainer_computes_exactly_the_metrics_the_api_shows():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 500)
    proba = np.clip(0.3 * y + rng.random(500) * 0.7, 0, 1)
    assert tuple(classification_metrics(y, proba, 0.5)) == TEST_METRICS


def test_ks_is_the_largest_gap_between_the_two_score_distributions():
    rng = np.random.default_rng(1)
    y = rng.integers(0, 2, 2000)
    proba = rng.beta(2 + 2 * y, 5 - 2 * y)
    cuts = np.unique(proba)
    bad = np.searchsorted(np.sort(proba[y == 1]), cuts, side="right") / (y == 1).sum()
    good = np.searchsorted(np.sort(proba[y == 0]), cuts, side="right") / (y == 0).sum()
    assert np.isclose(ks_statistic(y, proba), np.max(good - bad), rtol=0, atol=1e-12)


def test_plots_zoom_calibration_to_the_data_and_keep_every_title_inside_the_image():
    rng = np.random.default_rng(2)
    proba = rng.beta(1, 12, 3000)  # like the real file: every probability far below 1
    y = (rng.random(3000) < proba).astype(int)
    long_names = {f"{name}_with_a_long_suffix": 0.01 * i for i, name in enumerate(FEATURES)}
    figures = plots(y, proba, long_names)

    calibration = figures["calibration_curve.png"].axes[0]
    assert calibration.get_xlim()[1] < 0.5 and calibration.get_ylim()[1] < 0.5

    for name, fig in figures.items():
        canvas = FigureCanvasAgg(fig)  # the renderer savefig uses for PNG
        canvas.draw()  # constrained layout runs at draw time
        renderer = canvas.get_renderer()
        image = fig.bbox
        for ax in fig.axes:
            title = ax.title.get_window_extent(renderer)
            assert image.x0 <= title.x0 and title.x1 <= image.x1, f"{name}: title cut off"
            assert title.y1 <= image.y1, f"{name}: title above the image"
            labels = ax.get_yticklabels()
            assert all(t.get_window_extent(renderer).x0 >= image.x0 for t in labels), f"{name}: labels cut"
