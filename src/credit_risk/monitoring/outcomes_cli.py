"""`python -m credit_risk.monitor outcomes --csv FILE`: record observed outcomes from a CSV.

The file has a header with `prediction_id` and `defaulted` (0 or 1). Every id must be in the
prediction log: one unknown id refuses the whole file (each named) and nothing is recorded.
An id given twice, or already recorded, is counted once. Exit 0 when recorded, 2 when not.
"""

from __future__ import annotations

import argparse
import csv
import logging
import time
import uuid
from pathlib import Path

from pydantic import ValidationError

from credit_risk.logs import first_line
from credit_risk.monitoring.outcomes import KnownPredictions, OutcomeStore, read_outcomes
from credit_risk.settings import MonitorSettings
from credit_risk.tracking import configure_mlflow, wait_for_tracking_server

log = logging.getLogger("credit_risk.monitor")

EXIT_OK, EXIT_REFUSED = 0, 2
PER_ARTIFACT = 5000
SHOWN = 20


class Refused(Exception):
    """The file is not recorded; the message says why."""


def read_csv(path: Path) -> list[tuple[str, int]]:
    """(prediction_id, defaulted) per row, first occurrence of an id only; Refused names bad lines."""
    try:
        with open(path, newline="") as f:
            reader = csv.DictReader(f)
            missing = {"prediction_id", "defaulted"} - set(reader.fieldnames or ())
            if missing:
                raise Refused(f"{path}: no column {', '.join(sorted(missing))} in the header")
            rows, errors, seen = [], [], set()
            for line, row in enumerate(reader, start=2):
                pid, value = (row["prediction_id"] or "").strip(), (row["defaulted"] or "").strip()
                if value not in ("0", "1"):
                    errors.append(f"line {line}: defaulted must be 0 or 1, got {value!r}")
                elif pid not in seen:
                    seen.add(pid)
                    rows.append((pid, int(value)))
    except OSError as e:
        raise Refused(f"{path}: {e}") from e
    if errors:
        raise Refused(
            "; ".join(errors[:SHOWN]) + (f" (and {len(errors) - SHOWN} more)" if len(errors) > SHOWN else "")
        )
    return rows


def record(path: Path, settings: MonitorSettings) -> tuple[int, int]:
    """Check and record the file; returns (recorded, already recorded)."""
    rows = read_csv(path)
    configure_mlflow(settings)
    client = wait_for_tracking_server(settings.mlflow_tracking_uri, settings.mlflow_wait_seconds)
    unknown = KnownPredictions(client, settings.prediction_experiment).unknown([pid for pid, _ in rows])
    if unknown:
        more = f" (and {len(unknown) - SHOWN} more)" if len(unknown) > SHOWN else ""
        raise Refused(f"{len(unknown)} unknown prediction ids: {', '.join(unknown[:SHOWN])}{more}")
    known = read_outcomes(client, settings.outcome_experiment)
    fresh = [(pid, y) for pid, y in rows if pid not in known]
    batch = uuid.uuid4().hex[:12]
    store = OutcomeStore(client, settings.outcome_experiment, f"cli-{batch}")
    now_ms = time.time_ns() // 1_000_000
    for start in range(0, len(fresh), PER_ARTIFACT):
        piece = fresh[start : start + PER_ARTIFACT]
        store.write(
            f"outcomes-{batch}-{start:06d}",
            [{"prediction_id": pid, "defaulted": y, "recorded_ms": now_ms} for pid, y in piece],
        )
    return len(fresh), len(rows) - len(fresh)


def main(argv: list[str]) -> int:
    """Parse, record, and return the exit status."""
    p = argparse.ArgumentParser(
        prog="python -m credit_risk.monitor outcomes", description=__doc__.split("\n")[0]
    )
    p.add_argument("--csv", type=Path, required=True, help="CSV with prediction_id and defaulted columns")
    args = p.parse_args(argv)
    try:
        settings = MonitorSettings()
    except ValidationError as e:
        log.error("invalid settings (is MLFLOW_TRACKING_URI set?): %s", first_line(e))
        return EXIT_REFUSED
    try:
        recorded, repeated = record(args.csv, settings)
    except Refused as e:
        log.error("outcomes not recorded: %s", e)
        return EXIT_REFUSED
    except Exception as e:
        log.exception("outcomes not recorded: %s", first_line(e))
        return EXIT_REFUSED
    log.info("%d outcomes recorded, %d already recorded before (counted once)", recorded, repeated)
    return EXIT_OK
