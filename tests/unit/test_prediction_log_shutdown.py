"""The shutdown flush against a slow tracking server: what it cannot write in time is spooled.

Seen in the SIGTERM fault test on a loaded machine (issue 14): the worker was still writing 30,000
records to MLflow when the shutdown budget ran out, the process exited, and they were lost.
"""

from __future__ import annotations

import time

import numpy as np
from mlflow.tracking import MlflowClient

from credit_risk.api.prediction_log import PredictionLogger, Spool
from credit_risk.api.prediction_log.sink import MlflowSink
from credit_risk.settings import ApiSettings

BATCH_SECONDS = 0.2  # one log-batch round trip of the slow server


def test_shutdown_spools_what_a_slow_tracking_server_cannot_take_in_time(tmp_path, monkeypatch):
    written: list[int] = []

    def slow_log_batch(self, run_id, records):
        time.sleep(BATCH_SECONDS)
        written.extend(r["seq"] for r in records)

    monkeypatch.setattr(MlflowSink, "_run_for", lambda *_: "run-1")
    monkeypatch.setattr(MlflowSink, "_log_batch", slow_log_batch)
    monkeypatch.setattr(MlflowSink, "upload_chunks", lambda *_, **__: True)
    monkeypatch.setattr(MlflowSink, "finish_runs", lambda *_: None)
    settings = ApiSettings(
        mlflow_tracking_uri="http://127.0.0.1:9",
        prediction_log_spool_dir=tmp_path / "spool",
        prediction_log_flush_seconds=3600,  # only the shutdown flush writes
    )
    plog = PredictionLogger(MlflowClient("http://127.0.0.1:9"), settings)
    plog.start()
    n = 20_000  # 40 log-batches: 8 s of writing, against a 2 s budget
    X = np.zeros((n, 10))
    plog.submit("m", "1", X, np.linspace(0, 1, n), np.zeros(n, dtype=int))
    started = time.monotonic()
    plog.close(timeout=2.0)
    took = time.monotonic() - started
    spool = Spool(tmp_path / "spool")  # free again: the worker let go of it
    spooled, _ = spool.read(n)
    spool.close()
    seqs = sorted(written + [r["seq"] for r in spooled])
    assert seqs == list(range(1, n + 1)), f"{n - len(set(seqs))} records neither logged nor spooled"
    assert written and spooled  # some of each: the budget ran out in the middle
    assert took < 2.0 + BATCH_SECONDS, took
