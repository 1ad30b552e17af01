"""The MLflow side of the prediction log: metrics by log-batch, records as JSON-lines chunk artifacts."""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import time
from datetime import UTC, datetime
from pathlib import Path

import orjson
import requests
from mlflow.entities import Metric
from mlflow.tracking import MlflowClient

from credit_risk.api.prediction_log.records import chunk_name, parse_chunk_name
from credit_risk.logs import first_line
from credit_risk.settings import ApiSettings
from credit_risk.tracking import access_problem, get_or_create_experiment

log = logging.getLogger("credit_risk.api.prediction_log")

RECORDS_PER_BATCH = 500  # two metrics each: MLflow's log_batch takes at most 1000
RUN_KEY_TAG = "prediction_log.key"
ARTIFACT_DIR = "predictions"


class _Chunk:
    """The open JSON-lines chunk of one run, sealed (renamed, with its newest `ts_ms`) and uploaded
    when full or old."""

    def __init__(self, directory: Path, process_id: str, first_seq: int):
        directory.mkdir(parents=True, exist_ok=True)
        self.process_id = process_id
        self.first_seq = first_seq
        self.path = directory / (chunk_name(process_id, first_seq) + ".part")
        self.file = open(self.path, "ab")  # noqa: SIM115 - closed by seal()
        self.count = 0
        self.max_ts = 0
        self.opened = time.monotonic()

    def seal(self) -> Path:
        self.file.close()
        sealed = self.path.with_name(chunk_name(self.process_id, self.first_seq, self.max_ts))
        os.replace(self.path, sealed)
        return sealed


def _newest_ts(path: Path) -> int | None:
    """The newest `ts_ms` of the whole records in a chunk file (a crash may have torn its last line)."""
    newest = None
    for line in path.read_bytes().splitlines():
        try:
            ts = orjson.loads(line)["ts_ms"]
        except (orjson.JSONDecodeError, KeyError, TypeError):
            continue
        newest = ts if newest is None else max(newest, ts)
    return newest


class MlflowSink:
    """Writes records to MLflow: metrics by log_batch, inputs and outputs as chunk artifacts."""

    def __init__(self, client: MlflowClient, settings: ApiSettings, chunk_dir: Path):
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
        # This session only ever posts to the tracking server: the API's own account, as basic auth.
        if settings.mlflow_tracking_username and settings.mlflow_tracking_password:
            self._session.auth = (
                settings.mlflow_tracking_username,
                settings.mlflow_tracking_password.get_secret_value(),
            )
        self._http_timeout = settings.mlflow_http_request_timeout
        self._experiment = settings.prediction_experiment
        self._experiment_id: str | None = None
        self._chunk_dir = chunk_dir
        self._run_max = settings.prediction_log_run_max_records
        self._chunk_records = settings.prediction_log_chunk_records
        self._chunk_seconds = settings.prediction_log_chunk_seconds
        self._runs: dict[str, str] = {}  # run key -> run id
        self._chunks: dict[str, _Chunk] = {}  # run id -> open chunk
        self._host = socket.gethostname()
        self.logged = 0

    def _run_key(self, record: dict) -> str:
        index = record["seq"] // self._run_max
        return f"{record['process']}:{record['model_name']}:{record['model_version']}:{index}"

    def _experiment_id_now(self) -> str:
        if self._experiment_id is None:
            self._experiment_id = get_or_create_experiment(self._client, self._experiment)
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

    def write(self, records: list[dict], deadline: float | None = None) -> list[dict]:
        """Log records in order; return those not logged (from the first failure on, or from
        the first batch that would start after `deadline`, a time.monotonic() value)."""
        i = 0
        while i < len(records):
            if deadline is not None and time.monotonic() >= deadline:
                return records[i:]
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
                why = access_problem(e, self._client.tracking_uri, f"experiment '{self._experiment}'")
                log.warning("prediction log: tracking server failed (%s); spooling", why or first_line(e))
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
            # With the response attached, so a 401/403 is told apart from an outage (access_problem).
            message = f"log-batch answered {resp.status_code}: {resp.text[:300]}"
            raise requests.HTTPError(message, response=resp)

    def _append_chunk(self, run_id: str, records: list[dict]) -> None:
        chunk = self._chunks.get(run_id)
        if chunk is None:
            chunk = self._chunks[run_id] = _Chunk(
                self._chunk_dir / run_id, records[0]["process"], records[0]["seq"]
            )
        chunk.file.write(b"".join(orjson.dumps(r) + b"\n" for r in records))
        chunk.file.flush()
        chunk.count += len(records)
        chunk.max_ts = max(chunk.max_ts, max(r["ts_ms"] for r in records))
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
                log.warning("prediction log: chunk %s not uploaded yet (%s)", path.name, first_line(e))
                ok = False
                break
            path.unlink()
            with contextlib.suppress(OSError):
                path.parent.rmdir()  # only when empty
        return ok

    def recover_chunks(self) -> None:
        """Seal chunk files an earlier process left open, so they get uploaded."""
        for part in self._chunk_dir.glob("*/*.jsonl.part"):
            sealed = part.with_suffix("")  # without a bound: read always (no whole record, or not ours)
            parsed = parse_chunk_name(sealed.name)
            newest = _newest_ts(part)
            if parsed is not None and newest is not None:
                sealed = part.with_name(chunk_name(parsed[0], parsed[1], newest))
            os.replace(part, sealed)

    def finish_runs(self) -> None:
        """Mark this process's runs finished (best effort: status only)."""
        for run_id in self._runs.values():
            with contextlib.suppress(Exception):
                self._client.set_terminated(run_id)
