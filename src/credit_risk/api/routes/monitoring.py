"""Stability of what the served version scores: `GET /monitoring/stability` (issue 12).

The response models live here, not in schemas.py: they belong to this resource alone.
"""

from __future__ import annotations

from fastapi import APIRouter
from pydantic import BaseModel, Field

from credit_risk.api.deps import HolderDep, StabilityDep
from credit_risk.api.errors import ApiError
from credit_risk.api.routes import NOT_READY
from credit_risk.api.schemas import ErrorResponse
from credit_risk.monitoring.bins import worst
from credit_risk.monitoring.reference import SCORE, Figures

router = APIRouter(tags=["monitoring"])


class NoStabilityReference(ApiError):
    """The served version was trained without a stability reference (or it could not be read)."""

    status = 404
    code = "no_stability_reference"


class CharacteristicStability(BaseModel):
    """PSI of one characteristic over the live window, against the training split."""

    psi: float | None = Field(description="Population stability index; null before any prediction.")
    band: str | None = Field(description='"stable" (< 0.10), "watch" (0.10-0.25) or "act" (> 0.25).')
    window_size: int
    missing_share: float | None
    outside_range_share: float | None = Field(description="Share of values outside the training range.")


class StabilityResponse(BaseModel):
    """The served version's live window: the score and each input."""

    model_version: str
    window_size: int = Field(description="Predictions in the window (90-100% of STABILITY_WINDOW once full).")
    window_capacity: int
    reference_rows: int = Field(description="Rows of the training split the reference counts.")
    band: str | None = Field(description="The worst band of the score and the inputs.")
    score: CharacteristicStability
    features: dict[str, CharacteristicStability]


def _item(f: Figures) -> CharacteristicStability:
    return CharacteristicStability(**f.to_dict())


@router.get(
    "/monitoring/stability",
    responses={
        **NOT_READY,
        404: {"model": ErrorResponse, "description": "The served version has no stability reference"},
    },
)
async def stability(holder: HolderDep, monitor: StabilityDep) -> StabilityResponse:
    """PSI, band, window size, missing share and out-of-range share of the score and every input."""
    state = holder.current()
    version, reference = state.model.version, state.reference
    if reference is None:
        raise NoStabilityReference(f"version {version} has no stability reference (trained before issue 12?)")
    if not monitor.enabled:
        raise NoStabilityReference("live stability monitoring is off (STABILITY_MONITORING=false)")
    found = monitor.figures(version)
    if found is None:
        rows, figures = 0, reference.figures(reference.tally_empty())
    else:
        rows, figures = found
    return StabilityResponse(
        model_version=version,
        window_size=rows,
        window_capacity=monitor.capacity,
        reference_rows=reference.rows,
        band=worst([f.band for f in figures.values()]),
        score=_item(figures[SCORE]),
        features={name: _item(f) for name, f in figures.items() if name != SCORE},
    )
