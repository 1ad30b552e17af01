"""Observed outcomes in MLflow, joined to logged predictions by `prediction_id` (issue 12, part 4).

Outcomes are JSON-lines artifacts `outcomes/outcomes-<batch>-<first>.jsonl` of runs in the
outcome experiment, one run per writer (an API process, or one `monitor outcomes` command),
tagged `outcomes.writer`. A line holds `prediction_id`, `defaulted` (0/1) and `recorded_ms`.
An artifact's name is fixed before it is first sent, so a retried upload overwrites itself; and
readers keep the first recorded outcome of an id, so a repeated id is never counted twice.

Ids are checked against the prediction log: a `<process>-<seq>` id is known when the run of
that API process holds a `prediction` point at step `seq`. numpy-free, standard library and the
MLflow client only (the API imports this).
"""

from __future__ import annotations

import logging
import re
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import orjson
from mlflow.tracking import MlflowClient

from credit_risk.tracking import get_or_create_experiment

log = logging.getLogger(__name__)

ARTIFACT_DIR = "outcomes"
WRITER_TAG = "outcomes.writer"
# The prediction log's one id format (api/prediction_log/records.py): 12 hex digits, a dash, the seq.
ID_PATTERN = re.compile(r"^([0-9a-f]{12})-([1-9][0-9]{0,17})$")
# How long a process's known steps are trusted before an unknown id makes us ask MLflow again.
KNOWN_TTL_SECONDS = 2.0


class OutcomeStoreUnavailable(Exception):
    """MLflow could not be asked (down, or refusing)."""


def parse_id(prediction_id: str) -> tuple[str, int] | None:
    """(process, seq) of a well-formed id, else None."""
    m = ID_PATTERN.match(prediction_id)
    return (m.group(1), int(m.group(2))) if m else None


class KnownPredictions:
    """Which prediction ids the prediction log holds, asked of MLflow per API process and cached."""

    def __init__(self, client: MlflowClient, prediction_experiment: str):
        self._client = client
        self._experiment = prediction_experiment
        self._steps: dict[str, tuple[float, set[int]]] = {}
        self._procs: dict[str, list[str]] | None = None
        self._procs_at = 0.0
        self._lock = threading.Lock()

    def _processes(self) -> dict[str, list[str]]:
        """API process id -> its prediction-log runs: one paged search, cached for KNOWN_TTL_SECONDS.

        So a request naming many processes that never logged costs one search, not one per process.
        """
        with self._lock:
            if self._procs is not None and time.monotonic() - self._procs_at <= KNOWN_TTL_SECONDS:
                return self._procs
        try:
            procs: dict[str, list[str]] = {}
            exp = self._client.get_experiment_by_name(self._experiment)
            token = None
            while exp is not None:
                page = self._client.search_runs([exp.experiment_id], "", max_results=1000, page_token=token)
                for run in page:
                    if process := run.data.tags.get("api_process"):
                        procs.setdefault(process, []).append(run.info.run_id)
                token = page.token
                if not token:
                    break
        except Exception as e:
            raise OutcomeStoreUnavailable(str(e).splitlines()[0][:300] if str(e) else type(e).__name__) from e
        with self._lock:
            self._procs, self._procs_at = procs, time.monotonic()
        return procs

    def _fetch(self, run_ids: list[str]) -> set[int]:
        try:
            steps: set[int] = set()
            for run_id in run_ids:
                steps.update(m.step for m in self._client.get_metric_history(run_id, "prediction"))
            return steps
        except Exception as e:
            raise OutcomeStoreUnavailable(str(e).splitlines()[0][:300] if str(e) else type(e).__name__) from e

    def unknown(self, ids: list[str]) -> list[str]:
        """The ids the prediction log does not hold (OutcomeStoreUnavailable when MLflow cannot say)."""
        by_process: dict[str, list[tuple[str, int]]] = {}
        missing = []
        for pid in ids:
            parsed = parse_id(pid)
            if parsed is None:
                missing.append(pid)
            else:
                by_process.setdefault(parsed[0], []).append((pid, parsed[1]))
        for process, items in by_process.items():
            with self._lock:
                fetched_at, steps = self._steps.get(process, (0.0, set()))
            if (
                any(seq not in steps for _, seq in items)
                and time.monotonic() - fetched_at > KNOWN_TTL_SECONDS
            ):
                run_ids = self._processes().get(process)
                if run_ids is None:  # this process never logged a prediction: no call per id
                    missing.extend(pid for pid, _ in items)
                    continue
                steps = self._fetch(run_ids)
                with self._lock:
                    self._steps[process] = (time.monotonic(), steps)
            missing.extend(pid for pid, seq in items if seq not in steps)
        return missing


@dataclass(frozen=True)
class Outcome:
    """One observed outcome."""

    prediction_id: str
    defaulted: int
    recorded_ms: int

    def to_dict(self) -> dict:
        """JSON-ready form."""
        return {
            "prediction_id": self.prediction_id,
            "defaulted": self.defaulted,
            "recorded_ms": self.recorded_ms,
        }


class OutcomeStore:
    """Writes outcome artifacts to the writer's run, and reads every outcome back."""

    def __init__(self, client: MlflowClient, experiment: str, writer: str):
        self._client = client
        self._experiment = experiment
        self.writer = writer
        self._run_id: str | None = None

    def _run(self) -> str:
        if self._run_id is None:
            exp_id = get_or_create_experiment(self._client, self._experiment)
            found = self._client.search_runs(
                [exp_id], f"tags.`{WRITER_TAG}` = '{self.writer}'", max_results=1
            )
            if found:
                self._run_id = found[0].info.run_id
            else:
                run = self._client.create_run(
                    exp_id, run_name=f"outcomes-{self.writer}", tags={WRITER_TAG: self.writer}
                )
                self._run_id = run.info.run_id
        return self._run_id

    def write(self, name: str, outcomes: list[dict]) -> None:
        """Upload one artifact `outcomes/<name>.jsonl` (the same name overwrites: retries are safe)."""
        text = b"".join(orjson.dumps(o) + b"\n" for o in outcomes).decode()
        try:
            self._client.log_text(self._run(), text, f"{ARTIFACT_DIR}/{name}.jsonl")
        except Exception:
            self._run_id = None  # found again by its tag next time
            raise


def read_outcomes(client: MlflowClient, experiment: str) -> dict[str, Outcome]:
    """Every recorded outcome, the first recorded one per prediction id."""
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        return {}
    found: dict[str, Outcome] = {}
    runs = client.search_runs([exp.experiment_id], "", max_results=10_000)
    with tempfile.TemporaryDirectory(prefix="credit-risk-outcomes-") as tmp:
        for run in runs:
            for info in client.list_artifacts(run.info.run_id, ARTIFACT_DIR):
                if not info.path.endswith(".jsonl"):
                    continue
                local = Path(client.download_artifacts(run.info.run_id, info.path, tmp))
                for line in local.read_bytes().splitlines():
                    o = orjson.loads(line)
                    outcome = Outcome(o["prediction_id"], int(o["defaulted"]), int(o["recorded_ms"]))
                    first = found.get(outcome.prediction_id)
                    if first is None or outcome.recorded_ms < first.recorded_ms:
                        found[outcome.prediction_id] = outcome
                local.unlink()
    return found
