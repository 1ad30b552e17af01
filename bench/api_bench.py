"""Benchmark: our API against `mlflow models serve` and Seldon MLServer on the same Production model.

    python bench/api_bench.py [--rounds 3] [--duration 15] [--connections 16] [--skip-mlserver | --ours-only]
                              [--jsonl FILE]

One run, everything on this machine:
1. a fresh `mlflow server` (SQLite, temp dir) and the real trainer (`python -m credit_risk.train`
   on data/cs-training.csv) register and promote the model, as in production;
2. the targets serve that Production version: our API with prediction logging on (and reason
   codes, issue 11: the seed payload is a decline, so every request computes them), the same
   with logging off, the same with logging on and reasons off (MAX_REASONS=0), `mlflow models
   serve --env-manager local`, and MLServer 1.7.1 with its
   scikit-learn runtime (own virtualenv under bench/.venv-mlserver, created on first use: it
   pins its own FastAPI) fed a raw FP64 tensor and, separately, named columns, and a second
   MLServer with inference in its server process (`parallel_workers: 0`), fed the tensor;
3. wrk (Debian package `wrk`) drives single-row requests with N connections, the targets taking
   turns round after round so that the machine's noise hits all of them alike;
4. /predict/batch with 10,000 real rows is timed (plain and with ?explain=true), and the
   prediction log is checked: every 200 response of our logging-on APIs must be in MLflow as a
   `probability` point.

Every target gets the same environment, OMP_NUM_THREADS=1 included. Only the `mlflow models
serve` process gets MLFLOW_ALLOW_PICKLE_DESERIALIZATION=true: MLflow's own loader refuses skops
models without it (our API never sets it; it loads with its own trusted-type list).
MLServer loads a joblib dump of the very same pipeline (its scikit-learn runtime reads joblib,
not skops), written by this script from the version our loader accepted.
Not part of `make test`: it takes several minutes and prints figures, it asserts nothing.
--jsonl appends one JSON line per summary (each target's single-row figures, each throughput
ratio, the batch timings, the prediction-log check) with date, commit and machine load.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import joblib
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "src"), str(ROOT / "tests")]

from credit_risk.api.schemas import EXAMPLE_RECORD  # noqa: E402
from credit_risk.devtools.tracking_server import free_port, server_env, start_tracking_server  # noqa: E402
from credit_risk.features import FEATURES  # noqa: E402
from credit_risk.model_io import load_model_version  # noqa: E402
from credit_risk.registry import production_version  # noqa: E402
from credit_risk.tracking import wait_for_tracking_server  # noqa: E402
from credit_risk.training.data import load_dataset  # noqa: E402
from support.figures import add_jsonl_option, report_lines  # noqa: E402

MODEL_NAME = "credit-risk-model"
MLSERVER_VENV = ROOT / "bench" / ".venv-mlserver"
MLSERVER_PINS = [
    "mlserver==1.7.1",
    "mlserver-sklearn==1.7.1",
    "scikit-learn==1.9.1",  # the pipeline was fitted with this version: unpickling needs it
    "numpy==2.4.6",
    "pandas==3.1.1",
    # uvloop 0.22+ raises in asyncio.get_event_loop() without a running loop, which MLServer
    # 1.7.1's inference worker calls at start: the version of its own release time works.
    "uvloop==0.21.0",
    # Without httptools uvicorn parses HTTP with h11, in pure Python: MLServer then spent twice the
    # CPU a request (5.5-6.6 ms against 2.9 ms, 2026-12-03). Our API has it; so does the peer.
    "httptools==0.9.0",
]
SEED_PAYLOAD = EXAMPLE_RECORD  # the seed's payload, as /docs shows it
COMMON_ENV = {"OMP_NUM_THREADS": "1", "MLFLOW_DISABLE_TELEMETRY": "true"}


@dataclass
class Target:
    """One server under test: where to POST, what body, and its wrk results per round."""

    name: str
    url: str
    body_file: Path
    process: subprocess.Popen
    results: list[dict] = field(default_factory=list)


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def wait_for(url: str, timeout: float, process: subprocess.Popen, log_path: Path) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{url}: process exited {process.returncode}\n{log_path.read_text()[-3000:]}")
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise RuntimeError(f"{url} not ready after {timeout:.0f}s\n{log_path.read_text()[-3000:]}")


def spawn(cmd: list[str], env: dict[str, str], log_path: Path, cwd: Path | None = None) -> subprocess.Popen:
    with open(log_path, "ab") as out:
        return subprocess.Popen(
            cmd, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=cwd, start_new_session=True
        )


def stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        try:
            os.killpg(process.pid, 15)
            process.wait(30)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            os.killpg(process.pid, 9)
            process.wait()


def train(tracking_uri: str, csv: Path, work: Path) -> None:
    log("training with the real trainer (python -m credit_risk.train) ...")
    env = server_env({"MLFLOW_TRACKING_URI": tracking_uri, **COMMON_ENV})
    with open(work / "train.log", "wb") as out:
        code = subprocess.call(
            [sys.executable, "-m", "credit_risk.train", "--csv", str(csv)], stdout=out, stderr=out, env=env
        )
    if code != 0:
        raise RuntimeError(f"trainer exited {code}: {(work / 'train.log').read_text()[-3000:]}")


def start_our_api(
    tracking_uri: str, work: Path, logging_on: bool, reasons_on: bool = True, stability_on: bool = True
) -> tuple[str, subprocess.Popen]:
    port = free_port()
    tag = (
        ("on" if logging_on else "off")
        + ("" if reasons_on else "-no-reasons")
        + ("" if stability_on else "-nostability")
    )
    env = server_env(
        {
            **COMMON_ENV,
            "MLFLOW_TRACKING_URI": tracking_uri,
            "API_HOST": "127.0.0.1",
            "API_PORT": str(port),
            "PREDICTION_LOGGING": str(logging_on).lower(),
            "STABILITY_MONITORING": str(stability_on).lower(),
            "PREDICTION_LOG_SPOOL_DIR": str(work / f"spool-{tag}"),
            **({} if reasons_on else {"MAX_REASONS": "0"}),
        }
    )
    log_path = work / f"api-{tag}.log"
    process = spawn([sys.executable, "-m", "credit_risk.api"], env, log_path)
    url = f"http://127.0.0.1:{port}"
    wait_for(f"{url}/health/ready", 120, process, log_path)
    return url, process


def start_mlflow_serve(tracking_uri: str, version: str, work: Path) -> tuple[str, subprocess.Popen]:
    port = free_port()
    # Only this peer: MLflow's loader will not read a skops model without it.
    # It runs `uvicorn` by name: the venv's bin must be on PATH even when the venv is not active.
    path = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
    env = server_env(
        {
            **COMMON_ENV,
            "MLFLOW_TRACKING_URI": tracking_uri,
            "MLFLOW_ALLOW_PICKLE_DESERIALIZATION": "true",
            "PATH": path,
        }
    )
    cmd = [
        sys.executable, "-m", "mlflow", "models", "serve",
        "-m", f"models:/{MODEL_NAME}/{version}",
        "--env-manager", "local", "-h", "127.0.0.1", "-p", str(port),
    ]  # fmt: skip
    log_path = work / "mlflow-serve.log"
    process = spawn(cmd, env, log_path)
    url = f"http://127.0.0.1:{port}"
    wait_for(f"{url}/ping", 180, process, log_path)
    return url, process


def ensure_mlserver_venv() -> Path:
    python = MLSERVER_VENV / "bin" / "python"
    if not (MLSERVER_VENV / "bin" / "mlserver").exists():
        if MLSERVER_VENV.is_symlink():  # a link to a virtualenv that is gone
            MLSERVER_VENV.unlink()
        log(f"creating {MLSERVER_VENV} for MLServer (it pins its own FastAPI) ...")
        subprocess.check_call([sys.executable, "-m", "venv", str(MLSERVER_VENV)])
    # Every time: a venv made before a pin was added gets it (a few seconds when all are there).
    subprocess.check_call([str(python), "-m", "pip", "install", "--quiet", *MLSERVER_PINS])
    return MLSERVER_VENV / "bin" / "mlserver"


def start_mlserver(pipeline, work: Path, parallel_workers: int) -> tuple[str, subprocess.Popen]:
    """MLServer on its own settings folder; parallel_workers 1 is its default (inference in a pool
    process, fed over a queue), 0 runs inference in the server process itself."""
    mlserver = ensure_mlserver_venv()
    root = work / f"mlserver-{parallel_workers}"
    model_dir = root / "credit-risk"
    model_dir.mkdir(parents=True)
    joblib.dump(pipeline, model_dir / "model.joblib")
    (model_dir / "model-settings.json").write_text(
        json.dumps(
            {
                "name": "credit-risk",
                "implementation": "mlserver_sklearn.SKLearnModel",
                "parameters": {"uri": "./model.joblib", "version": "v1"},
            }
        )
    )
    port = free_port()
    settings = {
        "http_port": port,
        "grpc_port": free_port(),
        "metrics_port": free_port(),
        "host": "127.0.0.1",
        "parallel_workers": parallel_workers,
    }
    (root / "settings.json").write_text(json.dumps(settings))
    # The pipeline's first step is our CreditFeatures: unpickling needs the package on the path.
    env = server_env({**COMMON_ENV, "PYTHONPATH": str(ROOT / "src")})
    log_path = work / f"mlserver-{parallel_workers}.log"
    process = spawn([str(mlserver), "start", str(root)], env, log_path)
    url = f"http://127.0.0.1:{port}"
    wait_for(f"{url}/v2/models/credit-risk/ready", 180, process, log_path)
    return url, process


def add_mlserver(targets: list, processes: list, pipeline, bodies: dict[str, Path], work: Path) -> str:
    """Start MLServer as shipped (one inference pool worker) with its two input forms as targets,
    and a second MLServer with inference in-process (parallel_workers 0), raw tensor only: on 2
    cores the pool's queue hop may cost more than it gives, and the bar is taken against the
    faster of the two. Returns "" or why MLServer is not measured."""
    try:
        pooled_url, pooled = start_mlserver(pipeline, work, parallel_workers=1)
        inproc_url, inproc = start_mlserver(pipeline, work, parallel_workers=0)
    except (RuntimeError, subprocess.CalledProcessError) as e:
        log(f"MLServer not measured: {e}")
        return f"MLServer not measured: {e}"
    processes += [pooled, inproc]
    infer = "/v2/models/credit-risk/infer"
    targets.append(Target("MLServer, FP64 tensor", pooled_url + infer, bodies["mlserver-tensor"], pooled))
    targets.append(Target("MLServer, named columns", pooled_url + infer, bodies["mlserver-columns"], pooled))
    targets.append(Target(MLSERVER_INPROC, inproc_url + infer, bodies["mlserver-tensor"], inproc))
    return ""


def write_bodies(work: Path) -> dict[str, Path]:
    row = [float(SEED_PAYLOAD[f]) for f in FEATURES]
    bodies = {
        "ours": SEED_PAYLOAD,
        "mlflow": {"dataframe_split": {"columns": list(FEATURES), "data": [row]}},
        "mlserver-tensor": {
            "inputs": [{"name": "input-0", "shape": [1, len(FEATURES)], "datatype": "FP64", "data": row}],
            "outputs": [{"name": "predict_proba"}],
        },
        "mlserver-columns": {
            "inputs": [
                {"name": f, "shape": [1, 1], "datatype": "FP64", "data": [v]}
                for f, v in zip(FEATURES, row, strict=True)
            ],
            "parameters": {"content_type": "pd"},
            "outputs": [{"name": "predict_proba"}],
        },
    }
    paths = {}
    for name, body in bodies.items():
        paths[name] = work / f"body-{name}.json"
        paths[name].write_text(json.dumps(body))
    return paths


_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3}


def _ms(text: str) -> float:
    value, unit = re.fullmatch(r"([\d.]+)(us|ms|s)", text).groups()
    return float(value) * _UNITS[unit]


def group_cpu_seconds(pgid: int) -> float:
    """CPU time (user + system) so far of a process group's live processes and of the children they
    reaped, from /proc (a process that ended unreaped between two readings takes its share along)."""
    ticks = 0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:  # the process ended meanwhile
            continue
        if int(fields[2]) == pgid:  # state, ppid, pgrp, ..., utime (11), stime, cutime, cstime (14)
            ticks += sum(int(f) for f in fields[11:15])
    return ticks / os.sysconf("SC_CLK_TCK")


def run_wrk(target: Target, duration: int, connections: int, threads: int) -> dict:
    out = subprocess.run(
        [
            "wrk", f"-t{threads}", f"-c{connections}", f"-d{duration}s", "--latency",
            "-s", str(ROOT / "bench" / "predict.lua"), target.url,
        ],
        env={**os.environ, "BENCH_BODY_FILE": str(target.body_file)},
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    result = {
        "rps": float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1)),
        "p50": _ms(re.search(r"\s50%\s+(\S+)", out).group(1)),
        "p99": _ms(re.search(r"\s99%\s+(\S+)", out).group(1)),
        "requests": int(re.search(r"(\d+) requests in", out).group(1)),
    }
    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    result["failed"] = (int(non_2xx.group(1)) if non_2xx else 0) + (
        sum(map(int, errors.groups())) if errors else 0
    )
    return result


def drain_log(api_url: str, timeout: float = 120) -> dict:
    """Wait until our API's prediction log has nothing queued or spooled; return its counters."""
    deadline = time.monotonic() + timeout
    while True:
        stats = httpx.get(f"{api_url}/health", timeout=10).json()["prediction_log"]
        if (stats["queue_depth"] == 0 and stats["spool_backlog"] == 0) or time.monotonic() > deadline:
            return stats
        time.sleep(0.5)


