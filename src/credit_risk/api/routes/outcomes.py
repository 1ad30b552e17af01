"""Observed outcomes: `POST /outcomes`, joined later to the logged predictions by id (issue 12).

The request and response models live here: they belong to this resource alone.
"""

from __future__ import annotations

import asyncio

from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ConfigDict, Field

from credit_risk.api.deps import OutcomeLogDep
from credit_risk.api.errors import ApiError
from credit_risk.api.routes import protected_router

router = protected_router()


class OutcomesOff(ApiError):
    """Outcomes join logged predictions: with prediction logging off there is nothing to join."""

    status = 503
    code = "outcomes_off"


class ObservedOutcome(BaseModel):
    """What happened to one applicant the API scored."""

    model_config = ConfigDict(extra="forbid")

    prediction_id: str = Field(max_length=40, description="The id /predict answered with.")
    defaulted: int = Field(strict=True, ge=0, le=1, description="1 = serious delinquency, 0 = none.")


class OutcomesRequest(BaseModel):
    """Outcomes of earlier predictions."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"examples": [{"outcomes": [{"prediction_id": "0123456789ab-1", "defaulted": 0}]}]},
    )

    outcomes: list[ObservedOutcome] = Field(min_length=1, max_length=10_000)


class OutcomesResponse(BaseModel):
    """What was recorded."""

    recorded: int = Field(description="Outcomes new to this API process, on disk and on their way to MLflow.")
    duplicates: list[str] = Field(description="Ids given twice (in this request or earlier): counted once.")
    unverified: int = Field(
        description="Outcomes whose id MLflow could not confirm now; checked before they are uploaded."
    )


@router.post("/outcomes", tags=["outcomes"])
async def record_outcomes(body: OutcomesRequest, outcome_log: OutcomeLogDep) -> OutcomesResponse:
    """Record observed outcomes; an id the prediction log does not hold refuses the whole request."""
    if outcome_log is None:
        raise OutcomesOff(
            "prediction logging is off (PREDICTION_LOGGING=false): outcomes have nothing to join"
        )
    ids = [o.prediction_id for o in body.outcomes]
    unknown, checked = await asyncio.to_thread(outcome_log.unknown, ids)
    if unknown:
        bad = set(unknown)
        raise RequestValidationError(
            [
                {
                    "type": "value_error",
                    "loc": ("body", "outcomes", i, "prediction_id"),
                    "msg": f"unknown prediction_id {o.prediction_id!r}",
                }
                for i, o in enumerate(body.outcomes)
                if o.prediction_id in bad
            ]
        )
    recorded, repeated = await asyncio.to_thread(
        outcome_log.record, [(o.prediction_id, o.defaulted) for o in body.outcomes], checked
    )
    return OutcomesResponse(recorded=recorded, duplicates=repeated, unverified=0 if checked else recorded)
