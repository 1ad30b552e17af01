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

from credit_risk.api.prediction_log.logger import PredictionLogger
from credit_risk.api.prediction_log.spool import Spool, SpoolBusy

__all__ = ["PredictionLogger", "Spool", "SpoolBusy"]
