"""The API's outcome log: outcomes are on disk before the answer, and reach MLflow when it answers.

Unlike predictions, outcomes are rare and precious (months of waiting), so they are written
ahead: `record` appends them to a spool (the prediction log's Spool class, its own directory
`PREDICTION_LOG_SPOOL_DIR/outcomes`) and only then is the request answered. A worker thread
uploads the spool in order (monitoring.outcomes.OutcomeStore) and moves the cursor after each
upload, backing off while MLflow is down. An outcome whose id could not be checked at the time
(MLflow down, id of another API process) is checked before upload; one then found unknown is
dropped with an error in the log and counted as rejected.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Callable

from mlflow.tracking import MlflowClient

from credit_risk.api.prediction_log.spool import Spool
from credit_risk.logs import first_line
from credit_risk.monitoring.outcomes import KnownPredictions, OutcomeStore, OutcomeStoreUnavailable
from credit_risk.settings import ApiSettings

log = logging.getLogger(__name__)

RECORDS_PER_UPLOAD = 5000


class OutcomeLog:
    """Write-ahead spool of outcomes and the worker that uploads it."""

    def __init__(
        self, client: MlflowClient, settings: ApiSettings, writer: str, issued_here: Callable[[str], bool]
    ):
        self._spool = Spool(settings.prediction_log_spool_dir / "outcomes")
        self._store = OutcomeStore(client, settings.outcome_experiment, writer)
        self._known = KnownPredictions(client, settings.prediction_experiment)
        self._issued_here = issued_here
        self._flush_seconds = settings.prediction_log_flush_seconds
        self._recorded: set[str] = set()  # this process's ids: a repeat is answered as a duplicate
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._retry_at = 0.0
        self._backoff = 1.0
        self.uploaded = 0
        self.rejected = 0

    def unknown(self, ids: list[str]) -> tuple[list[str], bool]:
        """(ids known to be unknown, whether every other id was checked). Blocking: MLflow may be asked."""
        foreign = [i for i in ids if not self._issued_here(i)]
        if not foreign:
            return [], True
        try:
            return self._known.unknown(foreign), True
        except OutcomeStoreUnavailable as e:
            log.warning("outcomes: ids cannot be checked now (%s); checked before upload", e)
            return [], False

    def record(self, outcomes: list[tuple[str, int]], checked: bool) -> tuple[int, list[str]]:
        """Spool new outcomes (on disk when this returns); returns (recorded, repeated ids)."""
        now_ms = time.time_ns() // 1_000_000
        batch = uuid.uuid4().hex[:12]
        fresh, repeated = [], []
        with self._lock:
            for pid, defaulted in outcomes:
                if pid in self._recorded:
                    repeated.append(pid)
                    continue
                self._recorded.add(pid)
                fresh.append(
                    {
                        "prediction_id": pid,
                        "defaulted": defaulted,
                        "recorded_ms": now_ms,
                        "batch": batch,
                        "i": len(fresh),
                        "check": not checked and not self._issued_here(pid),
                    }
                )
        if fresh:
            try:
                self._spool.append(fresh)
            except OSError:
                with self._lock:
                    self._recorded.difference_update(r["prediction_id"] for r in fresh)
                raise
        return len(fresh), repeated

    @property
    def backlog(self) -> int:
        """Outcomes on disk not yet in MLflow."""
        return self._spool.backlog

    def start(self) -> None:
        """Start the upload worker."""
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="outcome-log", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self._flush_seconds):
            try:
                self.upload()
            except Exception:  # the worker must outlive any surprise; the spool keeps everything
                log.exception("outcome upload failed")

    def upload(self, deadline_s: float = 10.0) -> None:
        """Upload what the spool holds, in order, until it is empty, MLflow fails, or the deadline."""
        deadline = time.monotonic() + deadline_s
        while self._spool.pending and time.monotonic() >= self._retry_at and time.monotonic() < deadline:
            records, offset = self._spool.read(RECORDS_PER_UPLOAD)
            try:
                kept = self._drop_unknown(records)
                groups: dict[str, list[dict]] = {}
                for r in kept:
                    groups.setdefault(r["batch"], []).append(r)
                for batch, group in groups.items():
                    # The name is fixed by the records themselves: a retry overwrites, never adds.
                    self._store.write(
                        f"outcomes-{batch}-{group[0]['i']:06d}",
                        [{k: r[k] for k in ("prediction_id", "defaulted", "recorded_ms")} for r in group],
                    )
            except Exception as e:
                self._retry_at = time.monotonic() + self._backoff
                self._backoff = min(self._backoff * 2, 30.0)
                log.warning("outcomes: MLflow unavailable (%s); %d kept on disk", first_line(e), self.backlog)
                return
            self._spool.commit(offset, len(records))
            self.uploaded += len(kept)
            self._backoff = 1.0

    def _drop_unknown(self, records: list[dict]) -> list[dict]:
        to_check = [r["prediction_id"] for r in records if r.get("check")]
        if not to_check:
            return records
        unknown = set(self._known.unknown(to_check))  # OutcomeStoreUnavailable: retried later
        if unknown:
            self.rejected += len(unknown)
            log.error("outcomes: %d unknown prediction ids dropped: %s", len(unknown), sorted(unknown)[:20])
        return [r for r in records if r["prediction_id"] not in unknown]

    def close(self, timeout: float = 10.0) -> None:
        """Stop the worker after a last upload attempt (what is left stays spooled for the next start)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
        try:
            self.upload(deadline_s=timeout)
        except Exception:
            log.exception("outcomes: final upload failed; the spool keeps them")
        self._spool.close()
