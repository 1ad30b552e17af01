"""Liveness, readiness, the combined health answer, and the Prometheus metrics."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from credit_risk.api.deps import HolderDep, LogDep, MetricsDep
from credit_risk.api.routes import NOT_READY
from credit_risk.api.schemas import HealthResponse, StatusResponse

router = APIRouter(tags=["health"])


@router.get("/")
async def root() -> StatusResponse:
    """Basic liveness."""
    return StatusResponse(status="ok", detail="credit-risk API: see /docs, /health, /model/info")


@router.get("/health/live")
async def live() -> StatusResponse:
    """200 while the process runs (liveness probe)."""
    return StatusResponse(status="alive")


@router.get("/health/ready", responses=NOT_READY)
async def ready(holder: HolderDep) -> StatusResponse:
    """200 only while a Production model is served (readiness probe), else 503 with the reason."""
    model = holder.current().model
    return StatusResponse(status="ready", detail=f"serving {model.name} version {model.version}")


@router.get("/health")
async def health(holder: HolderDep, plog: LogDep) -> HealthResponse:
    """Process, tracking server, served model and prediction-log backlog in one answer."""
    state = holder.state
    return HealthResponse(
        status="ok" if state.model else "degraded",
        ready=state.model is not None,
        reason=state.reason or None,
        tracking_server_reachable=holder.tracking_reachable,
        last_poll_at=holder.last_poll_at,
        model_name=holder.model_name,
        model_version=state.model.version if state.model else None,
        scorer=state.scorer or None,
        prediction_log=plog.stats(),
    )


@router.get("/metrics", include_in_schema=False)
async def prometheus_metrics(metrics: MetricsDep) -> Response:
    """Prometheus text format."""
    return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)
