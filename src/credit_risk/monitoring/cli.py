"""`python -m credit_risk.monitor`: the offline stability report, its exit status the worst band.

    python -m credit_risk.monitor [--version V] [--last N | --since DATE [--until DATE]]

Exit status, for cron or a CI job: 0 stable, 10 watch, 20 act, 2 could not run (no tracking
server, no such version, no reference, no logged predictions, a bad option).
"""

from __future__ import annotations

import argparse
import logging
import sys
from datetime import UTC, datetime

from pydantic import ValidationError

from credit_risk.logs import first_line, setup_logging
from credit_risk.monitoring import performance
from credit_risk.monitoring.bins import ACT, STABLE, WATCH
from credit_risk.monitoring.outcomes import read_outcomes
from credit_risk.monitoring.predictions import read_predictions
from credit_risk.monitoring.reference import load_reference
from credit_risk.monitoring.report import log_report, stability_report
from credit_risk.registry import production_version
from credit_risk.settings import MonitorSettings
from credit_risk.tracking import configure_mlflow, get_or_create_experiment, wait_for_tracking_server

log = logging.getLogger("credit_risk.monitor")

EXIT_STABLE, EXIT_WATCH, EXIT_ACT, EXIT_CANNOT_RUN = 0, 10, 20, 2
EXIT_BY_BAND = {STABLE: EXIT_STABLE, WATCH: EXIT_WATCH, ACT: EXIT_ACT}


class CannotRun(Exception):
    """The report cannot be made; the message says why."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):
        self.exit(EXIT_CANNOT_RUN, f"{self.prog}: error: {message}\n")


def _date_ms(text: str) -> int:
    try:
        day = datetime.fromisoformat(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(f"not an ISO date or time: {text!r}") from e
    if day.tzinfo is None:
        day = day.replace(tzinfo=UTC)
    return int(day.timestamp() * 1000)


def parse_args(argv: list[str]) -> argparse.Namespace:
    """The report's command line."""
    p = _Parser(prog="python -m credit_risk.monitor", description=__doc__.split("\n")[0])
    p.add_argument("--version", help="registered version to report on (default: the Production one)")
    p.add_argument("--model-name", help="registered model (default credit-risk-model)")
    which = p.add_mutually_exclusive_group()
    which.add_argument("--last", type=int, help="the last N logged predictions of the version")
    which.add_argument("--since", type=_date_ms, help="predictions from this UTC date or time on")
    p.add_argument("--until", type=_date_ms, help="predictions before this UTC date or time")
    args = p.parse_args(argv)
    if args.last is not None and args.last < 1:
        p.error("--last must be at least 1")
    if args.until is not None and args.last is not None:
        p.error("--until goes with --since, not --last")
    return args


def _period(args: argparse.Namespace) -> str:
    if args.last is not None:
        return f"last {args.last:,} predictions"
    fmt = lambda ms: datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="seconds")  # noqa: E731
    since = fmt(args.since) if args.since is not None else "the first prediction"
    until = fmt(args.until) if args.until is not None else "now"
    return f"{since} to {until}"


def run_report(args: argparse.Namespace, settings: MonitorSettings) -> str:
    """Make and log the report; returns the worst band (CannotRun when it cannot be made)."""
    configure_mlflow(settings)
    client = wait_for_tracking_server(settings.mlflow_tracking_uri, settings.mlflow_wait_seconds)
    name = settings.model_name
    version = args.version
    if version is None:
        mv = production_version(client, name)
        if mv is None:
            raise CannotRun(f"no version of {name} is in the Production stage; pass --version")
        version = str(mv.version)
    try:
        run_id = client.get_model_version(name, version).run_id
    except Exception as e:
        raise CannotRun(f"{name} version {version}: {first_line(e)}") from e
    reference = load_reference(client, run_id)
    if reference is None:
        raise CannotRun(f"{name} version {version} has no stability reference on run {run_id}")
    experiment = client.get_experiment_by_name(settings.prediction_experiment)
    if experiment is None:
        raise CannotRun(f"no experiment {settings.prediction_experiment!r}: nothing was logged yet")
    logged = read_predictions(
        client,
        experiment.experiment_id,
        name,
        version,
        since_ms=args.since,
        until_ms=args.until,
        last=args.last,
    )
    if not len(logged):
        raise CannotRun(f"no logged predictions of {name} version {version} in {_period(args)}")
    report = stability_report(reference, logged, name, version, _period(args))
    perf = _performance(client, settings, experiment.experiment_id, name, version, run_id, logged, args)
    monitoring_id = get_or_create_experiment(client, settings.monitoring_experiment)
    report_run = log_report(
        monitoring_id,
        report,
        {"metrics": performance.metrics(perf), "table": perf} if perf else None,
        performance.markdown(perf) if perf else "",
    )
    for char, f in report.figures.items():
        log.info("%-40s PSI %.4f %s", char, f.psi, f.band)
    log.info(
        "%s version %s, %s: %d predictions, band %s; run %s in %s",
        name,
        version,
        report.period,
        report.rows,
        report.band,
        report_run,
        settings.monitoring_experiment,
    )
    return report.band


def _performance(client, settings, experiment_id, name, version, run_id, logged, args) -> list[dict]:
    """The realized-performance table of the version (all its labelled predictions, whatever the period)."""
    outcomes = read_outcomes(client, settings.outcome_experiment)
    if not outcomes:
        return []
    if args.last is not None or args.since is not None or args.until is not None:
        logged = read_predictions(client, experiment_id, name, version)
    test = {k: float(v) for k, v in client.get_run(run_id).data.metrics.items()}
    table = performance.performance_table(logged, outcomes, test)
    for row in table:
        log.info("outcomes %s: %d labelled, realized AUC %s (test %s)", row["month"], row["labelled"],
                 row["auc"], row["test_auc"])  # fmt: skip
    return table


def main(argv: list[str] | None = None) -> int:
    """Run the report and return its exit status."""
    setup_logging()
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["outcomes"]:
        from credit_risk.monitoring.outcomes_cli import main as outcomes_main

        return outcomes_main(argv[1:])
    args = parse_args(argv)
    overrides = {"model_name": args.model_name} if args.model_name else {}
    try:
        settings = MonitorSettings(**overrides)
    except ValidationError as e:
        log.error("invalid settings (is MLFLOW_TRACKING_URI set?): %s", first_line(e))
        return EXIT_CANNOT_RUN
    try:
        band = run_report(args, settings)
    except CannotRun as e:
        log.error("cannot report: %s", e)
        return EXIT_CANNOT_RUN
    except Exception as e:  # a dead server, a storage failure: still "could not run", never 1
        log.exception("cannot report: %s", first_line(e))
        return EXIT_CANNOT_RUN
    return EXIT_BY_BAND[band]
