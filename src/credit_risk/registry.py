"""The model registry's Production stage: who is in it, and how a version gets there."""

from __future__ import annotations

import warnings

from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

PRODUCTION = "Production"
# Stages are deprecated in MLflow; the alias follows every promotion so moving to aliases is one line.
PRODUCTION_ALIAS = "production"


def production_version(client: MlflowClient, name: str) -> ModelVersion | None:
    """The version in the Production stage, or None when there is none (or no such model)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # stages are deprecated, still the contract
        try:
            versions = client.get_latest_versions(name, stages=[PRODUCTION])
        except MlflowException as e:
            if e.error_code == "RESOURCE_DOES_NOT_EXIST":
                return None
            raise
    return versions[0] if versions else None


def promote(client: MlflowClient, name: str, version: str) -> None:
    """Move `version` to Production, archive the previous one, and point the alias at it."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        client.transition_model_version_stage(name, version, PRODUCTION, archive_existing_versions=True)
    client.set_registered_model_alias(name, PRODUCTION_ALIAS, version)
