"""The offline stability report: the same figures as the API's window, on logged predictions.

Logged as a run of the monitoring experiment: `psi.<characteristic>` metrics, a PNG per
characteristic in `watch` or `act` (reference shares against current ones), `summary.json` and
`report.md` for a risk officer. matplotlib lives here only (not in the API).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, datetime

import mlflow
import numpy as np
from matplotlib.figure import Figure

from credit_risk.monitoring.bins import ACT, STABLE, WATCH, worst
from credit_risk.monitoring.predictions import LoggedPredictions
from credit_risk.monitoring.reference import Figures, Reference

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class StabilityReport:
    """Figures per characteristic over some logged predictions of one version."""

    model_name: str
    version: str
    period: str
    rows: int
    figures: dict[str, Figures]
    shares: dict[str, tuple[list[str], list[float], list[float]]]  # labels, reference, current

    @property
    def band(self) -> str | None:
        """The worst band of all characteristics."""
        return worst([f.band for f in self.figures.values()])

    def summary(self) -> dict:
        """The JSON summary."""
        return {
            "model_name": self.model_name,
            "model_version": self.version,
            "period": self.period,
            "predictions": self.rows,
            "band": self.band,
            "characteristics": {name: f.to_dict() for name, f in self.figures.items()},
        }


def stability_report(
    reference: Reference, logged: LoggedPredictions, model_name: str, version: str, period: str
) -> StabilityReport:
    """Tally the logged rows on the reference's bins and compute every characteristic's figures."""
    counts = reference.tally(logged.X, logged.probability)
    figures = reference.figures(counts)
    shares = {}
    for b, ref, (live, _) in zip(reference.bins, reference.counts, reference.split(counts), strict=True):
        shares[b.name] = (
            b.labels(),
            (ref / max(ref.sum(), 1)).tolist(),
            (live / max(live.sum(), 1)).tolist(),
        )
    return StabilityReport(model_name, version, period, len(logged), figures, shares)


def _plot(name: str, figures: Figures, shares: tuple[list[str], list[float], list[float]]) -> Figure:
    labels, ref, cur = shares
    fig = Figure(figsize=(max(6.0, 0.6 * len(labels)), 4.0))
    ax = fig.subplots()
    x = np.arange(len(labels))
    ax.bar(x - 0.2, ref, 0.4, label="training split")
    ax.bar(x + 0.2, cur, 0.4, label="current")
    ax.set_xticks(x, labels, rotation=45, ha="right", fontsize=8)
    ax.set_ylabel("share")
    ax.set_title(f"{name}: PSI {figures.psi:.3f} ({figures.band})")
    ax.legend()
    fig.tight_layout()
    return fig


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value:.1%}"


def markdown(report: StabilityReport, performance: str = "") -> str:
    """The report a risk officer opens."""
    lines = [
        f"# Stability report: {report.model_name} version {report.version}",
        "",
        f"Period: {report.period}. Predictions: {report.rows:,}. Overall band: **{report.band}**.",
        "",
        "PSI against the training split, on the bins fixed at training: under 0.10 stable, "
        "0.10 to 0.25 watch, above 0.25 act.",
        "",
        "| characteristic | PSI | band | missing | outside training range |",
        "| --- | --- | --- | --- | --- |",
    ]
    for name, f in report.figures.items():
        value = "-" if f.psi is None else f"{f.psi:.4f}"
        plot = f" ([plot](plots/psi_{name}.png))" if f.band in (WATCH, ACT) else ""
        lines.append(
            f"| {name} | {value} | {f.band or '-'}{plot} | {_pct(f.missing_share)} | "
            f"{_pct(f.outside_range_share)} |"
        )
    if performance:
        lines += ["", performance]
    return "\n".join(lines) + "\n"


def log_report(
    experiment_id: str,
    report: StabilityReport,
    performance: dict | None = None,
    performance_md: str = "",
) -> str:
    """Log the report as a run; returns its id."""
    run_name = f"stability-v{report.version}-{datetime.now(UTC):%Y%m%dT%H%M%S}"
    with mlflow.start_run(experiment_id=experiment_id, run_name=run_name) as run:
        mlflow.set_tags(
            {"model_name": report.model_name, "model_version": report.version, "band": str(report.band)}
        )
        mlflow.log_params({"period": report.period, "predictions": report.rows})
        metrics = {f"psi.{name}": f.psi for name, f in report.figures.items() if f.psi is not None}
        metrics.update(
            {f"missing_share.{n}": f.missing_share for n, f in report.figures.items() if f.missing_share}
        )
        metrics.update(
            {
                f"outside_range_share.{n}": f.outside_range_share
                for n, f in report.figures.items()
                if f.outside_range_share
            }
        )
        metrics["predictions"] = float(report.rows)
        for key, value in (performance or {}).get("metrics", {}).items():
            metrics[key] = value
        mlflow.log_metrics(metrics)
        for name, f in report.figures.items():
            if f.band in (WATCH, ACT):
                mlflow.log_figure(_plot(name, f, report.shares[name]), f"plots/psi_{name}.png")
        summary = report.summary()
        if performance:
            summary["performance"] = performance["table"]
        mlflow.log_dict(summary, "summary.json")
        mlflow.log_text(markdown(report, performance_md), "report.md")
    return run.info.run_id


__all__ = ["ACT", "STABLE", "WATCH", "StabilityReport", "log_report", "markdown", "stability_report"]
