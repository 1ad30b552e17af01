"""Reading the prediction log back from MLflow: the JSON-lines chunks of one model version.

The API writes them (api/prediction_log, docs/prediction-log.md) as artifacts
`predictions/predictions-<process>-<first step>-<newest ts_ms>.jsonl` of runs tagged `model_name`
and `model_version` in the prediction experiment (names without the newest timestamp, from before
it was added, are read too). A record may reach a chunk twice only if an upload was retried after
its answer was lost; records are kept once per `prediction_id`.
"""

from __future__ import annotations

import heapq
import logging
import math
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import numpy as np
import orjson
from mlflow.tracking import MlflowClient

from credit_risk.api.prediction_log.records import parse_chunk_name
from credit_risk.features import FEATURES

log = logging.getLogger(__name__)

ARTIFACT_DIR = "predictions"  # api/prediction_log/sink.py writes here
PROGRESS_SECONDS = 2.0


@dataclass(frozen=True)
class LoggedPredictions:
    """Logged predictions of one version, in time order."""

    ids: list[str]
    ts_ms: np.ndarray
    X: np.ndarray
    probability: np.ndarray
    prediction: np.ndarray

    def __len__(self) -> int:
        return len(self.ids)


def _runs(client: MlflowClient, experiment_id: str, model_name: str, version: str) -> list:
    runs, token = [], None
    query = f"tags.model_name = '{model_name}' and tags.model_version = '{version}'"
    while True:
        page = client.search_runs(
            [experiment_id],
            query,
            max_results=1000,
            order_by=["attributes.start_time DESC"],
            page_token=token,
        )
        runs.extend(page)
        token = page.token
        if not token:
            return runs


def _chunks(client: MlflowClient, runs: list) -> list[tuple[float, str, str]]:
    """(newest ts_ms it can hold, run id, path) of every chunk of the runs, the newest bound first."""
    found = []
    for run in runs:
        for f in client.list_artifacts(run.info.run_id, ARTIFACT_DIR):
            if f.path.endswith(".jsonl"):
                parsed = parse_chunk_name(PurePosixPath(f.path).name)
                found.append((math.inf if parsed is None else parsed[2], run.info.run_id, f.path))
    return sorted(found, reverse=True)


def read_predictions(
    client: MlflowClient,
    experiment_id: str,
    model_name: str,
    version: str,
    since_ms: int | None = None,
    until_ms: int | None = None,
    last: int | None = None,
    progress: Callable[[str], None] = log.info,
) -> LoggedPredictions:
    """The version's logged predictions in [since_ms, until_ms), or its last `last` ones (by
    `ts_ms` across all its runs, ties by process and sequence number)."""
    records: dict[str, tuple] = {}
    newest: list[int] = []  # with `last`: a min-heap of the `last` newest timestamps read so far
    runs = [
        r
        for r in _runs(client, experiment_id, model_name, version)
        if until_ms is None or r.info.start_time < until_ms
    ]
    chunks = _chunks(client, runs)
    torn = 0
    started = last_line = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="credit-risk-monitor-") as tmp:
        for i, (_, run_id, path) in enumerate(chunks, 1):
            local = Path(client.download_artifacts(run_id, path, tmp))
            for line in local.read_bytes().splitlines():
                try:
                    r = orjson.loads(line)
                except orjson.JSONDecodeError:
                    # A crash tore the line as it was written (the chunk was recovered after it):
                    # the record cannot be read back; say so, read on.
                    torn += 1
                    continue
                ts = r["ts_ms"]
                if (since_ms is not None and ts < since_ms) or (until_ms is not None and ts >= until_ms):
                    continue
                if last is not None and r["prediction_id"] not in records:
                    if len(newest) < last:
                        heapq.heappush(newest, ts)
                    elif ts > newest[0]:
                        heapq.heapreplace(newest, ts)
                records[r["prediction_id"]] = (ts, r["process"], r["seq"], r)
            local.unlink()
            # Chunks come by their bound, newest first, across runs: once `last` records are newer
            # than the next chunk's bound, no unread chunk can hold one of the `last` newest.
            # Strictly newer: a record of that chunk as old as the oldest of them could win the tie.
            done = last is not None and len(newest) == last and i < len(chunks) and newest[0] > chunks[i][0]
            now = time.monotonic()
            if now - last_line >= PROGRESS_SECONDS or i == len(chunks) or done:
                progress(f"read {i}/{len(chunks)} chunks, {len(records):,} predictions, {now - started:.1f}s")
                last_line = now
            if done:
                break
    if torn:
        progress(f"skipped {torn:,} torn line(s): records a crash cut off as they were written")
    ordered = sorted(records.values(), key=lambda t: t[:3])
    if last is not None:
        ordered = ordered[-last:]
    rows = [t[3] for t in ordered]
    X = np.array([[r[f] for f in FEATURES] for r in rows], dtype=np.float64).reshape(-1, len(FEATURES))
    return LoggedPredictions(
        ids=[r["prediction_id"] for r in rows],
        ts_ms=np.array([r["ts_ms"] for r in rows], dtype=np.int64),
        X=X,
        probability=np.array([r["probability"] for r in rows], dtype=np.float64),
        prediction=np.array([r["prediction"] for r in rows], dtype=np.int8),
    )