def time_batches(
    api_url: str, rows: np.ndarray, repeats: int, drained: bool, explain: bool = False
) -> list[float]:
    records = [
        {f: (None if np.isnan(v) else float(v)) for f, v in zip(FEATURES, row, strict=True)} for row in rows
    ]
    body = json.dumps({"records": records}).encode()
    times = []
    with httpx.Client(timeout=60) as http:
        for _ in range(repeats + 1):
            if drained:  # the previous batch's 10,000 log records are in MLflow already
                drain_log(api_url)
            start = time.perf_counter()
            resp = http.post(
                f"{api_url}/predict/batch" + ("?explain=true" if explain else ""),
                content=body,
                headers={"Content-Type": "application/json"},
            )
            times.append((time.perf_counter() - start) * 1e3)
            resp.raise_for_status()
            predictions = resp.json()["predictions"]
            if len(predictions) != len(rows):
                raise RuntimeError("the batch answer has the wrong length")
            if explain and not any(p["reasons"] for p in predictions):
                raise RuntimeError("explain=true gave no reasons")
    return times[1:]  # the first one warms up


def predictions_served(api_url: str) -> int:
    """Rows our API answered with 200 (its Prometheus counter, singles and batch rows)."""
    text = httpx.get(f"{api_url}/metrics", timeout=10).text
    pattern = r'^credit_risk_predictions_total\{outcome="[01]"\} (\S+)$'
    return int(sum(float(v) for v in re.findall(pattern, text, re.M)))


