"""Soak: mixed traffic against the API for a bounded time, two promotions, nothing lost, memory flat.

    python bench/soak.py [--seconds 120] [--threads 4] [--batch-size 10] [--json PATH] [--jsonl FILE]

Everything on loopback, started here in a temp dir: an `mlflow server` (SQLite, local
artifacts), three registered versions of a small model (v1 in Production), and the API as
`python -m credit_risk.api` (prediction logging on, polling the registry every second).
The client is this process (a separate one from the API): threads sending `/predict`,
`/predict/batch` and `/model/info` (7:2:1) on keep-alive connections. At a quarter and at half
of the run v2, then v3, are promoted with the REST call the MLflow UI makes: early enough that
both swaps (4-6 s each under this load: a version's reason-code explainer is built at load) are
over before the last fifth, where memory is read, so that it measures what stays, not a swap.

Reported, and checked (exit code 1 when a check fails):
- 5xx answers: must be 0 (and no request may go unanswered);
- prediction logs: after the load stops and the API's queue and spool are drained, every
  prediction answered with 200 must be in MLflow exactly once (logged == answered, lost == 0);
- API memory: VmRSS from /proc/PID/status every second; growth = the highest RSS in the last
  fifth of the run minus the median of the first fifth (after a warm-up of 10% of the run).
  What grows is the prediction-log queue when the tracking server logs slower than the API
  answers (~0.75 KiB per queued record measured here, and malloc keeps the high-water mark);
  PREDICTION_LOG_QUEUE_SIZE caps it, beyond that records spill to the disk spool. So the bound
  is 16 MiB (models swapped in, caches) + 1 KiB per record of queue capacity: 114 MiB with the
  default 100,000 (--rss-bound-mib overrides it).
The small CI variant is tests/integration/test_soak.py (20 s).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "src"), str(ROOT / "tests")]

from credit_risk.devtools.tracking_server import start_tracking_server  # noqa: E402
from credit_risk.settings import ApiSettings  # noqa: E402
from support.api import register_model, set_stage, start_api_process, wait_until  # noqa: E402
from support.figures import add_jsonl_option, report_lines  # noqa: E402
from support.load import Load, log_drained, logged_predictions  # noqa: E402

MODEL_NAME = "credit-risk-soak"
EXPERIMENT = "credit-risk-soak-predictions"
QUEUE_SIZE_DEFAULT = ApiSettings.model_fields["prediction_log_queue_size"].default


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def rss_kib(pid: int) -> int:
    """VmRSS of a process, in KiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for pid {pid}")


class RssSampler(threading.Thread):
    """Once a second: the API's RSS (KiB) and its prediction-log queue depth, by seconds since start."""

    def __init__(self, pid: int, url: str):
        super().__init__(daemon=True)
        self.pid = pid
        self.url = url
        self.samples: list[tuple[float, int]] = []
        self.queue_depths: list[tuple[float, int]] = []
        self._stop_event = threading.Event()
        self._t0 = time.monotonic()

    def run(self) -> None:
        while not self._stop_event.is_set():
            t = time.monotonic() - self._t0
            self.samples.append((t, rss_kib(self.pid)))
            try:
                stats = httpx.get(f"{self.url}/health", timeout=5).json()["prediction_log"]
                self.queue_depths.append((t, stats["queue_depth"]))
            except httpx.HTTPError:
                pass
            self._stop_event.wait(1.0)

    def stop(self) -> None:
        self._stop_event.set()
        self.join()


def rss_growth(samples: list[tuple[float, int]], seconds: float) -> dict:
    """Baseline (median of the first fifth after warm-up), peak of the last fifth, growth (MiB)."""
    warm = 0.1 * seconds
    first = [kib for t, kib in samples if warm <= t < warm + 0.2 * seconds] or [samples[0][1]]
    last = [kib for t, kib in samples if t >= 0.8 * seconds] or [samples[-1][1]]
    baseline, peak = statistics.median(first), max(last)
    return {
        "rss_baseline_mib": round(baseline / 1024, 1),
        "rss_last_fifth_peak_mib": round(peak / 1024, 1),
        "rss_max_mib": round(max(k for _, k in samples) / 1024, 1),
        "rss_growth_mib": round((peak - baseline) / 1024, 1),
    }


