"""Train, log, register and (maybe) promote the credit-risk model: `python -m credit_risk.train`.

Stages, each logged with its duration: load and validate the CSV, fingerprint it (SHA256),
connect to the tracking server, fit the candidates (one nested run each), evaluate the best
on the test split, log the model (skops), register it, then the promotion gate.

The CSV is validated before the tracking server is contacted: a bad file is reported on
stderr and creates no run and no model version.

Exit codes:
    0  trained and registered, whether or not the gate promoted the new version
    1  any other failure (bad command line or settings, an error while training or logging,
       the artifact store behind the tracking server down)
    2  the CSV cannot be read or failed validation (nothing is logged)
    3  the tracking server is not configured, did not answer within the wait, or went away
       mid-run (the run is left unfinished; a version registered before that stays unpromoted)
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import mlflow
import mlflow.data
import numpy as np
import pandas as pd
import requests
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient
from pydantic import ValidationError
from sklearn.metrics import roc_auc_score
from threadpoolctl import threadpool_limits

from credit_risk import evaluate
from credit_risk.data import DataValidationError, fingerprint, load_dataset
from credit_risk.features import FEATURES, TARGET
from credit_risk.gate import Champion, Decision, decide, evaluate_champion
from credit_risk.model_io import log_model
from credit_risk.modeling import CANDIDATES, Candidate, choose_threshold, split_dataset
from credit_risk.registry import promote
from credit_risk.server import wait_healthy
from credit_risk.settings import TrainerSettings
from credit_risk.tracking import (
    TrackingServerUnavailable,
    configure_mlflow,
    run_url,
    wait_for_tracking_server,
)

log = logging.getLogger("credit_risk.train")

EXIT_OK, EXIT_ERROR, EXIT_BAD_DATA, EXIT_NO_SERVER = 0, 1, 2, 3
# What a dead or overloaded tracking server looks like once MLflow's short retries are spent.
_CONNECTION_ERRORS = (
    requests.exceptions.ConnectionError,
    requests.exceptions.Timeout,
    requests.exceptions.RetryError,
)
DATASET_NAME = "cs-training"


@contextmanager
def stage(name: str) -> Iterator[None]:
    """Log one line with the stage's duration when it ends."""
    start = time.perf_counter()
    yield
    log.info("stage %-18s %6.2fs", name, time.perf_counter() - start)


@dataclass(frozen=True)
class TrainingResult:
    """What one trainer run produced."""

    run_id: str
    model_name: str
    version: str
    model: str
    metrics: dict[str, float]
    threshold: float
    decision: Decision


@dataclass
class _Fitted:
    candidate: Candidate
    pipeline: object
    val_proba: np.ndarray
    val_auc: float


def _experiment_id(client: MlflowClient, name: str) -> str:
    # The fluent mlflow.set_experiment would leave a process-wide active experiment behind.
    experiment = client.get_experiment_by_name(name)
    if experiment is not None:
        if experiment.lifecycle_stage == "deleted":
            client.restore_experiment(experiment.experiment_id)
        return experiment.experiment_id
    try:
        return client.create_experiment(name)
    except MlflowException as e:
        # Another trainer created it since we looked (two trainers started at once).
        if e.error_code != "RESOURCE_ALREADY_EXISTS":
            raise
        return client.get_experiment_by_name(name).experiment_id


def _fit_candidate(candidate: Candidate, split, seed: int, experiment_id: str) -> _Fitted:
    with mlflow.start_run(experiment_id=experiment_id, run_name=candidate.name, nested=True):
        mlflow.log_params({"candidate": candidate.name, "seed": seed, **candidate.params})
        start = time.perf_counter()
        pipeline = candidate.build(seed).fit(split.X_train, split.y_train)
        fit_seconds = time.perf_counter() - start
        val_proba = pipeline.predict_proba(split.X_val)[:, 1]
        val_auc = float(roc_auc_score(split.y_val, val_proba))
        metrics = {"val_roc_auc": val_auc, "fit_seconds": fit_seconds}
        n_iter = getattr(pipeline[-1], "n_iter_", None)
        if n_iter is not None:  # boosting rounds kept by early stopping, or solver iterations
            metrics["n_iter"] = float(np.max(n_iter))
        mlflow.log_metrics(metrics)
    log.info("candidate %-24s val AUC %.4f (fit %.2fs)", candidate.name, val_auc, fit_seconds)
    return _Fitted(candidate, pipeline, val_proba, val_auc)


def _log_dataset(typed: pd.DataFrame, csv_path: Path, dataset_hash: str) -> None:
    # MLflow's own dataset digest hashes only the first 10,000 rows (a truncated MD5), so two
    # files that differ further down look the same to it; the SHA256 of every byte, logged as
    # the `dataset_hash` param and tag, is the fingerprint the service trusts.
    with warnings.catch_warnings():
        # MLflow registers its local-file source class twice and warns that a path is ambiguous;
        # it also hints that the int8 target cannot hold NaN, which validation already rules out.
        warnings.simplefilter("ignore", UserWarning)
        dataset = mlflow.data.from_pandas(
            typed, source=str(csv_path.resolve()), targets=TARGET, name=DATASET_NAME
        )
        mlflow.log_input(dataset, context="training", tags={"dataset_hash": dataset_hash})


def _set_decision_tags(
    client: MlflowClient, run_id: str, name: str, version: str, decision: Decision
) -> None:
    tags = {"promotion_decision": decision.decision, "promotion_reason": decision.reason}
    for key, value in tags.items():
        client.set_tag(run_id, key, value)
        client.set_model_version_tag(name, version, key, value)


