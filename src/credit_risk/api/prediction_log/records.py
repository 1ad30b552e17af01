"""The shape of a logged prediction: what a request hands over, and the record it becomes."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from credit_risk.features import FEATURES


def prediction_id(process_id: str, seq: int) -> str:
    """The one id format: the API process's id and the prediction's sequence number in it."""
    return f"{process_id}-{seq}"


@dataclass(frozen=True, slots=True)
class Block:
    """What one request hands over: its rows, not yet expanded (expanding is the worker's job)."""

    seq0: int
    ts_ms: int
    model_name: str
    version: str
    X: np.ndarray
    probs: np.ndarray
    preds: np.ndarray
    # Per row, the reasons given (credit_risk.reasons.reasons_for), or None when none were computed.
    reasons: list[list[dict]] | None = None


def expand(block: Block, process_id: str) -> list[dict]:
    """One record per row: ids, model, inputs (NaN becomes null in JSON), probability, prediction, reasons."""
    rows = block.X.tolist()
    probs = block.probs.tolist()
    preds = block.preds.tolist()
    out = []
    for i, (row, p, y) in enumerate(zip(rows, probs, preds, strict=True)):
        seq = block.seq0 + i
        record = {
            "prediction_id": prediction_id(process_id, seq),
            "process": process_id,
            "seq": seq,
            "ts_ms": block.ts_ms,
            "model_name": block.model_name,
            "model_version": block.version,
        }
        record.update(zip(FEATURES, row, strict=True))  # NaN becomes null in JSON
        record["probability"] = p
        record["prediction"] = int(y)
        if block.reasons is not None:
            record["reasons"] = [
                {"code": r["code"], "contribution": r["contribution"]} for r in block.reasons[i]
            ]
        out.append(record)
    return out
