"""The FastAPI app: `create_app(settings)` wires the model holder and the prediction log in its lifespan."""

from __future__ import annotations

import asyncio
import gc
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated

import numpy as np
import orjson
from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from mlflow.tracking import MlflowClient
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import ValidationError
from starlette.types import ASGIApp

from credit_risk.api.auth import require_api_key
from credit_risk.api.errors import BatchTooLarge, DeclaredBodyLimit, ModelNotReady, install_error_handlers
from credit_risk.api.metrics import ApiMetrics, MetricsMiddleware, StateCollector
from credit_risk.api.model_holder import ModelHolder
from credit_risk.api.prediction_log import PredictionLogger
from credit_risk.api.schemas import (
    BatchPredictionRequest,
    BatchPredictionResponse,
    ErrorResponse,
    HealthResponse,
    ModelInfo,
    PredictionRequest,
    PredictionResponse,
    StatusResponse,
    to_array,
)
from credit_risk.features import FEATURES
from credit_risk.registry import PRODUCTION
from credit_risk.settings import ApiSettings
from credit_risk.tracking import configure_mlflow

log = logging.getLogger(__name__)

_ERRORS = {
    401: {"model": ErrorResponse, "description": "X-API-Key missing or wrong (when API_KEY is set)"},
    413: {"model": ErrorResponse, "description": "Body or batch too large"},
    422: {"model": ErrorResponse, "description": "Invalid input; `fields` names each bad field"},
    503: {"model": ErrorResponse, "description": "No Production model is served; `detail` says why"},
}


def _holder(request: Request) -> ModelHolder:
    return request.app.state.holder


def _prediction_log(request: Request) -> PredictionLogger:
    return request.app.state.prediction_log


def _metrics(request: Request) -> ApiMetrics:
    return request.app.state.metrics


HolderDep = Annotated[ModelHolder, Depends(_holder)]
LogDep = Annotated[PredictionLogger, Depends(_prediction_log)]
MetricsDep = Annotated[ApiMetrics, Depends(_metrics)]

router = APIRouter()
protected = APIRouter(dependencies=[Depends(require_api_key)], responses=_ERRORS)


@router.get("/", tags=["health"])
async def root() -> StatusResponse:
    """Basic liveness."""
    return StatusResponse(status="ok", detail="credit-risk API: see /docs, /health, /model/info")


@router.get("/health/live", tags=["health"])
async def live() -> StatusResponse:
    """200 while the process runs (liveness probe)."""
    return StatusResponse(status="alive")


@router.get("/health/ready", tags=["health"], responses={503: _ERRORS[503]})
async def ready(holder: HolderDep) -> StatusResponse:
    """200 only while a Production model is served (readiness probe), else 503 with the reason."""
    model = holder.current().model
    return StatusResponse(status="ready", detail=f"serving {model.name} version {model.version}")


@router.get("/health", tags=["health"])
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


@router.get("/model/info", tags=["model"], responses={503: _ERRORS[503]})
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


@protected.post("/model/reload", tags=["model"])
async def reload_model(holder: HolderDep) -> StatusResponse:
    """Ask the registry now instead of waiting for the next poll."""
    await asyncio.to_thread(holder.refresh)
    model = holder.current().model
    return StatusResponse(status="ready", detail=f"serving {model.name} version {model.version}")


# `async def` on purpose: a one-row predict takes well under a millisecond, less than the
# hop to the threadpool a plain `def` handler would cost.
@protected.post("/predict", tags=["predict"])
async def predict(
    body: PredictionRequest, holder: HolderDep, plog: LogDep, metrics: MetricsDep
) -> PredictionResponse:
    """Probability of serious delinquency for one applicant, and the decision at the model's threshold."""
    state = holder.current()  # one snapshot for the whole request, even if a swap happens now
    model = state.model
    X = to_array([body])
    probs = state.score(X)
    preds = (probs >= model.threshold).astype(np.int8)
    seq0 = plog.submit(model.name, model.version, X, probs, preds)
    prediction = int(preds[0])
    metrics.record_predictions(prediction, 1)
    return PredictionResponse(
        prediction=prediction,
        probability=float(probs[0]),
        model_version=model.version,
        prediction_id=plog.prediction_ids(seq0, 1)[0],
    )


# The batch body is parsed and validated by pydantic-core in one pass (model_validate_json):
# FastAPI's json.loads-then-validate took ~100 ms of the 200 ms budget for 10,000 records.
# The schema is declared by hand so /docs still shows it.
_BATCH_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {
                "schema": {"$ref": "#/components/schemas/BatchPredictionRequest"},
                "example": BatchPredictionRequest.model_config["json_schema_extra"]["examples"][0],
            }
        },
    }
}


async def _batch_body(request: Request) -> BatchPredictionRequest:
    content_type = request.headers.get("content-type", "")
    if not content_type.split(";")[0].strip().lower().endswith("json"):
        raise RequestValidationError(
            [{"type": "model_attributes_type", "loc": ("body",), "msg": "", "input": ""}]
        )
    try:
        return BatchPredictionRequest.model_validate_json(await request.body())
    except ValidationError as e:
        raise RequestValidationError(
            [
                {**err, "loc": ("body", *err["loc"])} if err["type"] != "json_invalid" else err
                for err in e.errors()
            ]
        ) from None


