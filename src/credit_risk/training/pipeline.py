"""The trainer's pipeline: CSV to a registered, and maybe promoted, model version.

Stages, each logged with its duration: load and validate the CSV, fingerprint it (SHA256),
connect to the tracking server, fit the candidates (one nested run each), evaluate the best
on the test split, log the stability reference (bins and counts of the training split), log
the model (skops), register it, then the promotion gate.

The CSV is validated before the tracking server is contacted: a bad file raises
DataValidationError and creates no run and no model version.
"""

from __future__ import annotations

import logging
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
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient
from sklearn.metrics import roc_auc_score
from threadpoolctl import threadpool_limits

from credit_risk.features import FEATURES, TARGET
from credit_risk.model_io import log_model
from credit_risk.monitoring.reference import REFERENCE_ARTIFACT, Reference, card_section
from credit_risk.registry import promote
from credit_risk.settings import TrainerSettings
from credit_risk.tracking import (
    configure_mlflow,
    get_or_create_experiment,
    require_permission,
    run_url,
    wait_for_tracking_server,
)
from credit_risk.training import evaluation, model_card
from credit_risk.training.candidates import CANDIDATES, Candidate, Split, choose_threshold, split_dataset
from credit_risk.training.compliance import check_compliance, probe_sample
from credit_risk.training.data import fingerprint, load_dataset
from credit_risk.training.gate import Champion, Decision, decide, evaluate_champion
from credit_risk.training.validation import ValidationReport

log = logging.getLogger("credit_risk.train")

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


@dataclass(frozen=True)
class _Dataset:
    typed: pd.DataFrame
    report: ValidationReport
    sha256: str
    path: Path


def train(csv_path: Path, settings: TrainerSettings) -> TrainingResult:
    """The whole flow; raises DataValidationError or TrackingServerUnavailable before logging."""
    with threadpool_limits(limits=settings.train_threads):
        return _train(csv_path, settings)


def _train(csv_path: Path, settings: TrainerSettings) -> TrainingResult:
    data = _load(csv_path)
    configure_mlflow(settings)
    with stage("connect"):
        client = wait_for_tracking_server(settings.mlflow_tracking_uri, settings.mlflow_wait_seconds)
        experiment_id = get_or_create_experiment(client, settings.experiment)
        _check_access(client, experiment_id, settings)
    split = split_dataset(data.typed, settings.seed)

    with mlflow.start_run(experiment_id=experiment_id, run_name=f"train-{data.sha256[:12]}") as run:
        run_id = run.info.run_id
        with stage("log inputs"):
            _log_inputs(data, split, settings)
        with stage("candidates"):
            best, val_aucs = _fit_candidates(split, settings.seed, experiment_id)
        with stage("evaluate"):
            metrics, threshold = _evaluate(best, split, settings.seed)
        with stage("stability reference"):
            reference = _log_stability_reference(best, split, data.sha256)
        with stage("log model"):
            example = pd.DataFrame(split.X_train[:5], columns=list(FEATURES))
            model_info = log_model(best.pipeline, example, threshold, data.sha256)
        with stage("register"):
            version = _register(model_info.model_uri, settings.model_name, data.sha256, threshold)
        with stage("compliance"):
            report, compliance = check_compliance(best.pipeline, probe_sample(split.X_test))
            mlflow.log_dict(report.to_dict(), "compliance.json")
            mlflow.set_tag("monotonicity", "passed" if report.passed else "failed")
        with stage("promotion gate"):
            decision = _promotion_gate(
                client, run_id, version, metrics["roc_auc"], split, settings, compliance
            )
        with stage("model card"):
            card = model_card.build(
                model_card.CardInputs(
                    settings.model_name, version, run_id, best.candidate.name, val_aucs, threshold, metrics,
                    split.y_test, best.pipeline.predict_proba(split.X_test)[:, 1], data.sha256,
                    data.report.rows, data.report.target_rate, [str(w) for w in data.report.warnings],
                    report, compliance, decision.decision, decision.reason, card_section(reference),
                )
            )  # fmt: skip
            mlflow.log_text(card, "model_card.md")
            client.update_model_version(
                settings.model_name, version, description=model_card.description(card, run_id)
            )

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
        run_id, settings.model_name, version, best.candidate.name, metrics, threshold, decision
    )


def _check_access(client: MlflowClient, experiment_id: str, settings: TrainerSettings) -> None:
    """Fail before training, naming the resource, when the account could not log, register or promote."""
    uri, name = settings.mlflow_tracking_uri, settings.model_name
    require_permission(uri, "experiment", experiment_id, "EDIT", f"experiment '{settings.experiment}'")
    try:
        client.get_registered_model(name)
    except MlflowException as e:
        if e.error_code == "RESOURCE_DOES_NOT_EXIST":
            return  # registering the first version creates it, and makes us its manager
        raise
    require_permission(uri, "registered_model", name, "EDIT", f"registered model '{name}'")


def _load(csv_path: Path) -> _Dataset:
    """Validate (DataValidationError when unfit) and fingerprint the file."""
    with stage("load and validate"):
        typed, report = load_dataset(csv_path)
    for warning in report.warnings:
        log.info("data warning: %s", warning)
    with stage("fingerprint"):
        sha256 = fingerprint(csv_path)
    log.info(
        "dataset %s: %d rows, target rate %.4f, sha256 %s", csv_path, report.rows, report.target_rate, sha256
    )
    return _Dataset(typed, report, sha256, csv_path)


