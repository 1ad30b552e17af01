"""Predictions: one applicant (`/predict`) or many in one vectorised call (`/predict/batch`)."""

from __future__ import annotations

import asyncio
import functools
from typing import Annotated, Literal

import numpy as np
import orjson
from fastapi import Depends, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from pydantic import ValidationError

from credit_risk.api.deps import ScoringDep
from credit_risk.api.errors import BatchTooLarge
from credit_risk.api.routes import protected_router
from credit_risk.api.schemas import (
    BatchPredictionRequest,
    BatchPredictionResponse,
    PredictionRequest,
    PredictionResponse,
    to_array,
)
from credit_risk.reasons import reasons_for

router = protected_router()


async def _explain(
    request: Request,
    explain: Annotated[
        Literal["true", "false"],
        Query(description="`true`: reasons for every applicant, approvals too (by default declines only)"),
    ] = "false",
) -> bool:
    # The query string as strictly as the body: `explain` exactly `true` or `false` (FastAPI's bool
    # would take "1", "on", "yes"...), given once (FastAPI would keep the last of several), and
    # nothing else (a misspelt "explian=true" would otherwise be ignored without a word).
    errors = [
        {"type": "extra_forbidden", "loc": ("query", name), "msg": "unknown", "input": None}
        for name in sorted(set(request.query_params) - {"explain"})
    ]
    if len(request.query_params.getlist("explain")) > 1:
        errors.append({"type": "value_error", "loc": ("query", "explain"), "msg": "twice", "input": None})
    if errors:
        raise RequestValidationError(errors)
    return explain == "true"


ExplainDep = Annotated[bool, Depends(_explain)]


# Batches up to this size are scored on the event loop (faster than a thread hop); up to
# SPLIT_ROWS in one worker thread; from SPLIT_ROWS on, in two halves on two threads, since
# scikit-learn's tree loop releases the GIL (2 cores here).
INLINE_ROWS = 100
SPLIT_ROWS = 2000


# `async def` on purpose: a one-row predict takes well under a millisecond, less than the
# hop to the threadpool a plain `def` handler would cost.
@router.post("/predict", tags=["predict"])
async def predict(
    body: PredictionRequest,
    scoring: ScoringDep,
    explain: ExplainDep,
) -> PredictionResponse:
    """Probability of serious delinquency for one applicant, the decision at the model's threshold,
    and for a decline the principal reasons."""
    state = scoring.holder.current()  # one snapshot for the whole request, even if a swap happens now
    model = state.model
    X = to_array([body])
    probs = state.score(X)
    preds = (probs >= model.threshold).astype(np.int8)
    reasons = reasons_for(state.explainer, X, preds, explain, scoring.settings.max_reasons)
    seq0 = scoring.log.submit(model.name, model.version, X, probs, preds, reasons)
    scoring.stability.observe(model.version, state.reference, X, probs)
    prediction = int(preds[0])
    scoring.metrics.record_predictions(prediction, 1)
    scoring.metrics.record_reasons(reasons)
    return PredictionResponse(
        prediction=prediction,
        probability=float(probs[0]),
        model_version=model.version,
        prediction_id=scoring.log.prediction_ids(seq0, 1)[0],
        reasons=reasons[0],
    )


# The batch body is parsed and validated by pydantic-core in one pass (model_validate_json):
# FastAPI's json.loads-then-validate took ~100 ms of the 200 ms budget for 10,000 records.
# The schema is declared by hand so /docs still shows it (app.document_batch_body adds it).
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


@router.post(
    "/predict/batch", tags=["predict"], response_model=BatchPredictionResponse, openapi_extra=_BATCH_BODY
)
async def predict_batch(
    request: Request,
    scoring: ScoringDep,
    explain: ExplainDep,
) -> Response:
    """Many applicants in one vectorised model call, answers in request order."""
    body = await _batch_body(request)
    n = len(body.records)
    if n > scoring.settings.max_batch_size:
        raise BatchTooLarge(
            f"{n} records in one batch; the maximum is {scoring.settings.max_batch_size} (MAX_BATCH_SIZE)"
        )
    state = scoring.holder.current()
    model = state.model
    X = to_array(body.records)
    probs = await _in_parts(state.score, np.concatenate, X)
    preds = (probs >= model.threshold).astype(np.int8)
    explain_part = functools.partial(
        reasons_for, state.explainer, explain_all=explain, max_reasons=scoring.settings.max_reasons
    )
    reasons = await _in_parts(explain_part, lambda halves: halves[0] + halves[1], X, preds)
    seq0 = scoring.log.submit(model.name, model.version, X, probs, preds, reasons)
    scoring.stability.observe(model.version, state.reference, X, probs)
    scoring.metrics.record_predictions(int(preds.sum()), n)
    scoring.metrics.record_reasons(reasons)
    ids = scoring.log.prediction_ids(seq0, n)
    items = [
        {"prediction": y, "probability": p, "prediction_id": i, "reasons": r}
        for y, p, i, r in zip(preds.tolist(), probs.tolist(), ids, reasons, strict=True)
    ]
    # Serialised directly: 10,000 response models cost more than the prediction itself.
    return Response(
        orjson.dumps({"model_version": model.version, "predictions": items}), media_type="application/json"
    )


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


async def _in_parts(fn, join, *arrays):
    """`fn(*arrays)` for a batch; `join` puts two halves' results back together.

    A big batch takes tens of milliseconds: off the event loop, so single predictions keep
    flowing; from SPLIT_ROWS on in two halves on two threads (the tree loops release the GIL).
    """
    n = len(arrays[0])
    if n <= INLINE_ROWS:
        return fn(*arrays)
    if n < SPLIT_ROWS:
        return await asyncio.to_thread(fn, *arrays)
    halves = zip(*(np.array_split(a, 2) for a in arrays), strict=True)
    return join(await asyncio.gather(*(asyncio.to_thread(fn, *part) for part in halves)))