def soak(
    seconds: float,
    threads: int,
    batch_size: int,
    workdir: Path,
    rss_bound_mib: float,
    api_env: dict[str, str] | None = None,
) -> dict:
    """Run the soak in `workdir`; returns the figures and the verdict of each check."""
    server = start_tracking_server(
        backend_store_uri=f"sqlite:///{workdir / 'mlflow.db'}",
        artifacts_destination=str(workdir / "artifacts"),
        log_path=workdir / "mlflow.log",
    )
    api = None
    try:
        versions = [register_model(server.url, MODEL_NAME, stage=None, seed=s) for s in range(3)]
        set_stage(server.url, MODEL_NAME, versions[0], "Production")
        api = start_api_process(
            {
                "MLFLOW_TRACKING_URI": server.url,
                "MODEL_NAME": MODEL_NAME,
                "MODEL_POLL_SECONDS": "1",
                "PREDICTION_EXPERIMENT": EXPERIMENT,
                "PREDICTION_LOG_SPOOL_DIR": str(workdir / "spool"),
                **(api_env or {}),
            },
            workdir / "api.log",
        )
        wait_until(lambda: httpx.get(f"{api.url}/health/ready").status_code == 200, 60, "the API to be ready")
        log(f"API pid {api.process.pid} at {api.url} serving v{versions[0]}; soaking {seconds:.0f}s")
        sampler = RssSampler(api.process.pid, api.url)
        sampler.start()
        promotions = []
        started = time.monotonic()
        with Load(api.url, threads=threads, batch_size=batch_size) as load:
            for at, version in ((seconds / 4, versions[1]), (seconds / 2, versions[2])):
                time.sleep(max(0.0, started + at - time.monotonic()))
                set_stage(server.url, MODEL_NAME, version, "Production", archive_existing=True)
                promotions.append({"version": version, "at_s": round(time.monotonic() - started, 1)})
                log(f"promoted v{version}; {load.requests} requests so far")
            time.sleep(max(0.0, started + seconds - time.monotonic()))
        elapsed = time.monotonic() - started
        sampler.stop()

        drain_start = time.monotonic()
        wait_until(lambda: log_drained(api.url), 600, "the prediction log to drain", interval=1.0)
        drain_s = time.monotonic() - drain_start
        stats = httpx.get(f"{api.url}/health", timeout=10).json()["prediction_log"]
        answered = {pid for _, pid in load.answered}
        points = logged_predictions(server.url, EXPERIMENT)
        logged = [p.prediction_id for p in points]
        statuses = load.statuses
        figures = {
            "seconds": round(elapsed, 1),
            "threads": threads,
            "batch_size": batch_size,
            "requests": sum(statuses.values()),
            "requests_per_s": round(sum(statuses.values()) / elapsed),
            "by_route": {f"{route} {status}": n for (route, status), n in sorted(statuses.items())},
            "server_errors_5xx": sum(load.server_errors().values()),
            "unanswered_requests": sum(load.errors.values()),
            "predictions_answered": len(answered),
            "predictions_logged": len(logged),
            "lost": len(answered - set(logged)),
            "logged_twice": len(logged) - len(set(logged)),
            "spooled_during_run": stats["spooled_total"],
            "log_drain_after_load_s": round(drain_s, 1),
            "versions_answered": dict(load.versions),
            "promotions": promotions,
            **rss_growth(sampler.samples, elapsed),
            "rss_bound_mib": round(rss_bound_mib, 1),
            "log_queue_peak": max((d for _, d in sampler.queue_depths), default=0),
            "log_queue_samples": sampler.queue_depths,
            "rss_samples": [(round(t, 1), round(k / 1024, 1)) for t, k in sampler.samples],
        }
        figures["checks"] = {
            "zero 5xx": figures["server_errors_5xx"] == 0 and figures["unanswered_requests"] == 0,
            "zero lost logs": figures["lost"] == 0 and figures["logged_twice"] == 0,
            "every version served": set(figures["versions_answered"]) == set(versions),
            "RSS growth within bound": figures["rss_growth_mib"] <= rss_bound_mib,
        }
        return figures
    finally:
        if api is not None:
            api.terminate()
        server.stop()


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seconds", type=float, default=120.0, help="how long the load runs (default 120)")
    p.add_argument("--threads", type=int, default=4, help="client threads (default 4)")
    p.add_argument("--batch-size", type=int, default=10, help="records per /predict/batch (default 10)")
    p.add_argument("--rss-bound-mib", type=float, help="allowed RSS growth (default 16 + queue size / 1024)")
    p.add_argument(
        "--api-env", action="append", default=[], metavar="KEY=VALUE", help="extra API setting (repeatable)"
    )
    p.add_argument("--json", type=Path, help="also write the figures to this file")
    add_jsonl_option(p, "--report")  # --report: its first name
    p.add_argument("--keep", action="store_true", help="keep the temp dir (server, API logs)")
    args = p.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="credit-risk-soak-"))
    api_env = dict(item.split("=", 1) for item in args.api_env)
    queue_size = int(api_env.get("PREDICTION_LOG_QUEUE_SIZE", QUEUE_SIZE_DEFAULT))
    rss_bound_mib = args.rss_bound_mib or 16 + queue_size / 1024
    figures = soak(args.seconds, args.threads, args.batch_size, workdir, rss_bound_mib, api_env)
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2))
    summary = {k: v for k, v in figures.items() if not k.endswith("_samples")}
    report_lines([{"bench": "soak", "args": vars(args)} | summary], args.jsonl)
    print(json.dumps(summary, indent=2))
    step = max(1, len(figures["rss_samples"]) // 20)
    print("API RSS over time (s, MiB):", figures["rss_samples"][::step])
    print("prediction-log queue over time (s, records):", figures["log_queue_samples"][::step])
    if not args.keep:
        import shutil

        shutil.rmtree(workdir, ignore_errors=True)
    else:
        log(f"kept {workdir}")
    failed = [name for name, ok in figures["checks"].items() if not ok]
    for name, ok in figures["checks"].items():
        print(f"{'ok  ' if ok else 'FAIL'} {name}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
