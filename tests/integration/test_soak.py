"""The soak's CI variant: 30 s of mixed traffic with two promotions (bench/soak.py runs 120 s).

The prediction-log queue is kept small (5,000 records) so that, within 30 s, it fills and
spills to the disk spool: memory stays under the bound that queue size implies, and the
spilled records still all reach MLflow.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from support import ROOT

pytestmark = [pytest.mark.integration, pytest.mark.slow]

SOAK = ROOT / "bench" / "soak.py"
SOAK_COMMAND = [sys.executable, str(SOAK), "--seconds", "30", "--api-env", "PREDICTION_LOG_QUEUE_SIZE=5000"]


def test_soak_has_no_5xx_loses_no_log_and_keeps_memory_flat(tmp_path):
    out, report = tmp_path / "soak.json", tmp_path / "soak.jsonl"
    result = subprocess.run(
        [*SOAK_COMMAND, "--json", str(out), "--jsonl", str(report)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert out.exists(), result.stdout[-3000:] + result.stderr[-3000:]
    figures = json.loads(out.read_text())
    print({k: v for k, v in figures.items() if not k.endswith("_samples")})
    assert figures["server_errors_5xx"] == 0 and figures["unanswered_requests"] == 0, figures["by_route"]
    assert figures["predictions_answered"] > 1000  # it did soak
    assert figures["lost"] == 0 and figures["logged_twice"] == 0
    assert figures["predictions_logged"] == figures["predictions_answered"]
    assert len(figures["versions_answered"]) == 3  # both promotions were followed under load
    assert figures["rss_growth_mib"] <= figures["rss_bound_mib"], figures["rss_samples"]
    # The report line: the same figures (no time series), stamped with the run's context.
    (line,) = [json.loads(x) for x in report.read_text().splitlines()]
    assert line["bench"] == "soak" and line["lost"] == figures["lost"] and "rss_samples" not in line
    assert {"date", "commit", "loadavg_1m", "cpus"} <= line.keys()
    assert result.returncode == 0, result.stdout[-3000:]