def _log_inputs(data: _Dataset, split: Split, settings: TrainerSettings) -> None:
    """The run's params, the validation report and the dataset as an MLflow input."""
    mlflow.log_params(
        {
            "dataset_hash": data.sha256,
            "dataset_path": str(data.path),
            "dataset_rows": data.report.rows,
            "target_rate": data.report.target_rate,
            "seed": settings.seed,
            "promote_mode": settings.promote,
            "min_auc": settings.min_auc,
            **split.sizes(),
        }
    )
    mlflow.log_dict(data.report.to_dict(), "validation_report.json")
    # MLflow's own dataset digest hashes only the first 10,000 rows (a truncated MD5), so two
    # files that differ further down look the same to it; the SHA256 of every byte, logged as
    # the `dataset_hash` param and tag, is the fingerprint the service trusts.
    with warnings.catch_warnings():
        # MLflow registers its local-file source class twice and warns that a path is ambiguous;
        # it also hints that the int8 target cannot hold NaN, which validation already rules out.
        warnings.simplefilter("ignore", UserWarning)
        dataset = mlflow.data.from_pandas(
            data.typed, source=str(data.path.resolve()), targets=TARGET, name=DATASET_NAME
        )
        mlflow.log_input(dataset, context="training", tags={"dataset_hash": data.sha256})


def _fit_candidates(split: Split, seed: int, experiment_id: str) -> tuple[_Fitted, dict[str, float]]:
    """Fit every candidate in a nested run; the best validation AUC wins (ties: the earlier one).

    Returns the winner and every candidate's validation AUC (for the model card)."""
    fitted = [_fit_candidate(c, split, seed, experiment_id) for c in CANDIDATES]
    best = max(fitted, key=lambda f: f.val_auc)
    mlflow.log_params(
        {"model": best.candidate.name, **{f"model.{k}": v for k, v in best.candidate.params.items()}}
    )
    return best, {f.candidate.name: f.val_auc for f in fitted}


def _fit_candidate(candidate: Candidate, split: Split, seed: int, experiment_id: str) -> _Fitted:
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


def _evaluate(best: _Fitted, split: Split, seed: int) -> tuple[dict[str, float], float]:
    """Threshold on validation, metrics on test (and validation), importance and plots."""
    threshold = choose_threshold(split.y_val, best.val_proba)
    test_proba = best.pipeline.predict_proba(split.X_test)[:, 1]
    metrics = evaluation.classification_metrics(split.y_test, test_proba, threshold)
    val_metrics = evaluation.classification_metrics(split.y_val, best.val_proba, threshold)
    mlflow.log_metrics(
        {**metrics, **{f"val_{k}": v for k, v in val_metrics.items()}, "decision_threshold": threshold}
    )
    importance = evaluation.feature_importance(best.pipeline, split.X_test, split.y_test, seed)
    mlflow.log_dict(importance, "feature_importance.json")
    for file_name, figure in evaluation.plots(split.y_test, test_proba, importance).items():
        mlflow.log_figure(figure, f"plots/{file_name}")
    log.info(
        "model %s: test AUC %.4f, KS %.4f, threshold %.4f",
        best.candidate.name,
        metrics["roc_auc"],
        metrics["ks"],
        threshold,
    )
    return metrics, threshold


def _log_stability_reference(best: _Fitted, split: Split, dataset_hash: str) -> Reference:
    """Bins and counts of the training split and its scores, which live PSI is measured against.

    Returned for the model card: `monitoring.reference.card_section(reference)` is its section.
    """
    scores = best.pipeline.predict_proba(split.X_train)[:, 1]
    reference = Reference.from_training(
        split.X_train, scores, {"source": "training split", "dataset_hash": dataset_hash}
    )
    mlflow.log_dict(reference.to_dict(), REFERENCE_ARTIFACT)
    return reference


def _register(model_uri: str, model_name: str, dataset_hash: str, threshold: float) -> str:
    """Register the logged model as a new version; the run is tagged with it."""
    version = mlflow.register_model(
        model_uri, model_name, tags={"dataset_hash": dataset_hash, "decision_threshold": str(threshold)}
    ).version
    mlflow.set_tags({"registered_model": model_name, "registered_version": str(version)})
    return str(version)


def _promotion_gate(
    client: MlflowClient,
    run_id: str,
    version: str,
    roc_auc: float,
    split: Split,
    settings: TrainerSettings,
    compliance: list[str],
) -> Decision:
    """Decide (`compliance`: the failed compliance checks), tag the run and the version, maybe promote."""
    name = settings.model_name
    champion = (
        evaluate_champion(client, name, split.X_test, split.y_test)
        if settings.promote == "auto"
        else Champion(note="gate not applied")
    )
    if champion.roc_auc is not None:
        mlflow.log_metric("champion_roc_auc", champion.roc_auc)
    decision = decide(settings.promote, roc_auc, settings.min_auc, champion, compliance)
    tags = {"promotion_decision": decision.decision, "promotion_reason": decision.reason}
    for key, value in tags.items():
        client.set_tag(run_id, key, value)
        client.set_model_version_tag(name, version, key, value)
    if decision.promote:
        promote(client, name, version)
    return decision
