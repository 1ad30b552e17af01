"""The model registry's Production stage: who is in it, and how a version gets there."""

from __future__ import annotations

import warnings

from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

PRODUCTION = "Production"
# Stages are deprecated in MLflow; the alias follows every promotion so moving to aliases is one line.
PRODUCTION_ALIAS = "production"
# Rounds of "check, fix what another promotion left" after a promotion (see promote).
_SETTLE_ROUNDS = 10


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
    """Move `version` to Production, archive the previous one, and point the alias at it.

    Returns the version left in Production: `version`, unless another promotion ran at the
    same moment and won.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        client.transition_model_version_stage(name, version, PRODUCTION, archive_existing_versions=True)
        # MLflow does not serialise transitions: two at once can each find nothing to archive
        # and both stay in Production (seen with two trainers), each can archive the other's
        # version so that none is left (seen with three), and the alias can end on a loser.
        # Every promoter settles it the same way until it sees the settled state itself: the
        # newest version in Production stays, the others are archived, the alias points at it,
        # and a promoter that finds nothing in Production puts its own version back.
        for _ in range(_SETTLE_ROUNDS):
            in_production = _production_numbers(client, name)
            if not in_production:
                client.transition_model_version_stage(name, version, PRODUCTION)
                continue
            winner = str(in_production[-1])
            if len(in_production) == 1 and _alias_version(client, name) == winner:
                return winner
            for loser in in_production[:-1]:
                client.transition_model_version_stage(name, str(loser), "Archived")
            _point_alias(client, name, winner)
    raise RuntimeError(
        f"{name}: Production did not settle on one version after {_SETTLE_ROUNDS} rounds of "
        "concurrent promotions; check the registry (MLflow UI) and promote by hand"
    )


def _point_alias(client: MlflowClient, name: str, version: str) -> None:
    try:
        client.set_registered_model_alias(name, PRODUCTION_ALIAS, version)
    except MlflowException:
        # MLflow creates a new alias row without a lock: two promoters setting it for the first
        # time at once both INSERT, and one hits the unique key (seen on PostgreSQL). The row
        # exists now, so setting it again is an update; anything else is a real failure.
        if _alias_version(client, name) is None:
            raise
        client.set_registered_model_alias(name, PRODUCTION_ALIAS, version)


def _production_numbers(client: MlflowClient, name: str) -> list[int]:
    """Version numbers in the Production stage, ascending."""
    versions = client.search_model_versions(f"name = '{name}'")
    return sorted(int(mv.version) for mv in versions if mv.current_stage == PRODUCTION)


def _alias_version(client: MlflowClient, name: str) -> str | None:
    try:
        return str(client.get_model_version_by_alias(name, PRODUCTION_ALIAS).version)
    except MlflowException:
        return None
