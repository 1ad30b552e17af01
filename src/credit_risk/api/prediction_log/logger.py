"""The prediction log's front: a bounded queue that never makes a request wait, and its worker."""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections import deque
from pathlib import Path

import numpy as np
from mlflow.tracking import MlflowClient

from credit_risk.api.prediction_log.records import Block, expand, prediction_id
from credit_risk.api.prediction_log.sink import RECORDS_PER_BATCH, MlflowSink
from credit_risk.api.prediction_log.spool import Spool
from credit_risk.settings import ApiSettings

log = logging.getLogger("credit_risk.api.prediction_log")


class PredictionLogger:
    """The bounded queue, its worker thread and the spool, behind one `submit` call."""

    def __init__(self, client: MlflowClient, settings: ApiSettings):
        self.process_id = uuid.uuid4().hex[:12]
        self.enabled = settings.prediction_logging
        self._queue: deque[Block] = deque()
        self._queue_size = settings.prediction_log_queue_size
        self._flush_seconds = settings.prediction_log_flush_seconds
        self._lock = threading.Lock()
        self._next_seq = 1
        self._queued = 0
        self.spooled = 0
        self.replayed = 0
        self.dropped = 0
        self._retry_at = 0.0
        self._backoff = 1.0
        self._overflow_logged_at = 0.0
        self.tracking_ok: bool | None = None
        self._stop = threading.Event()
        # Set by close(): the final flush writes to MLflow until then and spools the rest, so a
        # slow tracking server cannot keep records in flight past the shutdown budget (issue 14).
        self._final_deadline: float | None = None
        self._thread: threading.Thread | None = None
        self._spool: Spool | None = None
        self._sink: MlflowSink | None = None
        if self.enabled:
            spool_dir = Path(settings.prediction_log_spool_dir)
            self._spool = Spool(spool_dir)
            self._sink = MlflowSink(client, settings, spool_dir / "chunks")

    def prediction_ids(self, seq0: int, n: int) -> list[str]:
        """The ids of `n` predictions numbered from `seq0`."""
        pid = self.process_id
        return [prediction_id(pid, s) for s in range(seq0, seq0 + n)]

    def issued(self, prediction_id: str) -> bool:
        """True when this process answered with `prediction_id` and logs it (outcomes check ids so)."""
        process, _, seq = prediction_id.partition("-")
        return self.enabled and process == self.process_id and seq.isdigit() and 0 < int(seq) < self._next_seq

    def submit(
        self,
        model_name: str,
        version: str,
        X: np.ndarray,
        probs: np.ndarray,
        preds: np.ndarray,
        reasons: list[list[dict]] | None = None,
    ) -> int:
        """Number the predictions and queue them; returns the first sequence number. Never waits."""
        n = len(probs)
        with self._lock:
            seq0 = self._next_seq
            self._next_seq += n
            if not self.enabled:
                return seq0
            full = self._queued + n > self._queue_size
            if not full:
                self._queued += n
        block = Block(seq0, time.time_ns() // 1_000_000, model_name, version, X, probs, preds, reasons)
        if full:
            # Overflow goes to disk rather than waiting or dropping; it lands ahead of what
            # is still queued, but every record keeps its own step so MLflow orders them.
            self._to_spool(expand(block, self.process_id))
            now = time.monotonic()
            if now - self._overflow_logged_at > 10:
                self._overflow_logged_at = now
                log.warning("prediction log: queue full (%d records); spooling to disk", self._queue_size)
        else:
            self._queue.append(block)
        return seq0

    def _to_spool(self, records: list[dict]) -> None:
        try:
            self._spool.append(records)
            with self._lock:  # both the worker and an overflowing request count here
                self.spooled += len(records)
        except OSError:
            with self._lock:
                self.dropped += len(records)
            log.exception("prediction log: %d records DROPPED, the spool cannot be written", len(records))

    @property
    def queue_depth(self) -> int:
        """Records in memory: queued, or taken by the worker and not yet logged or spooled."""
        return self._queued

    @property
    def spool_backlog(self) -> int:
        """Records waiting in the spool file."""
        return self._spool.backlog if self._spool else 0

    @property
    def logged(self) -> int:
        """Records written to MLflow by this process."""
        return self._sink.logged if self._sink else 0

    def start(self) -> None:
        """Start the worker thread (no-op when logging is off)."""
        if not self.enabled:
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="prediction-log", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        self._sink.recover_chunks()
        while not self._stop.wait(self._flush_seconds):
            try:
                self._cycle()
            except Exception:  # the worker must outlive any surprise; records stay queued or spooled
                log.exception("prediction log cycle failed")
        self._final_cycle()

    def _take(self) -> list[dict]:
        # The queue depth drops only in _release, once the records are logged or spooled, so
        # "nothing queued" also means "nothing in flight".
        records: list[dict] = []
        while self._queue:
            records.extend(expand(self._queue.popleft(), self.process_id))
        return records

    def _release(self, n: int) -> None:
        with self._lock:
            self._queued -= n

    def _down(self, now: float) -> None:
        self.tracking_ok = False
        self._retry_at = now + self._backoff
        self._backoff = min(self._backoff * 2, 30.0)

    def _up(self) -> None:
        self.tracking_ok = True
        self._backoff = 1.0

    def _cycle(self, replay_budget_s: float = 10.0, deadline: float | None = None) -> None:
        records = self._take()
        now = time.monotonic()
        if records:
            try:
                if self._spool.pending or now < self._retry_at:
                    self._to_spool(records)  # behind the spool, to keep the order
                else:
                    rest = self._sink.write(records, deadline)
                    if rest:
                        self._to_spool(rest)
                        self._down(now)
                    else:
                        self._up()
            finally:
                self._release(len(records))
        if self._spool.pending and time.monotonic() >= self._retry_at:
            replay_until = time.monotonic() + replay_budget_s
            self._replay(replay_until if deadline is None else min(replay_until, deadline))
        if time.monotonic() >= self._retry_at and not self._sink.upload_chunks():
            self._down(time.monotonic())

    def _replay(self, deadline: float) -> None:
        while self._spool.pending and time.monotonic() < deadline:
            records, offset = self._spool.read(RECORDS_PER_BATCH)
            if not records:
                self._spool.commit(offset, 0)  # only corrupt lines
                continue
            if self._sink.write(records):
                self._down(time.monotonic())
                return
            self._spool.commit(offset, len(records))
            self.replayed += len(records)
            self._up()
        if not self._spool.pending:
            log.info("prediction log: spool replayed, %d records so far", self.replayed)

    def _final_cycle(self) -> None:
        """On shutdown: log what is queued, or spool it when the tracking server is down."""
        try:
            self._cycle(replay_budget_s=5.0, deadline=self._final_deadline)
            if time.monotonic() >= self._retry_at:
                self._sink.upload_chunks(seal_all=True)
                self._sink.finish_runs()
        except Exception:
            log.exception("prediction log: final flush failed")
        finally:
            rest = self._take()  # anything left after a failure above
            if rest:
                self._to_spool(rest)
                self._release(len(rest))

    def close(self, timeout: float = 30.0) -> None:
        """Flush the queue to MLflow (or to the spool) and stop the worker."""
        if not self.enabled:
            return
        # Most of the budget for writing to MLflow, the rest for spooling what is left.
        self._final_deadline = time.monotonic() + 0.75 * timeout
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
            if self._thread.is_alive():
                log.error("prediction log: worker still busy after %.0fs; spooling what is queued", timeout)
                rest = self._take()
                self._to_spool(rest)
                self._release(len(rest))
        self._spool.close()

    @staticmethod
    def empty_stats() -> dict[str, int | bool]:
        """The counters of a log that has not started (for a metrics scrape before the lifespan)."""
        names = ("queue_depth", "spool_backlog", "logged_total", "spooled_total", "replayed_total")
        return {"enabled": False, **dict.fromkeys((*names, "dropped_total"), 0)}

    def stats(self) -> dict[str, int | bool]:
        """Counters for /health and /metrics."""
        return {
            "enabled": self.enabled,
            "queue_depth": self.queue_depth,
            "spool_backlog": self.spool_backlog,
            "logged_total": self.logged,
            "spooled_total": self.spooled,
            "replayed_total": self.replayed,
            "dropped_total": self.dropped,
        }
