"""Logging every prediction back to MLflow without making a request wait, and without losing any.

A request hands its arrays to `PredictionLogger.submit` (a deque append). A worker thread
drains the queue every PREDICTION_LOG_FLUSH_SECONDS and writes, per record, the metrics
`probability` and `prediction` at step = the record's sequence number with `log_batch`
(500 records = 1000 metrics per call, MLflow's limit), and appends the record itself to a
JSON-lines chunk file that is uploaded as an artifact of the same run when full.

When the tracking server fails, records go to an append-only spool file and are replayed in
order once it answers again; live records queue behind the spool while it is not empty.
Replays are idempotent: a record's run is found again from a deterministic key (process,
model, version, seq // PREDICTION_LOG_RUN_MAX_RECORDS) stored as a run tag, and the SQL
store drops a metric point identical in key, step, timestamp and value. So a batch that
reached the server but whose answer was lost is not counted twice when it is replayed.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import socket
import threading
import time
import uuid
from collections import deque
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import orjson
import requests
from mlflow.entities import Metric
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from credit_risk.features import FEATURES

log = logging.getLogger(__name__)

RECORDS_PER_BATCH = 500  # two metrics each: MLflow's log_batch takes at most 1000
RUN_KEY_TAG = "prediction_log.key"
ARTIFACT_DIR = "predictions"


class SpoolBusy(Exception):
    """Another live process holds this spool directory."""


@dataclass(frozen=True, slots=True)
class _Block:
    """What one request hands over: its rows, not yet expanded (expanding is the worker's job)."""

    seq0: int
    ts_ms: int
    model_name: str
    version: str
    X: np.ndarray
    probs: np.ndarray
    preds: np.ndarray


def _expand(block: _Block, process_id: str) -> list[dict]:
    rows = block.X.tolist()
    probs = block.probs.tolist()
    preds = block.preds.tolist()
    out = []
    for i, (row, p, y) in enumerate(zip(rows, probs, preds, strict=True)):
        seq = block.seq0 + i
        record = {
            "prediction_id": f"{process_id}-{seq}",
            "process": process_id,
            "seq": seq,
            "ts_ms": block.ts_ms,
            "model_name": block.model_name,
            "model_version": block.version,
        }
        record.update(zip(FEATURES, row, strict=True))  # NaN becomes null in JSON
        record["probability"] = p
        record["prediction"] = int(y)
        out.append(record)
    return out


class Spool:
    """An append-only JSON-lines file and a cursor: the byte offset up to which it is logged."""

    def __init__(self, directory: Path):
        directory.mkdir(parents=True, exist_ok=True)
        self._lock_file = open(directory / ".lock", "w")  # noqa: SIM115 - held for the spool's life
        try:
            fcntl.flock(self._lock_file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as e:
            self._lock_file.close()
            raise SpoolBusy(
                f"spool directory {directory} is used by another API process; give each its own"
            ) from e
        self._path = directory / "pending.jsonl"
        self._cursor_path = directory / "pending.cursor"
        self._lock = threading.Lock()
        self._file = open(self._path, "ab")  # noqa: SIM115 - kept open for appends
        self._size = self._file.tell()
        try:
            self._offset = min(int(self._cursor_path.read_text()), self._size)
        except (OSError, ValueError):
            self._offset = 0
        self.backlog = self._count_lines(self._offset)

    def _count_lines(self, offset: int) -> int:
        with open(self._path, "rb") as f:
            f.seek(offset)
            return sum(1 for _ in f)

    @property
    def pending(self) -> bool:
        """True while some spooled record is not logged yet."""
        return self._offset < self._size

    def append(self, records: list[dict]) -> None:
        """Add records at the end (flushed to the OS, so they survive a crash of this process)."""
        data = b"".join(orjson.dumps(r) + b"\n" for r in records)
        with self._lock:
            self._file.write(data)
            self._file.flush()
            self._size += len(data)
            self.backlog += len(records)

    def read(self, max_records: int) -> tuple[list[dict], int]:
        """The next records after the cursor, and the offset just past them."""
        records: list[dict] = []
        with open(self._path, "rb") as f:
            f.seek(self._offset)
            offset = self._offset
            while len(records) < max_records and offset < self._size:
                line = f.readline()
                if not line.endswith(b"\n"):
                    break  # a line still being written
                offset += len(line)
                try:
                    records.append(orjson.loads(line))
                except orjson.JSONDecodeError:
                    log.error(
                        "skipping a corrupt spool line at byte %d of %s", offset - len(line), self._path
                    )
        return records, offset

    def commit(self, offset: int, n_records: int) -> None:
        """Mark everything before `offset` as logged; empty the file once all of it is."""
        with self._lock:
            self.backlog = max(0, self.backlog - n_records)
            if offset >= self._size:
                self._file.truncate(0)
                self._size = self._offset = 0
                self.backlog = 0
                with contextlib.suppress(FileNotFoundError):
                    self._cursor_path.unlink()
                return
            self._offset = offset
            tmp = self._cursor_path.with_suffix(".tmp")
            tmp.write_text(str(offset))
            os.replace(tmp, self._cursor_path)  # atomic: a crash leaves the old or the new cursor

    def close(self) -> None:
        """Close the file and release the directory."""
        self._file.close()
        self._lock_file.close()


class _Chunk:
    """The open JSON-lines chunk of one run, sealed (renamed) and uploaded when full or old."""

    def __init__(self, directory: Path, process_id: str, first_seq: int):
        directory.mkdir(parents=True, exist_ok=True)
        self.name = f"predictions-{process_id}-{first_seq:012d}.jsonl"
        self.path = directory / (self.name + ".part")
        self.file = open(self.path, "ab")  # noqa: SIM115 - closed by seal()
        self.count = 0
        self.opened = time.monotonic()

    def seal(self) -> Path:
        self.file.close()
        sealed = self.path.with_suffix("")  # drop ".part"
        os.replace(self.path, sealed)
        return sealed


class MlflowSink:
    """Writes records to MLflow: metrics by log_batch, inputs and outputs as chunk artifacts."""

    def __init__(
        self,
        client: MlflowClient,
        experiment: str,
        chunk_dir: Path,
        run_max_records: int,
        chunk_records: int,
        chunk_seconds: float,
        http_timeout: float = 10.0,
    ):
        self._client = client
        uri = client.tracking_uri
        # log-batch goes straight to MLflow's REST endpoint with an orjson body: MlflowClient
        # builds a protobuf per metric and JSON-encodes it in Python, ~10x the CPU, taken from
        # the request-serving thread (GIL). Everything else uses MlflowClient.
        self._log_batch_url = (
            f"{uri.rstrip('/')}/api/2.0/mlflow/runs/log-batch"
            if uri.startswith(("http://", "https://"))
            else None
        )
        self._session = requests.Session()
        self._http_timeout = http_timeout
        self._experiment = experiment
        self._experiment_id: str | None = None
        self._chunk_dir = chunk_dir
        self._run_max = run_max_records
        self._chunk_records = chunk_records
        self._chunk_seconds = chunk_seconds
        self._runs: dict[str, str] = {}  # run key -> run id
        self._chunks: dict[str, _Chunk] = {}  # run id -> open chunk
        self._host = socket.gethostname()
        self.logged = 0

    def _run_key(self, record: dict) -> str:
        index = record["seq"] // self._run_max
        return f"{record['process']}:{record['model_name']}:{record['model_version']}:{index}"

    def _experiment_id_now(self) -> str:
        if self._experiment_id is None:
            exp = self._client.get_experiment_by_name(self._experiment)
            if exp is None:
                try:
                    self._experiment_id = self._client.create_experiment(self._experiment)
                except MlflowException as e:  # another process created it in between
                    if e.error_code != "RESOURCE_ALREADY_EXISTS":
                        raise
                    self._experiment_id = self._client.get_experiment_by_name(self._experiment).experiment_id
            else:
                self._experiment_id = exp.experiment_id
        return self._experiment_id

    def _run_for(self, key: str) -> str:
        run_id = self._runs.get(key)
        if run_id is not None:
            return run_id
        exp_id = self._experiment_id_now()
        found = self._client.search_runs(
            [exp_id], filter_string=f"tags.`{RUN_KEY_TAG}` = '{key}'", max_results=1
        )
        if found:
            run_id = found[0].info.run_id
        else:
            process, rest = key.split(":", 1)
            model_name, version, index = rest.rsplit(":", 2)  # a model name may hold ":"
            run = self._client.create_run(
                exp_id,
                run_name=f"predictions-{model_name}-v{version}-{process}-{index}",
                tags={
                    RUN_KEY_TAG: key,
                    "model_name": model_name,
                    "model_version": version,
                    "host": self._host,
                    "api_process": process,
                    "started_at": datetime.now(UTC).isoformat(timespec="seconds"),
                },
            )
            run_id = run.info.run_id
            self._retire_older_runs(key)
        self._runs[key] = run_id
        return run_id

    def _retire_older_runs(self, key: str) -> None:
        # A new index for the same process/model/version means the previous run rolled over.
        prefix, index = key.rsplit(":", 1)
        older = f"{prefix}:{int(index) - 1}"
        run_id = self._runs.pop(older, None)
        if run_id is not None:
            self._seal(run_id)
            with contextlib.suppress(Exception):  # cosmetic: the run's status only
                self._client.set_terminated(run_id)

    def write(self, records: list[dict]) -> list[dict]:
        """Log records in order; return those not logged (from the first failure on)."""
        i = 0
        while i < len(records):
            key = self._run_key(records[i])
            j = i
            while j < len(records) and j - i < RECORDS_PER_BATCH and self._run_key(records[j]) == key:
                j += 1
            group = records[i:j]
            try:
                run_id = self._run_for(key)
                self._log_batch(run_id, group)
            except Exception as e:
                self._runs.pop(key, None)  # found again by its tag on the next try
                log.warning("prediction log: tracking server failed (%s); spooling", _first_line(e))
                return records[i:]
            self.logged += len(group)
            self._append_chunk(run_id, group)
            i = j
        return []

    def _log_batch(self, run_id: str, records: list[dict]) -> None:
        if self._log_batch_url is None:
            metrics = []
            for r in records:
                metrics.append(Metric("probability", r["probability"], r["ts_ms"], r["seq"]))
                metrics.append(Metric("prediction", float(r["prediction"]), r["ts_ms"], r["seq"]))
            self._client.log_batch(run_id, metrics=metrics, synchronous=True)
            return
        metrics = []
        for r in records:
            ts, step = r["ts_ms"], r["seq"]
            metrics.append({"key": "probability", "value": r["probability"], "timestamp": ts, "step": step})
            metrics.append({"key": "prediction", "value": r["prediction"], "timestamp": ts, "step": step})
        resp = self._session.post(
            self._log_batch_url,
            data=orjson.dumps({"run_id": run_id, "metrics": metrics}),
            headers={"Content-Type": "application/json"},
            timeout=self._http_timeout,
        )
        if resp.status_code != 200:
            raise RuntimeError(f"log-batch answered {resp.status_code}: {resp.text[:300]}")

    def _append_chunk(self, run_id: str, records: list[dict]) -> None:
        chunk = self._chunks.get(run_id)
        if chunk is None:
            chunk = self._chunks[run_id] = _Chunk(
                self._chunk_dir / run_id, records[0]["process"], records[0]["seq"]
            )
        chunk.file.write(b"".join(orjson.dumps(r) + b"\n" for r in records))
        chunk.file.flush()
        chunk.count += len(records)
        if chunk.count >= self._chunk_records:
            self._seal(run_id)

    def _seal(self, run_id: str) -> None:
        chunk = self._chunks.pop(run_id, None)
        if chunk is not None:
            chunk.seal()

    def upload_chunks(self, seal_all: bool = False) -> bool:
        """Seal old (or all) open chunks and upload every sealed one; False if an upload failed."""
        now = time.monotonic()
        for run_id, chunk in list(self._chunks.items()):
            if seal_all or now - chunk.opened >= self._chunk_seconds:
                self._seal(run_id)
        ok = True
        for path in sorted(self._chunk_dir.glob("*/*.jsonl")):
            try:
                self._client.log_artifact(path.parent.name, str(path), ARTIFACT_DIR)
            except Exception as e:
                log.warning("prediction log: chunk %s not uploaded yet (%s)", path.name, _first_line(e))
                ok = False
                break
            path.unlink()
            with contextlib.suppress(OSError):
                path.parent.rmdir()  # only when empty
        return ok

    def recover_chunks(self) -> None:
        """Seal chunk files an earlier process left open, so they get uploaded."""
        for part in self._chunk_dir.glob("*/*.jsonl.part"):
            os.replace(part, part.with_suffix(""))

    def finish_runs(self) -> None:
        """Mark this process's runs finished (best effort: status only)."""
        for run_id in self._runs.values():
            with contextlib.suppress(Exception):
                self._client.set_terminated(run_id)


class PredictionLogger:
    """The bounded queue, its worker thread and the spool, behind one `submit` call."""

    def __init__(
        self,
        client: MlflowClient,
        experiment: str,
        spool_dir: Path,
        queue_size: int,
        flush_seconds: float,
        run_max_records: int,
        chunk_records: int,
        chunk_seconds: float,
        enabled: bool = True,
        http_timeout: float = 10.0,
    ):
        self.process_id = uuid.uuid4().hex[:12]
        self.enabled = enabled
        self._queue: deque[_Block] = deque()
        self._queue_size = queue_size
        self._flush_seconds = flush_seconds
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
        self._thread: threading.Thread | None = None
        self._spool: Spool | None = None
        self._sink: MlflowSink | None = None
        if enabled:
            self._spool = Spool(Path(spool_dir))
            self._sink = MlflowSink(
                client,
                experiment,
                Path(spool_dir) / "chunks",
                run_max_records,
                chunk_records,
                chunk_seconds,
                http_timeout,
            )

    def prediction_ids(self, seq0: int, n: int) -> list[str]:
        """The ids of `n` predictions numbered from `seq0`."""
        pid = self.process_id
        return [f"{pid}-{s}" for s in range(seq0, seq0 + n)]

    def submit(
        self, model_name: str, version: str, X: np.ndarray, probs: np.ndarray, preds: np.ndarray
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
        block = _Block(seq0, time.time_ns() // 1_000_000, model_name, version, X, probs, preds)
        if full:
            # Overflow goes to disk rather than waiting or dropping; it lands ahead of what
            # is still queued, but every record keeps its own step so MLflow orders them.
            self._to_spool(_expand(block, self.process_id))
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
            records.extend(_expand(self._queue.popleft(), self.process_id))
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

    def _cycle(self, replay_budget_s: float = 10.0) -> None:
        records = self._take()
        now = time.monotonic()
        if records:
            try:
                if self._spool.pending or now < self._retry_at:
                    self._to_spool(records)  # behind the spool, to keep the order
                else:
                    rest = self._sink.write(records)
                    if rest:
                        self._to_spool(rest)
                        self._down(now)
                    else:
                        self._up()
            finally:
                self._release(len(records))
        if self._spool.pending and time.monotonic() >= self._retry_at:
            self._replay(time.monotonic() + replay_budget_s)
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
            self._cycle(replay_budget_s=5.0)
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
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
            if self._thread.is_alive():
                log.error("prediction log: worker still busy after %.0fs; spooling what is queued", timeout)
                rest = self._take()
                self._to_spool(rest)
                self._release(len(rest))
        self._spool.close()

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


def _first_line(e: Exception) -> str:
    text = str(e).strip()
    return text.splitlines()[0][:300] if text else type(e).__name__
