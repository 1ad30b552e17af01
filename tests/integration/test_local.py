"""`make run` (`python -m credit_risk.devtools.local`): the embedded default, end to end on free ports."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from credit_risk.devtools.tracking_server import free_port
from support.data import synthetic_frame, write_kaggle_csv
from support.stack import http_status

pytestmark = pytest.mark.integration


def wait_for_banner(process: subprocess.Popen, log_path: Path, timeout: float = 240) -> str:
    deadline = time.monotonic() + timeout
    while "API docs" not in log_path.read_text():
        assert process.poll() is None, log_path.read_text()[-4000:]
        assert time.monotonic() < deadline, log_path.read_text()[-4000:]
        time.sleep(0.5)
    return log_path.read_text()


def stop(process: subprocess.Popen, log_path: Path) -> None:
    """SIGTERM, as `make run`'s Ctrl-C or a service manager would; everything must exit cleanly."""
    process.send_signal(signal.SIGTERM)
    assert process.wait(60) == 0, log_path.read_text()[-4000:]


def run_local(args: list[str], mlflow_port: int, api_port: int, log_path: Path) -> subprocess.Popen:
    env = {**os.environ, "MLFLOW_PORT": str(mlflow_port), "API_PORT": str(api_port)}
    env.pop("API_KEY", None)
    with open(log_path, "w") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "credit_risk.devtools.local", *args],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def test_local_run_trains_serves_a_pasteable_prediction_and_stops_on_sigterm(tmp_path):
    # signal=2: a clearly learnable target, so the trainer's AUC gate promotes the model.
    csv = write_kaggle_csv(synthetic_frame(signal=2.0), tmp_path / "cs-training.csv")
    mlflow_port, api_port = free_port(), free_port()
    log_path = tmp_path / "local.log"
    process = run_local(
        ["--csv", str(csv), "--mlflow-dir", str(tmp_path / "mlflow")], mlflow_port, api_port, log_path
    )
    try:
        output = wait_for_banner(process, log_path)
        assert f"http://localhost:{mlflow_port}" in output
        assert f"http://localhost:{api_port}/docs" in output
        assert http_status(f"http://127.0.0.1:{api_port}/health/ready") == 200

        # The printed curl line works as pasted.
        curl = re.search(r"^\s*predict\s+(curl .*)$", output, re.M)[1]
        answer = subprocess.run(["bash", "-c", curl], capture_output=True, text=True, timeout=30)
        body = json.loads(answer.stdout)
        assert body["prediction"] in (0, 1) and 0.0 <= body["probability"] <= 1.0

        stop(process, log_path)
        assert http_status(f"http://127.0.0.1:{api_port}/health/live") == 0
        assert http_status(f"http://127.0.0.1:{mlflow_port}/health") == 0
        assert (tmp_path / "mlflow" / "mlflow.db").is_file()
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def test_local_run_says_why_the_api_serves_nothing_when_the_model_is_not_promoted(tmp_path):
    useless = write_kaggle_csv(synthetic_frame(signal=0.0), tmp_path / "cs-training.csv")
    api_port = free_port()
    log_path = tmp_path / "local.log"
    process = run_local(
        ["--csv", str(useless), "--mlflow-dir", str(tmp_path / "mlflow")], free_port(), api_port, log_path
    )
    try:
        output = wait_for_banner(process, log_path)
        assert "no version of credit-risk-model is in Production" in output
        assert http_status(f"http://127.0.0.1:{api_port}/health/ready") == 503
        stop(process, log_path)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def test_local_run_refuses_a_port_held_by_another_mlflow_server(tmp_path, mlflow_server):
    taken = int(mlflow_server.url.rsplit(":", 1)[1])
    log_path = tmp_path / "local.log"
    process = run_local(["--csv", str(tmp_path / "unused.csv")], taken, free_port(), log_path)
    assert process.wait(60) == 1
    output = log_path.read_text()
    assert f"port {taken} is already used by an MLflow server (version 3.17.2)" in output
    assert "MLFLOW_PORT=" in output


def test_local_run_names_a_missing_csv(tmp_path):
    missing = tmp_path / "nowhere.csv"
    log_path = tmp_path / "local.log"
    process = run_local(["--csv", str(missing)], free_port(), free_port(), log_path)
    assert process.wait(60) == 1
    assert f"{missing} does not exist" in log_path.read_text()
