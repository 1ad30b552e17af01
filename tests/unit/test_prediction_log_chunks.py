"""Chunk file names: the newest timestamp a sealed chunk holds, and the names from before it."""

from __future__ import annotations

import math

import orjson
from mlflow.tracking import MlflowClient

from credit_risk.api.prediction_log.records import chunk_name, parse_chunk_name
from credit_risk.api.prediction_log.sink import MlflowSink
from credit_risk.settings import ApiSettings


def test_a_sealed_chunk_name_gives_back_its_process_first_seq_and_newest_timestamp():
    name = chunk_name("0123456789ab", 42, 1_764_000_000_123)
    assert name == "predictions-0123456789ab-000000000042-1764000000123.jsonl"
    assert parse_chunk_name(name) == ("0123456789ab", 42, 1_764_000_000_123)


def test_a_chunk_name_without_a_newest_timestamp_parses_as_unbounded():
    # The name sealed chunks had before the bound (and an open chunk's, without ".part").
    old = "predictions-0123456789ab-000000000042.jsonl"
    assert chunk_name("0123456789ab", 42) == old
    assert parse_chunk_name(old) == ("0123456789ab", 42, math.inf)


def test_parse_chunk_name_refuses_other_files():
    for name in ("outcomes-1-2.jsonl", "predictions-abc.jsonl", "predictions-a-1-2.jsonl.part", "x.json"):
        assert parse_chunk_name(name) is None, name


def _sink(tmp_path) -> MlflowSink:
    settings = ApiSettings(mlflow_tracking_uri="http://127.0.0.1:9", prediction_log_spool_dir=tmp_path)
    return MlflowSink(MlflowClient("http://127.0.0.1:9"), settings, tmp_path / "chunks")


def test_a_chunk_recovered_after_a_crash_is_named_by_its_newest_whole_record(tmp_path):
    part = tmp_path / "chunks" / "run-1" / (chunk_name("0123456789ab", 7) + ".part")
    part.parent.mkdir(parents=True)
    lines = [orjson.dumps({"seq": 7 + i, "ts_ms": ts}) for i, ts in enumerate((500, 900, 700))]
    part.write_bytes(b"\n".join(lines) + b'\n{"seq": 10, "ts_ms": 99')  # torn by the crash
    _sink(tmp_path).recover_chunks()
    assert [p.name for p in part.parent.iterdir()] == [chunk_name("0123456789ab", 7, 900)]


def test_a_recovered_chunk_without_a_whole_record_keeps_the_unbounded_name(tmp_path):
    part = tmp_path / "chunks" / "run-1" / (chunk_name("0123456789ab", 7) + ".part")
    part.parent.mkdir(parents=True)
    part.write_bytes(b'{"seq": 7, "ts')
    _sink(tmp_path).recover_chunks()
    assert [p.name for p in part.parent.iterdir()] == [chunk_name("0123456789ab", 7)]
