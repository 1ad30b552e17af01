"""The FastAPI app: `create_app(settings)` wires the model holder and the prediction log in its lifespan."""

from __future__ import annotations

import asyncio
import gc
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from mlflow.tracking import MlflowClient
from starlette.types import ASGIApp

from credit_risk.api.body_limit import DeclaredBodyLimit
from credit_risk.api.deps import Scoring
from credit_risk.api.errors import install_error_handlers
from credit_risk.api.metrics import ApiMetrics, MetricsMiddleware, StabilityCollector, StateCollector
from credit_risk.api.model_holder import ModelHolder
from credit_risk.api.prediction_log import PredictionLogger
from credit_risk.api.routes import health, model, monitoring, outcomes, predict
from credit_risk.api.schemas import BatchPredictionRequest
from credit_risk.monitoring.live import StabilityMonitor
from credit_risk.monitoring.outcome_log import OutcomeLog
from credit_risk.settings import ApiSettings
from credit_risk.tracking import configure_mlflow

ROUTERS = (health.router, model.router, predict.router, monitoring.router, outcomes.router, model.protected)

log = logging.getLogger(__name__)


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
        plog = PredictionLogger(mlflow_client, settings)
        app.state.holder, app.state.prediction_log = holder, plog
        app.state.scoring = Scoring(settings, holder, plog, app.state.metrics, app.state.stability)
        # Outcomes join logged predictions, and their spool sits in the log's directory.
        outcome_log = (
            OutcomeLog(mlflow_client, settings, plog.process_id, plog.issued) if plog.enabled else None
        )
        app.state.outcome_log = outcome_log
        # MLflow, scikit-learn and FastAPI leave ~250k long-lived objects: a full collection
        # walks them all (~120 ms here) and showed up as the p99. Frozen, the GC skips them.
        gc.collect()
        gc.freeze()
        # The first poll runs in the poller thread: the API starts (not ready) even when
        # the tracking server is down, and becomes ready by itself once it is up.
        holder.start()
        plog.start()
        if outcome_log is not None:
            outcome_log.start()
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
            if outcome_log is not None:
                await asyncio.to_thread(outcome_log.close, settings.api_shutdown_seconds / 2)
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
    app.state.settings = settings
    app.state.metrics = metrics = ApiMetrics()
    metrics.add_collector(
        StateCollector(model_version=lambda: _served_version(app), log_stats=lambda: _log_stats(app))
    )
    app.state.stability = StabilityMonitor(settings.stability_window, settings.stability_monitoring)
    metrics.add_collector(StabilityCollector(lambda: _stability(app)))
    install_error_handlers(app)
    _document_batch_body(app)
    for router in ROUTERS:
        app.include_router(router)
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


# The metrics collector runs before the lifespan has started the holder and the log (and after
# it stopped them): it reports "nothing served" and zero counters then.
def _served_version(app: FastAPI) -> str | None:
    holder: ModelHolder | None = getattr(app.state, "holder", None)
    model = holder.state.model if holder else None
    return model.version if model else None


def _stability(app: FastAPI) -> tuple[str, int, dict] | None:
    holder: ModelHolder | None = getattr(app.state, "holder", None)
    model = holder.state.model if holder else None
    found = app.state.stability.figures(model.version) if model else None
    return (model.version, *found) if found else None


def _log_stats(app: FastAPI) -> dict:
    plog: PredictionLogger | None = getattr(app.state, "prediction_log", None)
    return plog.stats() if plog is not None else PredictionLogger.empty_stats()


__all__ = ["create_app"]
