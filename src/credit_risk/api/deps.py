"""What routes depend on, as `Annotated` dependencies: the one place that reads `app.state`.

`create_app` puts the settings and the metrics on `app.state`; the lifespan adds the model
holder and the prediction log once they are started.

Every dependency here (and every other one a route uses) is `async def`: FastAPI runs a plain
`def` dependency in its threadpool, and that hop cost more CPU than the whole prediction (issue 11:
seven hops a request). None of them may block. FastAPI also solves every dependency afresh for
each request, so the prediction routes take theirs as one (`Scoring`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request

from credit_risk.api.metrics import ApiMetrics
from credit_risk.api.model_holder import ModelHolder
from credit_risk.api.prediction_log import PredictionLogger
from credit_risk.monitoring.live import StabilityMonitor
from credit_risk.monitoring.outcome_log import OutcomeLog
from credit_risk.settings import ApiSettings


async def get_settings(request: Request) -> ApiSettings:
    """The settings the app was built with."""
    return request.app.state.settings


async def get_holder(request: Request) -> ModelHolder:
    """The model holder (which version is served)."""
    return request.app.state.holder


async def get_prediction_log(request: Request) -> PredictionLogger:
    """The prediction log that every answered prediction is handed to."""
    return request.app.state.prediction_log


async def get_metrics(request: Request) -> ApiMetrics:
    """The app's Prometheus metrics."""
    return request.app.state.metrics


async def get_stability(request: Request) -> StabilityMonitor:
    """The live stability window of the served versions."""
    return request.app.state.stability


async def get_outcome_log(request: Request) -> OutcomeLog | None:
    """The outcome log (None when prediction logging is off: outcomes would have nothing to join)."""
    return request.app.state.outcome_log


@dataclass(frozen=True)
class Scoring:
    """What a prediction uses, built once by the lifespan: one dependency for FastAPI to solve
    per request instead of five."""

    settings: ApiSettings
    holder: ModelHolder
    log: PredictionLogger
    metrics: ApiMetrics
    stability: StabilityMonitor


async def get_scoring(request: Request) -> Scoring:
    """The settings, holder, prediction log, metrics and stability window, together."""
    return request.app.state.scoring


SettingsDep = Annotated[ApiSettings, Depends(get_settings)]
HolderDep = Annotated[ModelHolder, Depends(get_holder)]
LogDep = Annotated[PredictionLogger, Depends(get_prediction_log)]
MetricsDep = Annotated[ApiMetrics, Depends(get_metrics)]
StabilityDep = Annotated[StabilityMonitor, Depends(get_stability)]
OutcomeLogDep = Annotated[OutcomeLog | None, Depends(get_outcome_log)]
ScoringDep = Annotated[Scoring, Depends(get_scoring)]