@protected.post(
    "/predict/batch", tags=["predict"], response_model=BatchPredictionResponse, openapi_extra=_BATCH_BODY
)
async def predict_batch(request: Request, holder: HolderDep, plog: LogDep, metrics: MetricsDep) -> Response:
    """Many applicants in one vectorised model call, answers in request order."""
    body = await _batch_body(request)
    n = len(body.records)
    limit = request.app.state.max_batch_size
    if n > limit:
        raise BatchTooLarge(f"{n} records in one batch; the maximum is {limit} (MAX_BATCH_SIZE)")
    state = holder.current()
    model = state.model
    X = to_array(body.records)
    probs = await _score_batch(state.score, X)
    preds = (probs >= model.threshold).astype(np.int8)
    seq0 = plog.submit(model.name, model.version, X, probs, preds)
    metrics.record_predictions(int(preds.sum()), n)
    ids = plog.prediction_ids(seq0, n)
    items = [
        {"prediction": y, "probability": p, "prediction_id": i}
        for y, p, i in zip(preds.tolist(), probs.tolist(), ids, strict=True)
    ]
    # Serialised directly: 10,000 response models cost more than the prediction itself.
    return Response(
        orjson.dumps({"model_version": model.version, "predictions": items}), media_type="application/json"
    )


async def _score_batch(score, X: np.ndarray) -> np.ndarray:
    # A big batch takes tens of milliseconds: off the event loop, so single predictions keep
    # flowing, and in two halves, since scikit-learn's tree loop releases the GIL (2 cores here).
    if len(X) <= 100:
        return score(X)
    if len(X) < 2000:
        return await asyncio.to_thread(score, X)
    halves = await asyncio.gather(*(asyncio.to_thread(score, part) for part in np.array_split(X, 2)))
    return np.concatenate(halves)


@router.get("/metrics", include_in_schema=False)
async def prometheus_metrics(metrics: MetricsDep) -> Response:
    """Prometheus text format."""
    return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)


class _App(FastAPI):
    """FastAPI with two layers outside everything: request metrics, then the declared-size 413.

    Outside Starlette's own body limiter (which FastAPI puts outside user middleware), so that a
    declared oversize is answered in our error shape and still counted in the metrics.
    """

    def build_middleware_stack(self) -> ASGIApp:
        inner = DeclaredBodyLimit(super().build_middleware_stack(), self.max_body_size)
        return MetricsMiddleware(inner, self.state.metrics)


def create_app(settings: ApiSettings, client: MlflowClient | None = None) -> FastAPI:
    """Build the app; the registry poller and the prediction-log worker live in its lifespan."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        configure_mlflow(settings)
        mlflow_client = client or MlflowClient(tracking_uri=settings.mlflow_tracking_uri)
        holder = ModelHolder(mlflow_client, settings.model_name, settings.model_poll_seconds)
        plog = PredictionLogger(
            mlflow_client,
            experiment=settings.prediction_experiment,
            spool_dir=settings.prediction_log_spool_dir,
            queue_size=settings.prediction_log_queue_size,
            flush_seconds=settings.prediction_log_flush_seconds,
            run_max_records=settings.prediction_log_run_max_records,
            chunk_records=settings.prediction_log_chunk_records,
            chunk_seconds=settings.prediction_log_chunk_seconds,
            enabled=settings.prediction_logging,
            http_timeout=settings.mlflow_http_request_timeout,
        )
        app.state.holder, app.state.prediction_log = holder, plog
        # MLflow, scikit-learn and FastAPI leave ~250k long-lived objects: a full collection
        # walks them all (~120 ms here) and showed up as the p99. Frozen, the GC skips them.
        gc.collect()
        gc.freeze()
        # The first poll runs in the poller thread: the API starts (not ready) even when
        # the tracking server is down, and becomes ready by itself once it is up.
        holder.start()
        plog.start()
        log.info(
            "API up: model %s from %s, polling every %.0fs, prediction logging %s",
            settings.model_name,
            settings.mlflow_tracking_uri,
            settings.model_poll_seconds,
            "on" if plog.enabled else "OFF",
        )
        try:
            yield
        finally:
            holder.stop()
            # Blocking (it may wait on MLflow): in a thread, the loop keeps closing connections.
            await asyncio.to_thread(plog.close, settings.api_shutdown_seconds)
            log.info("API stopped: prediction log %s", plog.stats())

    app = _App(
        title="credit-risk API",
        description="Serves the Production version of the credit-risk model from the MLflow registry.",
        version="1.0.0",
        lifespan=lifespan,
        max_body_size=settings.max_body_bytes,
    )
    metrics = ApiMetrics()
    app.state.metrics = metrics
    app.state.max_batch_size = settings.max_batch_size
    app.state.api_key = settings.api_key.encode() if settings.api_key else None
    metrics.add_collector(
        StateCollector(
            model_version=lambda: _served_version(app),
            log_stats=lambda: _log_stats(app),
        )
    )
    install_error_handlers(app)
    _document_batch_body(app)
    app.include_router(router)
    app.include_router(protected)
    return app


def _document_batch_body(app: FastAPI) -> None:
    """Add the batch body's schema, which no route parameter declares, to the OpenAPI components."""
    build = app.openapi

    def openapi() -> dict:
        if app.openapi_schema is None:
            schema = build()
            batch = BatchPredictionRequest.model_json_schema(ref_template="#/components/schemas/{model}")
            components = schema.setdefault("components", {}).setdefault("schemas", {})
            for name, definition in batch.pop("$defs", {}).items():
                components.setdefault(name, definition)
            components["BatchPredictionRequest"] = batch
        return app.openapi_schema

    app.openapi = openapi


def _served_version(app: FastAPI) -> str | None:
    holder: ModelHolder | None = getattr(app.state, "holder", None)
    model = holder.state.model if holder else None
    return model.version if model else None


def _log_stats(app: FastAPI) -> dict:
    plog: PredictionLogger | None = getattr(app.state, "prediction_log", None)
    if plog is None:
        names = ("queue_depth", "spool_backlog", "logged_total", "spooled_total", "replayed_total")
        return dict.fromkeys((*names, "dropped_total"), 0)
    return plog.stats()


__all__ = ["ModelNotReady", "create_app"]