def count_logged_points(tracking_uri: str) -> int:
    client = wait_for_tracking_server(tracking_uri, 30)
    exp = client.get_experiment_by_name("credit-risk-predictions")
    total = 0
    for run in client.search_runs([exp.experiment_id], max_results=1000):
        total += len(client.get_metric_history(run.info.run_id, "probability"))
    return total


MLSERVER_INPROC = "MLServer, FP64 tensor, in-process"  # parallel_workers 0
RATIOS = (  # throughput ratios reported, numerator first, when both were measured
    ("ours, logging on", "ours, logging off"),
    ("ours, logging on", "ours, stability off"),
    ("ours, logging on", "ours, reasons off"),
    ("ours, logging on", "MLServer, FP64 tensor"),
    ("ours, logging on", MLSERVER_INPROC),
)


def target_summary(t: Target) -> dict:
    """One target's single-row figures: medians over the rounds, failed summed, and every round."""
    keys = ("rps", "p50", "p99", "cpu_target", "cpu_tracking")
    return {
        "summary": "single-row predict",
        "target": t.name,
        **{k: statistics.median(res[k] for res in t.results) for k in keys},
        "failed": sum(res["failed"] for res in t.results),
        "rounds": t.results,
    }


def throughput_ratio(a: Target, b: Target) -> dict:
    """a's req/s over b's, round by round (the targets take turns, so a round shares its noise)."""
    ratios = [x["rps"] / y["rps"] for x, y in zip(a.results, b.results, strict=True)]
    return {
        "summary": "throughput ratio",
        "targets": [a.name, b.name],
        "median": statistics.median(ratios),
        "per_round": ratios,
    }


