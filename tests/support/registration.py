"""Registering hand-made model versions (good or deliberately broken) for the model-I/O and gate tests."""

from __future__ import annotations

import warnings
from collections.abc import Callable

import mlflow
import pandas as pd
from mlflow.models import infer_signature
from mlflow.models.model import ModelInfo
from mlflow.tracking import MlflowClient

from credit_risk.features import FEATURES
from credit_risk.model_io import PIP_REQUIREMENTS, TRUSTED_TYPES
from credit_risk.registry import promote
from credit_risk.tracking import get_or_create_experiment


def register(
    tracking_uri: str, model_name: str, log: Callable[[], ModelInfo], production: bool = False
) -> str:
    """Run `log()` (which logs one model) in a fresh run, register that model; returns the version."""
    client = MlflowClient(tracking_uri)
    experiment_id = get_or_create_experiment(client, model_name)
    with mlflow.start_run(experiment_id=experiment_id):
        model_uri = log().model_uri
    version = str(mlflow.register_model(model_uri, model_name).version)
    if production:
        promote(client, model_name, version)
    return version


def log_sklearn(pipeline, example: pd.DataFrame, **overrides) -> ModelInfo:
    """mlflow.sklearn.log_model with what our log_model passes, each part replaceable to break it."""
    example = example.loc[:, list(FEATURES)].astype("float64")
    kwargs = {
        "name": "model",
        "serialization_format": "skops",
        "skops_trusted_types": TRUSTED_TYPES,
        "signature": infer_signature(example, pipeline.predict_proba(example.to_numpy())[:, 1]),
        "metadata": {"decision_threshold": 0.3, "dataset_hash": "sha256-test"},
        "pip_requirements": PIP_REQUIREMENTS,
    } | overrides
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # MLflow warns loudly about pickle formats, on purpose here
        return mlflow.sklearn.log_model(pipeline, **kwargs)
