"""Benchmark: the offline stability report over 100,000 logged predictions (issue 12's bar: under 30 s).

    python bench/monitor_bench.py [--predictions 100000] [--csv data/cs-training.csv] [--keep]

1. a fresh `mlflow server` (SQLite, temp dir) and the real trainer register and promote the model
   (and log its stability reference);
2. N rows of the real file are scored by that version and written to MLflow exactly as the API's
   prediction log writes them: JSON-lines chunks of 10,000 records (`records.expand`, the
   sink's file names) under `predictions/` of a run tagged like the API's. Only the chunks: the
   report reads nothing else (the per-prediction metrics are left out to keep set-up short);
3. `python -m credit_risk.monitor --last N` runs as a subprocess, timed (wall and CPU), twice;
4. the live window's cost per request: `StabilityMonitor.observe` of one row, with the version's
   real reference, timed in a loop (CPU time, so the machine's load matters less than for wrk).

Prints the figures and the machine's load; exits 1 when a run takes 30 s or more.
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import orjson

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from mlflow.tracking import MlflowClient  # noqa: E402

from credit_risk.api.prediction_log.records import Block, chunk_name, expand  # noqa: E402
from credit_risk.devtools.tracking_server import server_env, start_tracking_server  # noqa: E402
from credit_risk.features import FEATURES  # noqa: E402
from credit_risk.model_io import load_model_version  # noqa: E402
from credit_risk.monitoring.live import StabilityMonitor  # noqa: E402
from credit_risk.monitoring.reference import load_reference  # noqa: E402
from credit_risk.registry import production_version  # noqa: E402
from credit_risk.tracking import get_or_create_experiment, wait_for_tracking_server  # noqa: E402
from credit_risk.training.data import load_dataset  # noqa: E402

MODEL_NAME = "credit-risk-model"
CHUNK = 10_000
BAR_SECONDS = 30.0
ENV = {"OMP_NUM_THREADS": "1", "MLFLOW_DISABLE_TELEMETRY": "true"}


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def write_predictions(
    client: MlflowClient, version: str, X: np.ndarray, probs: np.ndarray, work: Path
) -> None:
    """The chunks the API would have uploaded for these rows, in one run tagged like the API's."""
    exp_id = get_or_create_experiment(client, "credit-risk-predictions")
    process = "0123456789ab"
    run = client.create_run(
        exp_id,
        run_name=f"predictions-{MODEL_NAME}-v{version}-{process}-0",
        tags={"model_name": MODEL_NAME, "model_version": version, "api_process": process},
    )
    preds = (probs >= 0.5).astype(np.int8)
    ts0 = int(time.time() * 1000) - len(probs)
    for start in range(0, len(probs), CHUNK):
        end = min(start + CHUNK, len(probs))
        block = Block(
            start + 1, ts0 + start, MODEL_NAME, version, X[start:end], probs[start:end], preds[start:end]
        )
        path = work / chunk_name(process, start + 1, block.ts_ms)  # one timestamp per block
        path.write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in expand(block, process)))
        client.log_artifact(run.info.run_id, str(path), "predictions")
        path.unlink()
    client.set_terminated(run.info.run_id)


def observe_cost(reference, X: np.ndarray, probs: np.ndarray, n: int = 20_000) -> float:
    """CPU microseconds per single-row `observe` (what /predict adds to each request)."""
    monitor = StabilityMonitor(10_000)
    rows = [(X[i : i + 1], probs[i : i + 1]) for i in range(min(n, len(probs)))]
    start = time.process_time()
    for x, p in rows:
        monitor.observe("1", reference, x, p)
    return (time.process_time() - start) * 1e6 / len(rows)


def timed_report(tracking_uri: str, n: int) -> tuple[float, float, int, str]:
    """(wall s, CPU s, exit status, last log lines) of one report run."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "credit_risk.monitor", "--last", str(n)],
        env=server_env({"MLFLOW_TRACKING_URI": tracking_uri, **ENV}),
        capture_output=True,
        text=True,
        timeout=600,
    )
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu, done.returncode, "\n".join(done.stderr.splitlines()[-3:])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--predictions", type=int, default=100_000)
    parser.add_argument("--csv", type=Path, default=ROOT / "data" / "cs-training.csv")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--keep", action="store_true")
    args = parser.parse_args()
    if not args.csv.exists():
        print(f"{args.csv} is missing: run `make data`", file=sys.stderr)
        return 2
    work = Path(tempfile.mkdtemp(prefix="monitor-bench-"))
    tracking = None
    try:
        tracking = start_tracking_server(
            f"sqlite:///{work / 'mlflow.db'}", str(work / "artifacts"), work / "mlflow-server.log"
        )
        log("training with the real trainer ...")
        with open(work / "train.log", "wb") as out:
            code = subprocess.call(
                [sys.executable, "-m", "credit_risk.train", "--csv", str(args.csv)],
                stdout=out, stderr=out, env=server_env({"MLFLOW_TRACKING_URI": tracking.url, **ENV}),
            )  # fmt: skip
        if code != 0:
            raise RuntimeError(f"trainer exited {code}: {(work / 'train.log').read_text()[-3000:]}")
        client = wait_for_tracking_server(tracking.url, 30)
        version = str(production_version(client, MODEL_NAME).version)
        model = load_model_version(client, MODEL_NAME, version)
        X = load_dataset(args.csv)[0].loc[:, list(FEATURES)].to_numpy(dtype=np.float64)
        X = np.resize(X, (args.predictions, len(FEATURES)))  # repeats the file past 150,000 rows
        log(f"writing {args.predictions:,} logged predictions of version {version} as chunks ...")
        probs = model.predict_proba(X)
        write_predictions(client, version, X, probs, work)
        cost_us = observe_cost(load_reference(client, model.run_id), X, probs)
        results = []
        for i in range(args.repeats):
            wall, cpu, code, tail = timed_report(tracking.url, args.predictions)
            results.append(wall)
            log(f"report {i + 1}: {wall:.1f} s wall, {cpu:.1f} s CPU, exit {code}\n{tail}")
        load = os.getloadavg()
        print()
        chunks = -(-args.predictions // CHUNK)
        print(f"stability report over {args.predictions:,} logged predictions ({chunks} chunks):")
        print(f"  wall time per run: {', '.join(f'{w:.1f} s' for w in results)} (bar {BAR_SECONDS:.0f} s)")
        print(f"live window: {cost_us:.1f} us CPU per single-row observe (what /predict adds)")
        print(
            f"  machine: {os.cpu_count()} cores, load average {load[0]:.1f} / {load[1]:.1f} / {load[2]:.1f}"
        )
        return 0 if max(results) < BAR_SECONDS else 1
    finally:
        if tracking is not None:
            tracking.stop()
        if args.keep:
            log(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