def per_round(ratio: dict) -> str:
    """A ratio's rounds, as printed."""
    return ", ".join(f"{x:.3f}" for x in ratio["per_round"])


def timing(times_ms: list[float]) -> dict:
    """Median, max and count of request times (ms)."""
    return {"median_ms": statistics.median(times_ms), "max_ms": max(times_ms), "requests": len(times_ms)}


def ms(timed: dict) -> str:
    """A timing, as printed."""
    return f"median {timed['median_ms']:.0f} ms, max {timed['max_ms']:.0f} ms"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--duration", type=int, default=15, help="seconds per wrk run")
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--wrk-threads", type=int, default=1, help="wrk threads (it shares the 2 cores)")
    parser.add_argument("--batch-repeats", type=int, default=10)
    parser.add_argument("--csv", type=Path, default=ROOT / "data" / "cs-training.csv")
    parser.add_argument("--skip-mlserver", action="store_true")
    parser.add_argument(
        "--ours-only", action="store_true", help="only our API, logging on and off (for the logging cost)"
    )
    parser.add_argument(
        "--stability",
        action="store_true",
        help="add our API with the live stability window off (logging on), for the window's cost",
    )
    parser.add_argument("--keep", action="store_true", help="keep the work directory (logs)")
    add_jsonl_option(parser)
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        print("wrk is not installed: apt-get install -y wrk", file=sys.stderr)
        return 2
    if not args.csv.exists():
        print(f"{args.csv} is missing: run `make data`", file=sys.stderr)
        return 2

    work = Path(tempfile.mkdtemp(prefix="api-bench-"))
    log(f"work directory {work}")
    processes: list[subprocess.Popen] = []
    tracking = None
    try:
        tracking = start_tracking_server(
            f"sqlite:///{work / 'mlflow.db'}", str(work / "artifacts"), work / "mlflow-server.log"
        )
        train(tracking.url, args.csv, work)
        client = wait_for_tracking_server(tracking.url, 30)
        version = production_version(client, MODEL_NAME).version
        model = load_model_version(client, MODEL_NAME, version)
        log(f"Production: {MODEL_NAME} version {version} ({type(model.pipeline.steps[-1][1]).__name__})")

        bodies = write_bodies(work)
        targets: list[Target] = []
        on_url, p = start_our_api(tracking.url, work, logging_on=True)
        processes.append(p)
        targets.append(Target("ours, logging on", f"{on_url}/predict", bodies["ours"], p))
        off_url, p = start_our_api(tracking.url, work, logging_on=False)
        processes.append(p)
        targets.append(Target("ours, logging off", f"{off_url}/predict", bodies["ours"], p))
        plain_url, p = start_our_api(tracking.url, work, logging_on=True, reasons_on=False)
        processes.append(p)
        targets.append(Target("ours, reasons off", f"{plain_url}/predict", bodies["ours"], p))
        if args.stability:
            nostab_url, p = start_our_api(tracking.url, work, logging_on=True, stability_on=False)
            processes.append(p)
            targets.append(Target("ours, stability off", f"{nostab_url}/predict", bodies["ours"], p))
        seed = httpx.post(f"{on_url}/predict", json=SEED_PAYLOAD, timeout=10).json()
        log(f"seed payload: prediction {seed['prediction']}, probability {seed['probability']:.3f}, "
            f"reasons {[r['code'] for r in seed['reasons']]}")  # fmt: skip
        scorer = httpx.get(f"{on_url}/health").json()["scorer"]
        log(f"our API scores with: {scorer}")
        if args.ours_only:
            mlserver_note = "peers skipped (--ours-only)"
        else:
            mlflow_url, p = start_mlflow_serve(tracking.url, version, work)
            processes.append(p)
            targets.append(Target("mlflow models serve", f"{mlflow_url}/invocations", bodies["mlflow"], p))
            if args.skip_mlserver:
                mlserver_note = "MLServer skipped (--skip-mlserver)"
            else:
                mlserver_note = add_mlserver(targets, processes, model.pipeline, bodies, work)

        for t in targets:  # warm-up, and a check that each answers 200
            warm = run_wrk(t, 3, args.connections, args.wrk_threads)
            if warm["failed"]:
                raise RuntimeError(f"{t.name}: {warm['failed']} failed requests in the warm-up")
        drain_log(on_url)
        for r in range(args.rounds):
            for t in targets:
                cpu0 = group_cpu_seconds(t.process.pid), group_cpu_seconds(tracking.process.pid)
                res = run_wrk(t, args.duration, args.connections, args.wrk_threads)
                if t.name in ("ours, logging on", "ours, reasons off", "ours, stability off"):
                    # Its MLflow writes must not spill into the next target's turn; how long the
                    # drain takes shows whether the log kept pace during the run or piled up.
                    drained_at = time.monotonic()
                    drain_log(t.url.removesuffix("/predict"))
                    res["drain_s"] = time.monotonic() - drained_at
                cpu1 = group_cpu_seconds(t.process.pid), group_cpu_seconds(tracking.process.pid)
                # CPU ms per request over the wrk run and the drain, of the target and of MLflow
                served = max(res["requests"], 1)
                res["cpu_target"] = (cpu1[0] - cpu0[0]) * 1e3 / served
                res["cpu_tracking"] = (cpu1[1] - cpu0[1]) * 1e3 / served
                t.results.append(res)
                log(f"round {r + 1} {t.name}: {res['rps']:.0f} req/s, p50 {res['p50']:.1f} ms, "
                    f"p99 {res['p99']:.1f} ms, failed {res['failed']}, CPU ms per request: "
                    f"target {res['cpu_target']:.2f}, tracking server {res['cpu_tracking']:.2f}")  # fmt: skip

        rows = load_dataset(args.csv)[0].loc[:, list(FEATURES)].to_numpy(dtype=np.float64)[:10_000]
        batch_ms = time_batches(on_url, rows, args.batch_repeats, drained=True)
        batch_b2b_ms = time_batches(on_url, rows, args.batch_repeats, drained=False)
        explain_ms = time_batches(on_url, rows, args.batch_repeats, drained=True, explain=True)
        explain_b2b_ms = time_batches(on_url, rows, args.batch_repeats, drained=False, explain=True)
        stats = drain_log(on_url)
        logged = count_logged_points(tracking.url)
        served = predictions_served(on_url) + predictions_served(plain_url)  # both log

        print()
        print(f"Single-row predict, {args.connections} connections, wrk -t{args.wrk_threads}, "
              f"{args.duration}s x {args.rounds} rounds")  # fmt: skip
        print("(medians over rounds; failed = non-2xx responses + socket errors, all rounds)")
        print("(CPU = CPU ms per request of the target and of the tracking server, over the wrk run")
        print(" and the prediction-log drain after it)")
        header = ("target", "req/s", "p50 ms", "p99 ms", "failed", "CPU", "MLflow CPU")
        print("{:<36}{:>9}{:>9}{:>9}{:>8}{:>8}{:>12}".format(*header))
        summaries = [target_summary(t) for t in targets]
        for m in summaries:
            print(f"{m['target']:<36}{m['rps']:>9.0f}{m['p50']:>9.1f}{m['p99']:>9.1f}{m['failed']:>8}"
                  f"{m['cpu_target']:>8.2f}{m['cpu_tracking']:>12.2f}")  # fmt: skip
        by_name = {t.name: t for t in targets}
        ratios = {
            (a, b): throughput_ratio(by_name[a], by_name[b])
            for a, b in RATIOS
            if a in by_name and b in by_name
        }
        summaries += ratios.values()
        if args.stability:
            stab = ratios["ours, logging on", "ours, stability off"]
            print(f"stability window on / off throughput (both logging on): median "
                  f"{stab['median']:.3f} (per round: {per_round(stab)})")  # fmt: skip
            psi = httpx.get(f"{on_url}/monitoring/stability").json()
            summaries.append(
                {
                    "summary": "live stability window",
                    "window_size": psi["window_size"],
                    "score_psi": psi["score"]["psi"],
                }
            )
            print(f"live window after the runs: {psi['window_size']} predictions, score PSI "
                  f"{psi['score']['psi']:.4f} (the last /predict/batch rows of the real file)")  # fmt: skip
        drains = [res["drain_s"] for res in targets[0].results]
        print(f"\nprediction log backlog drained {min(drains):.1f}-{max(drains):.1f} s after each "
              f"logging-on run (flush interval 1 s)")  # fmt: skip
        onoff = ratios["ours, logging on", "ours, logging off"]
        print(f"logging on / off throughput: median {onoff['median']:.3f} (per round: {per_round(onoff)})")
        batch = {
            "summary": "/predict/batch, 10,000 real rows",
            "drained": timing(batch_ms),
            "back_to_back": timing(batch_b2b_ms),
            "explain_drained": timing(explain_ms),
            "explain_back_to_back": timing(explain_b2b_ms),
        }
        summaries.append(batch)
        print(f"/predict/batch, 10,000 real rows, prediction log drained before each: "
              f"{ms(batch['drained'])} over {batch['drained']['requests']} requests")  # fmt: skip
        print(f"/predict/batch, back to back (MLflow still ingesting the previous batches' logs): "
              f"{ms(batch['back_to_back'])}")  # fmt: skip
        explain = batch["explain_drained"], batch["explain_back_to_back"]
        print(f"/predict/batch?explain=true (reasons for all 10,000), log drained before each: "
              f"{ms(explain[0])}; back to back: {ms(explain[1])}")  # fmt: skip
        for (a, b), r in ratios.items():
            if b not in ("ours, logging off", "ours, stability off"):  # those two are printed above
                print(f"{a} / {b} throughput: median {r['median']:.3f} (per round: {per_round(r)})")
        print(f"load average at the end: {os.getloadavg()}")
        verdict = "all logged" if logged == served else "MISMATCH"
        print(f"prediction log: {logged} `probability` points in MLflow for {served} predictions answered "
              f"with 200 by the logging-on API ({verdict}); its counters {stats}")  # fmt: skip
        summaries.append(
            {
                "summary": "prediction log",
                "logged": logged,
                "answered": served,
                "all_logged": logged == served,
                "drain_s": drains,
                "counters": stats,
            }
        )
        if mlserver_note:
            print(mlserver_note)
        prefix = {"bench": "api", "args": vars(args), "peers": mlserver_note or "measured"}
        report_lines((prefix | m for m in summaries), args.jsonl)
        return 0
    finally:
        for p in processes:
            stop(p)
        if tracking is not None:
            tracking.stop()
        if args.keep:
            log(f"logs kept in {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
