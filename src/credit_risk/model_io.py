"""Saving and loading the model in MLflow's skops format, with our own trusted-type list.

MLflow's `mlflow.sklearn.load_model` reads the skops allow-list from the model's own
MLmodel file, so a crafted model could trust anything (MLflow itself now refuses to load
without MLFLOW_ALLOW_PICKLE_DESERIALIZATION). We never set that flag: we check the flavor
and the signature ourselves and call skops with the list below, fixed in code.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import mlflow
import numpy as np
import skops.io
import yaml
from mlflow.tracking import MlflowClient

from credit_risk.features import FEATURES

if TYPE_CHECKING:  # the API image has no pandas (issue 10): only the trainer logs models
    import pandas as pd

# Every type the pipeline holds beyond what skops trusts by default. A test dumps each
# candidate pipeline and checks that skops asks for nothing outside this list.
TRUSTED_TYPES: list[str] = [
    "credit_risk.constraints.MonotoneLogisticRegression",
    "credit_risk.features.CreditFeatures",
    "numpy.dtype",
    "sklearn.ensemble._hist_gradient_boosting.predictor.TreePredictor",
]
SERIALIZATION_FORMAT = "skops"
# The test-split metrics the trainer logs on a version's run (evaluation computes them, in this
# order) and /model/info shows; the decision threshold is logged beside them.
TEST_METRICS: tuple[str, ...] = (
    "roc_auc",
    "gini",
    "ks",
    "precision",
    "recall",
    "f1",
    "accuracy",
    "brier",
    "log_loss",
)


def _installed(dists: tuple[str, ...]) -> list[str]:
    found = []
    for dist in dists:
        with contextlib.suppress(importlib.metadata.PackageNotFoundError):
            found.append(f"{dist}=={importlib.metadata.version(dist)}")
    return found


# What a logged model needs. In the API image (mlflow-skinny, no pandas) the list is shorter,
# and unused: the API loads models, it never logs one.
PIP_REQUIREMENTS = _installed(("mlflow", "scikit-learn", "numpy", "pandas", "skops"))


class ModelRejected(Exception):
    """A registered model version that must not be served, with the reason why."""


def log_model(pipeline, example: pd.DataFrame, threshold: float, dataset_hash: str, name: str = "model"):
    """Log a fitted pipeline in skops format with a signature in the API's field names.

    The decision threshold and the dataset fingerprint travel inside the artifact (MLmodel
    metadata), so what is served cannot drift from what was trained by retagging.
    """
    from mlflow.models import infer_signature  # needs pandas: trainer side only (issue 10)

    example = example.loc[:, list(FEATURES)].astype("float64")
    signature = infer_signature(example, pipeline.predict_proba(example.to_numpy())[:, 1])
    return mlflow.sklearn.log_model(
        pipeline,
        name=name,
        serialization_format=SERIALIZATION_FORMAT,
        skops_trusted_types=TRUSTED_TYPES,
        signature=signature,
        input_example=example,
        pyfunc_predict_fn="predict_proba",
        metadata={"decision_threshold": float(threshold), "dataset_hash": dataset_hash},
        # Listing them skips MLflow's slow requirement inference (it imports the model again).
        pip_requirements=PIP_REQUIREMENTS,
    )


@dataclass(frozen=True)
class LoadedModel:
    """A model version that passed every check, ready to predict on FEATURES-ordered arrays."""

    name: str
    version: str
    run_id: str
    pipeline: object
    threshold: float
    dataset_hash: str

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        """Probability of serious delinquency for each row."""
        return self.pipeline.predict_proba(X)[:, 1]


def _check_flavor(mlmodel: dict) -> dict:
    flavor = mlmodel.get("flavors", {}).get("sklearn")
    if flavor is None:
        raise ModelRejected("the model has no scikit-learn flavor")
    fmt = flavor.get("serialization_format")
    if fmt != SERIALIZATION_FORMAT:
        raise ModelRejected(f"serialization format is {fmt!r}; only {SERIALIZATION_FORMAT!r} is loaded")
    return flavor


def _check_signature(mlmodel: dict) -> None:
    signature = mlmodel.get("signature") or {}
    if not signature.get("inputs"):
        raise ModelRejected("the model has no input signature")
    names = [col.get("name") for col in yaml.safe_load(signature["inputs"])]
    if names != list(FEATURES):
        raise ModelRejected(f"signature inputs {names} do not match the API's fields {list(FEATURES)}")


def load_model_version(client: MlflowClient, name: str, version: str) -> LoadedModel:
    """Download, check and load one registered version; raise ModelRejected if it is unfit."""
    mv = client.get_model_version(name, version)
    with tempfile.TemporaryDirectory(prefix="credit-risk-model-") as tmp:
        try:
            # Not a models:/ URI: MLflow resolves those through the process-wide registry URI,
            # ignoring this client's (a local sqlite file when MLFLOW_TRACKING_URI is unset).
            download_uri = client.get_model_version_download_uri(name, version)
            local = Path(
                mlflow.artifacts.download_artifacts(
                    artifact_uri=download_uri, dst_path=tmp, tracking_uri=client.tracking_uri
                )
            )
        except Exception as e:  # any storage or registry failure means "cannot be served"
            raise ModelRejected(f"artifacts of version {version} cannot be downloaded: {e}") from e
        try:
            mlmodel = yaml.safe_load((local / "MLmodel").read_text())
        except (OSError, yaml.YAMLError) as e:
            raise ModelRejected(f"version {version} has no readable MLmodel file: {e}") from e
        flavor = _check_flavor(mlmodel)
        _check_signature(mlmodel)
        metadata = mlmodel.get("metadata") or {}
        try:
            threshold = float(metadata["decision_threshold"])
            dataset_hash = str(metadata["dataset_hash"])
        except (KeyError, TypeError, ValueError) as e:
            raise ModelRejected(f"version {version} has no decision_threshold/dataset_hash metadata") from e
        if not 0.0 < threshold < 1.0:
            raise ModelRejected(f"version {version} has decision threshold {threshold} outside (0, 1)")
        claimed = flavor.get("skops_trusted_types") or []
        if extra := sorted(set(claimed) - set(TRUSTED_TYPES)):
            # Only our list is ever used, but a model claiming more was not logged by our trainer.
            raise ModelRejected(f"version {version} cannot be loaded safely: its MLmodel trusts {extra}")
        try:
            pipeline = skops.io.load(local / flavor["pickled_model"], trusted=TRUSTED_TYPES)
        except Exception as e:  # skops raises several types for untrusted or corrupt files
            raise ModelRejected(f"version {version} cannot be loaded safely: {e}") from e
    probe = np.zeros((1, len(FEATURES)))
    try:
        pipeline.predict_proba(probe)
    except Exception as e:
        raise ModelRejected(f"version {version} fails on a sample row: {e}") from e
    return LoadedModel(
        name=name,
        version=str(version),
        run_id=mv.run_id,
        pipeline=pipeline,
        threshold=threshold,
        dataset_hash=dataset_hash,
    )
