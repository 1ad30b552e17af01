"""The API's routes, one module per resource; `ROUTERS` is what `create_app` includes."""

from __future__ import annotations

from fastapi import APIRouter, Depends

from credit_risk.api.auth import require_api_key
from credit_risk.api.schemas import ErrorResponse

ERROR_RESPONSES = {
    401: {"model": ErrorResponse, "description": "X-API-Key missing or wrong (when API_KEY is set)"},
    413: {"model": ErrorResponse, "description": "Body or batch too large"},
    422: {"model": ErrorResponse, "description": "Invalid input; `fields` names each bad field"},
    503: {"model": ErrorResponse, "description": "No Production model is served; `detail` says why"},
}
NOT_READY = {503: ERROR_RESPONSES[503]}


def protected_router() -> APIRouter:
    """A router whose routes need the API key (when API_KEY is set) and document the error shapes."""
    return APIRouter(dependencies=[Depends(require_api_key)], responses=ERROR_RESPONSES)
