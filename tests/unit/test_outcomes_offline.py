"""Outcomes without a server: the CSV reader, the write-ahead log's upload order, the performance table."""

from __future__ import annotations

from datetime import UTC, datetime

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from credit_risk.monitoring.outcome_log import OutcomeLog
from credit_risk.monitoring.outcomes import Outcome, parse_id
from credit_risk.monitoring.outcomes_cli import Refused, read_csv
from credit_risk.monitoring.performance import performance_table
from credit_risk.monitoring.predictions import LoggedPredictions
from credit_risk.settings import ApiSettings


def test_prediction_ids_parse_only_in_the_logs_format():
    assert parse_id("0123456789ab-42") == ("0123456789ab", 42)
    assert parse_id("0123456789ab-0") is None and parse_id("x-1") is None and parse_id("") is None


def test_csv_reader_names_bad_lines_and_keeps_a_repeated_id_once(tmp_path):
    good = tmp_path / "good.csv"
    good.write_text("prediction_id,defaulted\na-1,0\na-2,1\na-1,1\n")
    assert read_csv(good) == [("a-1", 0), ("a-2", 1)]
    bad = tmp_path / "bad.csv"
    bad.write_text("prediction_id,defaulted\na-1,yes\na-2,1\n")
    with pytest.raises(Refused, match="line 2: defaulted must be 0 or 1"):
        read_csv(bad)
    headless = tmp_path / "headless.csv"
    headless.write_text("id,y\na-1,0\n")
    with pytest.raises(Refused, match="no column defaulted, prediction_id"):
        read_csv(headless)


class _FlakyStore:
    def __init__(self):
        self.up = False
        self.artifacts: dict[str, list[dict]] = {}

    def write(self, name: str, outcomes: list[dict]) -> None:
        if not self.up:
            raise ConnectionError("tracking server down")
        self.artifacts[name] = outcomes


def test_outcome_log_keeps_outcomes_on_disk_until_mlflow_takes_them(tmp_path):
    settings = ApiSettings(mlflow_tracking_uri="http://127.0.0.1:9", prediction_log_spool_dir=tmp_path)
    log = OutcomeLog(None, settings, "0123456789ab", issued_here=lambda _: True)
    store = log._store = _FlakyStore()
    assert log.record([("0123456789ab-1", 0), ("0123456789ab-2", 1)], checked=True) == (2, [])
    assert log.record([("0123456789ab-2", 1), ("0123456789ab-3", 0)], checked=True) == (1, ["0123456789ab-2"])
    log.upload()
    assert store.artifacts == {} and log.backlog == 3
    log.close()
    # A new process on the same directory (the API restarted while MLflow was down) uploads them.
    again = OutcomeLog(None, settings, "0123456789ab", issued_here=lambda _: True)
    store.up = True
    again._store = store
    again.upload()
    ids = [o["prediction_id"] for batch in store.artifacts.values() for o in batch]
    assert sorted(ids) == ["0123456789ab-1", "0123456789ab-2", "0123456789ab-3"] and again.backlog == 0
    again.upload()  # nothing left: nothing sent twice
    assert sum(len(b) for b in store.artifacts.values()) == 3
    again.close()


def test_performance_table_per_month_with_scikit_learns_auc():
    rng = np.random.default_rng(0)
    n = 400
    probs = rng.random(n)
    y = (rng.random(n) < probs).astype(int)
    nov, dec = (int(datetime(2026, m, 15, tzinfo=UTC).timestamp() * 1000) for m in (11, 12))
    ts = np.where(np.arange(n) < 250, nov, dec)
    ids = [f"0123456789ab-{i + 1}" for i in range(n)]
    logged = LoggedPredictions(ids, ts, np.zeros((n, 10)), probs, (probs > 0.5).astype(np.int8))
    outcomes = {pid: Outcome(pid, int(v), 0) for pid, v in zip(ids[:300], y[:300], strict=True)}
    table = performance_table(logged, outcomes, {"roc_auc": 0.86, "ks": 0.57})
    assert [r["month"] for r in table] == ["2026-11", "2026-12", "all"]
    assert [r["labelled"] for r in table] == [250, 50, 300]
    assert table[-1]["auc"] == pytest.approx(roc_auc_score(y[:300], probs[:300]))
    assert table[0]["auc"] == pytest.approx(roc_auc_score(y[:250], probs[:250]))
    assert table[-1]["bad_rate"] == pytest.approx(y[:300].mean()) and table[-1]["test_auc"] == 0.86
