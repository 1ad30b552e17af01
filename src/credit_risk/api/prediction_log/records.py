"""The shape of a logged prediction: what a request hands over, and the record it becomes."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

import numpy as np

from credit_risk.features import FEATURES


def prediction_id(process_id: str, seq: int) -> str:
    """The one id format: the API process's id and the prediction's sequence number in it."""
    return f"{process_id}-{seq}"


_CHUNK_NAME = re.compile(r"predictions-(?P<process>[^-]+)-(?P<seq>\d+)(?:-(?P<max_ts>\d+))?\.jsonl")


def chunk_name(process_id: str, first_seq: int, max_ts_ms: int | None = None) -> str:
    """A chunk file's name; a sealed chunk's holds its newest record's `ts_ms`, an open one's does not.

    The bound lets `--last N` stop reading once no unread chunk can hold a newer record (issue 12).
    """
    bound = "" if max_ts_ms is None else f"-{max_ts_ms}"
    return f"predictions-{process_id}-{first_seq:012d}{bound}.jsonl"


def parse_chunk_name(name: str) -> tuple[str, int, float] | None:
    """(process, first seq, newest `ts_ms`) from a chunk file's name, None for another file.

    The newest is +inf when the name has none (an open chunk, or one sealed before names held it):
    such a chunk may hold any timestamp, so a reader must always read it.
    """
    m = _CHUNK_NAME.fullmatch(name)
    if m is None:
        return None
    return m["process"], int(m["seq"]), math.inf if m["max_ts"] is None else int(m["max_ts"])


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
