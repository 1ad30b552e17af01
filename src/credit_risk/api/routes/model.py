"""The served model: what it is (`/model/info`) and asking the registry now (`/model/reload`)."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter

from credit_risk.api.deps import HolderDep, SettingsDep
from credit_risk.api.routes import NOT_READY, protected_router
from credit_risk.api.schemas import ModelInfo, ReasonCodeInfo, ReasonCodesResponse, StatusResponse
from credit_risk.features import FEATURES
from credit_risk.reasons import ELDERLY_AGE, reason_table
from credit_risk.registry import PRODUCTION

router = APIRouter(tags=["model"])
protected = protected_router()


@router.get("/model/info", responses=NOT_READY)
async def model_info(holder: HolderDep) -> ModelInfo:
    """The served version, its lineage (run, dataset hash), test metrics and threshold."""
    state = holder.current()
    model = state.model
    return ModelInfo(
        model_name=model.name,
        model_version=model.version,
        model_stage=PRODUCTION,
        run_id=model.run_id,
        dataset_hash=model.dataset_hash,
        decision_threshold=model.threshold,
        metrics=dict(state.metrics),
        feature_names=list(FEATURES),
        loaded_at=state.loaded_at,
    )


@router.get("/model/reasons")
async def model_reasons(settings: SettingsDep) -> ReasonCodesResponse:
    """The reason codes a decline can carry and their adverse-action wording (credit_risk.reasons)."""
    return ReasonCodesResponse(
        max_reasons=settings.max_reasons,
        elderly_age=ELDERLY_AGE,
        codes=[ReasonCodeInfo(**row) for row in reason_table()],
    )


@protected.post("/model/reload", tags=["model"])
async def reload_model(holder: HolderDep) -> StatusResponse:
    """Ask the registry now instead of waiting for the next poll."""
    await asyncio.to_thread(holder.refresh)
    model = holder.current().model
    return StatusResponse(status="ready", detail=f"serving {model.name} version {model.version}")
