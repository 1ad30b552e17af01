"""Reading the prediction log back (`--last N`) when several API processes logged at once (issue 12).

The chunks are written by the API's own sink (MlflowSink), one per simulated process, against a
real `mlflow server`; the reader is the one `python -m credit_risk.monitor --last N` calls.
"""

from __future__ import annotations

import numpy as np
import orjson
import pytest
from mlflow.tracking import MlflowClient

from credit_risk.api.prediction_log.records import Block, expand, prediction_id
from credit_risk.api.prediction_log.sink import MlflowSink
from credit_risk.features import FEATURES
from credit_risk.monitoring.predictions import read_predictions
from credit_risk.settings import ApiSettings
from credit_risk.tracking import get_or_create_experiment

pytestmark = pytest.mark.integration

VERSION = "1"


def _records(model_name: str, process: str, first_seq: int, ts_ms: range) -> list[dict]:
    """One record per timestamp, numbered from `first_seq` in `process`."""
    out = []
    for i, ts in enumerate(ts_ms):
        X = np.full((1, len(FEATURES)), float(ts))
        block = Block(first_seq + i, ts, model_name, VERSION, X, np.array([0.5]), np.array([0]))
        out.extend(expand(block, process))
    return out


def _sink(tracking_uri: str, model_name: str, tmp_path, process: str) -> MlflowSink:
    settings = ApiSettings(
        mlflow_tracking_uri=tracking_uri,
        model_name=model_name,
        prediction_experiment=f"predictions-{model_name}",
    )
    return MlflowSink(MlflowClient(tracking_uri), settings, tmp_path / process / "chunks")


def _log(sink: MlflowSink, records: list[dict]) -> None:
    """Write the records and upload them as one chunk of their own."""
    assert sink.write(records) == []
    assert sink.upload_chunks(seal_all=True)


def _read_last(tracking_uri: str, model_name: str, n: int, progress: list[str] | None = None) -> list[str]:
    client = MlflowClient(tracking_uri)
    exp_id = client.get_experiment_by_name(f"predictions-{model_name}").experiment_id
    lines = [] if progress is None else progress
    return read_predictions(client, exp_id, model_name, VERSION, last=n, progress=lines.append).ids


def _interleaved(tracking_uri: str, model_name: str, tmp_path) -> None:
    """Process B logs ts 0-99, then A (whose run starts later) 100-199, then B again 200-299."""
    a, b = "aaaaaaaaaaaa", "bbbbbbbbbbbb"
    sink_a, sink_b = (_sink(tracking_uri, model_name, tmp_path, p) for p in (a, b))
    _log(sink_b, _records(model_name, b, 1, range(0, 100)))
    _log(sink_a, _records(model_name, a, 1, range(100, 200)))
    _log(sink_b, _records(model_name, b, 101, range(200, 300)))


def test_last_n_are_the_newest_across_runs_logging_interleaved(tracking_uri, model_name, tmp_path):
    _interleaved(tracking_uri, model_name, tmp_path)
    client = MlflowClient(tracking_uri)
    exp_id = client.get_experiment_by_name(f"predictions-{model_name}").experiment_id
    names = sorted(
        f.path
        for r in client.search_runs([exp_id])
        for f in client.list_artifacts(r.info.run_id, "predictions")
    )
    # Sealed chunks carry their newest record's timestamp in their name.
    assert names == [
        "predictions/predictions-aaaaaaaaaaaa-000000000001-199.jsonl",
        "predictions/predictions-bbbbbbbbbbbb-000000000001-99.jsonl",
        "predictions/predictions-bbbbbbbbbbbb-000000000101-299.jsonl",
    ]
    # A's run is the newest, but B logged the newest 100 predictions: only B's 200-299, and the
    # reader knew from the names that the other two chunks could hold none newer.
    progress: list[str] = []
    assert _read_last(tracking_uri, model_name, 100, progress) == [
        prediction_id("bbbbbbbbbbbb", s) for s in range(101, 201)
    ]
    assert progress[-1].startswith("read 1/3 chunks, 100 predictions")
    newest_150 = _read_last(tracking_uri, model_name, 150)
    assert newest_150 == [prediction_id("aaaaaaaaaaaa", s) for s in range(51, 101)] + [
        prediction_id("bbbbbbbbbbbb", s) for s in range(101, 201)
    ]


def test_last_n_reads_chunks_named_before_the_bound_always(tracking_uri, model_name, tmp_path):
    """A chunk uploaded under the old name (no newest timestamp) may hold the newest records."""
    _interleaved(tracking_uri, model_name, tmp_path)
    client = MlflowClient(tracking_uri)
    exp_id = get_or_create_experiment(client, f"predictions-{model_name}")
    c = "cccccccccccc"
    run = client.create_run(exp_id, tags={"model_name": model_name, "model_version": VERSION})
    old = tmp_path / f"predictions-{c}-{1:012d}.jsonl"  # the name sealed chunks had before
    old.write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in _records(model_name, c, 1, range(300, 350))))
    client.log_artifact(run.info.run_id, str(old), "predictions")
    assert _read_last(tracking_uri, model_name, 100) == [
        prediction_id("bbbbbbbbbbbb", s) for s in range(151, 201)
    ] + [prediction_id(c, s) for s in range(1, 51)]


def test_a_torn_line_is_skipped_and_reported_not_fatal(tracking_uri, model_name, tmp_path):
    """A chunk recovered after a crash may end in a half-written line: the rest is still read."""
    client = MlflowClient(tracking_uri)
    exp_id = get_or_create_experiment(client, f"predictions-{model_name}")
    d = "dddddddddddd"
    run = client.create_run(exp_id, tags={"model_name": model_name, "model_version": VERSION})
    whole = b"".join(orjson.dumps(r) + b"\n" for r in _records(model_name, d, 1, range(0, 10)))
    torn = orjson.dumps(_records(model_name, d, 11, range(10, 11))[0])[:40]
    chunk = tmp_path / f"predictions-{d}-{1:012d}.jsonl"
    chunk.write_bytes(whole + torn)
    client.log_artifact(run.info.run_id, str(chunk), "predictions")
    progress: list[str] = []
    assert _read_last(tracking_uri, model_name, 100, progress) == [prediction_id(d, s) for s in range(1, 11)]
    assert any("skipped 1 torn line" in line for line in progress), progress
