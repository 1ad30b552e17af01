"""The API refuses to start without the settings it needs."""

from __future__ import annotations

import os
import subprocess
import sys


def test_api_refuses_to_start_without_tracking_uri():
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    done = subprocess.run(
        [sys.executable, "-m", "credit_risk.api"], env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 2
    assert "MLFLOW_TRACKING_URI: Field required" in done.stderr
