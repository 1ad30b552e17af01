"""Train, log, register and (maybe) promote the credit-risk model: `python -m credit_risk.train`.

The command line of the trainer (the stages are in credit_risk.training.pipeline). The CSV is
validated before the tracking server is contacted: a bad file is reported on stderr and creates
no run and no model version.

Exit codes:
    0  trained and registered, whether or not the gate promoted the new version
    1  any other failure (bad command line or settings, an error while training or logging,
       the artifact store behind the tracking server down)
    2  the CSV cannot be read or failed validation (nothing is logged)
    3  the tracking server is not configured, did not answer within the wait, or went away
       mid-run (the run is left unfinished; a version registered before that stays unpromoted);
       or it refused the credentials (401) or a permission (403), named on stderr
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import get_args

import requests
from pydantic import ValidationError

from credit_risk.logs import first_line, setup_logging
from credit_risk.settings import PromoteMode, TrainerSettings
from credit_risk.tracking import TrackingAccessDenied, TrackingServerUnavailable, access_problem, wait_healthy
from credit_risk.training.pipeline import train
from credit_risk.training.validation import DataValidationError

log = logging.getLogger("credit_risk.train")

EXIT_OK, EXIT_ERROR, EXIT_BAD_DATA, EXIT_NO_SERVER = 0, 1, 2, 3
# What a dead or overloaded tracking server looks like once MLflow's short retries are spent.
_CONNECTION_ERRORS = (
    requests.exceptions.ConnectionError,
    requests.exceptions.Timeout,
    requests.exceptions.RetryError,
)


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):
        # argparse exits with 2 on a usage error; 2 means "bad data" here.
        self.print_usage(sys.stderr)
        self.exit(EXIT_ERROR, f"{self.prog}: error: {message}\n")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line; unset options fall back to TrainerSettings (environment, then defaults)."""
    p = _Parser(
        prog="python -m credit_risk.train",
        description=__doc__.split("\n\n")[0],
        epilog=__doc__[__doc__.index("Exit codes:") :],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--csv",
        type=Path,
        default=Path("data/cs-training.csv"),
        metavar="PATH",
        help="training CSV (default data/cs-training.csv)",
    )
    p.add_argument("--experiment", help="MLflow experiment (default credit-risk-prediction)")
    p.add_argument("--model-name", help="registered model name (default credit-risk-model)")
    p.add_argument("--promote", choices=get_args(PromoteMode), help="promotion gate mode (default auto)")
    p.add_argument("--seed", type=int, help="seed for the split and the models (default 42)")
    p.add_argument("--min-auc", type=float, help="lowest test AUC the gate promotes (default 0.75)")
    p.add_argument(
        "--threads",
        type=int,
        dest="train_threads",
        help="OpenMP threads for fitting and scoring (default TRAIN_THREADS or 1)",
    )
    p.add_argument(
        "--wait-seconds",
        type=float,
        dest="mlflow_wait_seconds",
        metavar="SECONDS",
        help="how long to wait for the tracking server (default MLFLOW_WAIT_SECONDS or 60)",
    )
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Run the trainer and return its exit code."""
    setup_logging()
    args = parse_args(argv)
    overrides = {k: v for k, v in vars(args).items() if k != "csv" and v is not None}
    try:
        settings = TrainerSettings(**overrides)
    except ValidationError as e:
        if any(err["loc"][0] == "mlflow_tracking_uri" for err in e.errors()):
            log.error("MLFLOW_TRACKING_URI is not set or empty: say where the MLflow tracking server is")
            return EXIT_NO_SERVER
        log.error("invalid settings: %s", e)
        return EXIT_ERROR
    try:
        train(args.csv, settings)
    except DataValidationError as e:
        log.error("%s", e)
        return EXIT_BAD_DATA
    except (TrackingServerUnavailable, TrackingAccessDenied) as e:
        log.error("%s", e)
        return EXIT_NO_SERVER
    except Exception as e:
        if problem := access_problem(e, settings.mlflow_tracking_uri):
            log.error(
                "%s; the trainer needs EDIT on experiment '%s' and on registered model '%s'",
                problem,
                settings.experiment,
                settings.model_name,
            )
            return EXIT_NO_SERVER
        if _artifact_store_failed(e, settings.mlflow_tracking_uri):
            log.error(
                "uploading artifacts through the MLflow tracking server at %s failed while the server "
                "itself answers: its artifact store (S3/MinIO) is probably down, see the mlflow "
                "service's log: %s",
                settings.mlflow_tracking_uri,
                first_line(e),
            )
            return EXIT_ERROR
        if _server_went_away(e):
            log.error(
                "the MLflow tracking server at %s stopped answering during training: %s",
                settings.mlflow_tracking_uri,
                first_line(e),
            )
            return EXIT_NO_SERVER
        log.exception("training failed")
        return EXIT_ERROR
    return EXIT_OK


def _artifact_store_failed(error: Exception, tracking_uri: str) -> bool:
    # The server proxies artifacts (mlflow-artifacts): when the store behind it is down, the
    # upload fails like a dead server would, yet the server still answers /health.
    if "/mlflow-artifacts/" not in str(error):
        return False
    try:
        wait_healthy(tracking_uri, timeout=3)
    except (TimeoutError, RuntimeError):
        return False
    return True


def _server_went_away(error: BaseException | None) -> bool:
    # MLflow wraps the HTTP failure in an MlflowException, often without `from`: walk the chain.
    seen = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        if isinstance(error, _CONNECTION_ERRORS):
            return True
        error = error.__cause__ or error.__context__
    return False


if __name__ == "__main__":
    sys.exit(main())
