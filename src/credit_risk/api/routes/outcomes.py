"""Observed outcomes: `POST /outcomes`, joined later to the logged predictions by id (issue 12).

The request and response models live here: they belong to this resource alone.
"""

from __future__ import annotations

import asyncio

from pydantic import BaseModel, ConfigDict, Field

from credit_risk.api.deps import OutcomeLogDep
from credit_risk.api.errors import ApiError
from credit_risk.api.routes import protected_router
from credit_risk.api.schemas import ErrorResponse

router = protected_router()
# The answer names at most this many unknown ids (a batch of 10,000 can be wrong everywhere).
MAX_NAMED = 100


class OutcomesOff(ApiError):
    """Outcomes join logged predictions: with prediction logging off there is nothing to join."""

    status = 503
    code = "outcomes_off"


class UnknownPredictions(ApiError):
    """Some prediction ids are not in the prediction log: nothing is recorded, each is named.

    404 rather than 422: the body is well formed, what it refers to does not exist.
    """

    status = 404
    code = "unknown_prediction_id"

    def __init__(self, fields: list[dict[str, str]]):
        shown = ", ".join(f["message"].removeprefix("unknown prediction_id ") for f in fields[:5])
        more = f" (and {len(fields) - 5} more)" if len(fields) > 5 else ""
        super().__init__(f"{len(fields)} unknown prediction ids, nothing recorded: {shown}{more}")
        self.fields = fields


class ObservedOutcome(BaseModel):
    """What happened to one applicant the API scored."""

    model_config = ConfigDict(extra="forbid")

    prediction_id: str = Field(max_length=40, description="The id /predict answered with.")
    # A number that is 0 or 1, as the schema's counts are: JSON Schema's "integer" admits 1.0, which
    # strict int refused (schemathesis found it); strings and booleans stay refused.
    defaulted: float = Field(
        strict=True, ge=0, le=1, multiple_of=1, description="1 = serious delinquency, 0 = none."
    )


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


@router.post(
    "/outcomes",
    tags=["outcomes"],
    responses={
        404: {"model": ErrorResponse, "description": "Unknown prediction ids, each named in `fields`"}
    },
)
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
        raise UnknownPredictions(
            [
                {
                    "field": f"outcomes[{i}].prediction_id",
                    "message": f"unknown prediction_id {o.prediction_id!r}",
                }
                for i, o in enumerate(body.outcomes)
                if o.prediction_id in bad
            ][:MAX_NAMED]
        )
    recorded, repeated = await asyncio.to_thread(
        outcome_log.record, [(o.prediction_id, int(o.defaulted)) for o in body.outcomes], checked
    )
    return OutcomesResponse(recorded=recorded, duplicates=repeated, unverified=0 if checked else recorded)
