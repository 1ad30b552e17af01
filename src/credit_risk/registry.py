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


def promote(client: MlflowClient, name: str, version: str) -> str:
    """Move `version` to Production, archive the previous one, and point the alias at the winner.

    Returns the version left in Production: `version`, unless another promotion ran at the
    same moment and a newer version won.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        client.transition_model_version_stage(name, version, PRODUCTION, archive_existing_versions=True)
        # MLflow does not serialise transitions: two at once can each find nothing to archive
        # and both stay in Production (seen with two trainers). Every promoter settles it the
        # same way afterwards, so they converge: the newest version keeps Production.
        in_production = [
            mv for mv in client.search_model_versions(f"name = '{name}'") if mv.current_stage == PRODUCTION
        ]
        winner = max((int(mv.version) for mv in in_production), default=int(version))
        for mv in in_production:
            if int(mv.version) != winner:
                client.transition_model_version_stage(name, mv.version, "Archived")
    client.set_registered_model_alias(name, PRODUCTION_ALIAS, str(winner))
    return str(winner)