def train(csv_path: Path, settings: TrainerSettings) -> TrainingResult:
    """The whole flow; raises DataValidationError or TrackingServerUnavailable before logging."""
    with threadpool_limits(limits=settings.train_threads):
        return _train(csv_path, settings)


def _train(csv_path: Path, settings: TrainerSettings) -> TrainingResult:
    seed = settings.seed
    with stage("load and validate"):
        typed, report = load_dataset(csv_path)
    for warning in report.warnings:
        log.info("data warning: %s", warning)
    with stage("fingerprint"):
        dataset_hash = fingerprint(csv_path)
    log.info(
        "dataset %s: %d rows, target rate %.4f, sha256 %s",
        csv_path,
        report.rows,
        report.target_rate,
        dataset_hash,
    )

    configure_mlflow(settings)
    with stage("connect"):
        client = wait_for_tracking_server(settings.mlflow_tracking_uri, settings.mlflow_wait_seconds)
        experiment_id = _experiment_id(client, settings.experiment)
    split = split_dataset(typed, seed)

    with mlflow.start_run(experiment_id=experiment_id, run_name=f"train-{dataset_hash[:12]}") as run:
        run_id = run.info.run_id
        with stage("log inputs"):
            mlflow.log_params(
                {
                    "dataset_hash": dataset_hash,
                    "dataset_path": str(csv_path),
                    "dataset_rows": report.rows,
                    "target_rate": report.target_rate,
                    "seed": seed,
                    "promote_mode": settings.promote,
                    "min_auc": settings.min_auc,
                    **split.sizes(),
                }
            )
            mlflow.log_dict(report.to_dict(), "validation_report.json")
            _log_dataset(typed, csv_path, dataset_hash)

        with stage("candidates"):
            fitted = [_fit_candidate(c, split, seed, experiment_id) for c in CANDIDATES]
            # Ties go to the earlier candidate, so the choice is deterministic.
            best = max(fitted, key=lambda f: f.val_auc)
            mlflow.log_params(
                {"model": best.candidate.name, **{f"model.{k}": v for k, v in best.candidate.params.items()}}
            )

        with stage("evaluate"):
            threshold = choose_threshold(split.y_val, best.val_proba)
            test_proba = best.pipeline.predict_proba(split.X_test)[:, 1]
            metrics = evaluate.classification_metrics(split.y_test, test_proba, threshold)
            val_metrics = evaluate.classification_metrics(split.y_val, best.val_proba, threshold)
            mlflow.log_metrics(
                {
                    **metrics,
                    **{f"val_{k}": v for k, v in val_metrics.items()},
                    "decision_threshold": threshold,
                }
            )
            importance = evaluate.feature_importance(best.pipeline, split.X_test, split.y_test, seed)
            mlflow.log_dict(importance, "feature_importance.json")
            for file_name, figure in evaluate.plots(split.y_test, test_proba, importance).items():
                mlflow.log_figure(figure, f"plots/{file_name}")
        log.info(
            "model %s: test AUC %.4f, KS %.4f, threshold %.4f",
            best.candidate.name,
            metrics["roc_auc"],
            metrics["ks"],
            threshold,
        )

        with stage("log model"):
            example = pd.DataFrame(split.X_train[:5], columns=list(FEATURES))
            model_info = log_model(best.pipeline, example, threshold, dataset_hash)

        with stage("register"):
            version = mlflow.register_model(
                model_info.model_uri,
                settings.model_name,
                tags={"dataset_hash": dataset_hash, "decision_threshold": str(threshold)},
            ).version
            mlflow.set_tags({"registered_model": settings.model_name, "registered_version": str(version)})

        with stage("promotion gate"):
            champion = (
                evaluate_champion(client, settings.model_name, split.X_test, split.y_test)
                if settings.promote == "auto"
                else Champion(note="gate not applied")
            )
            if champion.roc_auc is not None:
                mlflow.log_metric("champion_roc_auc", champion.roc_auc)
            decision = decide(settings.promote, metrics["roc_auc"], settings.min_auc, champion)
            _set_decision_tags(client, run_id, settings.model_name, str(version), decision)
            if decision.promote:
                promote(client, settings.model_name, str(version))

    log.info(
        "run %s: %s version %s %s (%s)",
        run_id,
        settings.model_name,
        version,
        decision.decision,
        decision.reason,
    )
    # Last, so the user's link is the final line (MLflow's own "View run" lines name the server as
    # the trainer reaches it, e.g. http://mlflow:5000 inside compose).
    public_url = settings.mlflow_public_url or settings.mlflow_tracking_uri
    if public_url.startswith(("http://", "https://")):  # a local store (sqlite, file) has no UI to link
        log.info("view the run at %s", run_url(public_url, experiment_id, run_id))
    return TrainingResult(
        run_id, settings.model_name, str(version), best.candidate.name, metrics, threshold, decision
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
    p.add_argument(
        "--promote", choices=["auto", "always", "never"], help="promotion gate mode (default auto)"
    )
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
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr
    )
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
    except TrackingServerUnavailable as e:
        log.error("%s", e)
        return EXIT_NO_SERVER
    except Exception as e:
        if _artifact_store_failed(e, settings.mlflow_tracking_uri):
            log.error(
                "uploading artifacts through the MLflow tracking server at %s failed while the server "
                "itself answers: its artifact store (S3/MinIO) is probably down, see the mlflow "
                "service's log: %s",
                settings.mlflow_tracking_uri,
                str(e).splitlines()[0][:300],
            )
            return EXIT_ERROR
        if _server_went_away(e):
            log.error(
                "the MLflow tracking server at %s stopped answering during training: %s",
                settings.mlflow_tracking_uri,
                str(e).splitlines()[0][:300],
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
    except TimeoutError:
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
