"""Benchmark the trainer on the real file: wall time, time per stage, peak memory, test AUC.

Starts a fresh local `mlflow server` (SQLite, temp dir), then runs `python -m credit_risk.train`
twice as a subprocess: first into an empty registry, then again so the gate has a champion to
load and score. Peak RSS is the trainer process's own (credit_risk.devtools.peak_rss), not the server's.

    python bench/train_bench.py [--csv data/cs-training.csv] [--threads N] [--jsonl FILE]

Bar: whole run < 60 s, peak RSS < 2 GB, test AUC >= 0.86. Exits 1 if a bar is missed.
--jsonl appends three JSON lines (each trainer run, then the bars) with date, commit and load.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from mlflow.tracking import MlflowClient

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "src"), str(ROOT / "tests")]

from credit_risk.devtools.peak_rss import run as peak_rss_of  # noqa: E402
from credit_risk.devtools.tracking_server import server_env, start_tracking_server  # noqa: E402
from support.figures import add_jsonl_option, report_lines  # noqa: E402

MAX_SECONDS, MAX_RSS_MB, MIN_AUC = 60.0, 2048.0, 0.86
STAGE = re.compile(r"stage (?P<name>.+?)\s+(?P<seconds>[\d.]+)s$")
RESULT = re.compile(r"run (?P<run_id>[0-9a-f]{32}): \S+ version (?P<version>\d+) (?P<decision>\w+)")


def run_trainer(csv: Path, tracking_uri: str, log_path: Path, threads: int | None) -> dict:
    """One trainer run: wall time, peak RSS (MB), stage times, and the run id from its last line."""
    with open(log_path, "w") as log:
        start = time.perf_counter()
        returncode, peak_rss = peak_rss_of(
            [sys.executable, "-m", "credit_risk.train", "--csv", str(csv)],
            env=server_env(
                {"MLFLOW_TRACKING_URI": tracking_uri} | ({"TRAIN_THREADS": str(threads)} if threads else {})
            ),
            stdout=subprocess.DEVNULL,
            stderr=log,
        )
        wall = time.perf_counter() - start
    text = log_path.read_text()
    if returncode != 0:
        sys.exit(f"trainer exited with {returncode}:\n{text[-3000:]}")
    stages = {m["name"]: float(m["seconds"]) for line in text.splitlines() if (m := STAGE.search(line))}
    result = RESULT.search(text)
    return {"wall": wall, "rss_mb": peak_rss / 2**20, "stages": stages, **result.groupdict()}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--csv", type=Path, default=ROOT / "data" / "cs-training.csv")
    parser.add_argument("--threads", type=int, help="TRAIN_THREADS for the trainer (default: its own)")
    add_jsonl_option(parser)
    args = parser.parse_args()
    if not args.csv.exists():
        sys.exit(f"{args.csv} is missing: run `make data` first")

    with tempfile.TemporaryDirectory(prefix="train-bench-") as tmp:
        root = Path(tmp)
        server = start_tracking_server(
            f"sqlite:///{root / 'mlflow.db'}", str(root / "artifacts"), root / "server.log"
        )
        try:
            runs = [run_trainer(args.csv, server.url, root / f"train-{i}.log", args.threads) for i in (1, 2)]
            client = MlflowClient(server.url)
            for r in runs:
                r["metrics"] = client.get_run(r["run_id"]).data.metrics
        finally:
            server.stop()

    threads = args.threads or "default"
    print(f"trainer on {args.csv.name}, {os.cpu_count()} cores, threads {threads}, fresh mlflow server\n")
    print(f"{'run':<28}{'wall s':>8}{'peak RSS MB':>13}{'test AUC':>10}  decision")
    labels = ("1: empty registry", "2: champion in Production")
    for label, r in zip(labels, runs, strict=True):
        auc = r["metrics"]["roc_auc"]
        print(
            f"{label:<28}{r['wall']:>8.1f}{r['rss_mb']:>13.0f}{auc:>10.4f}  {r['decision']} (v{r['version']})"
        )
    print(f"\n{'stage':<20}{'run 1 s':>9}{'run 2 s':>9}")
    for name in runs[0]["stages"]:
        print(f"{name:<20}{runs[0]['stages'][name]:>9.2f}{runs[1]['stages'].get(name, float('nan')):>9.2f}")
    print("(the rest of the wall time is interpreter start-up and imports)")

    worst_wall = max(r["wall"] for r in runs)
    worst_rss = max(r["rss_mb"] for r in runs)
    auc = runs[0]["metrics"]["roc_auc"]
    checks = [
        (f"wall time {worst_wall:.1f} s < {MAX_SECONDS:.0f} s", worst_wall < MAX_SECONDS),
        (f"peak RSS {worst_rss:.0f} MB < {MAX_RSS_MB:.0f} MB", worst_rss < MAX_RSS_MB),
        (f"test AUC {auc:.4f} >= {MIN_AUC}", auc >= MIN_AUC),
    ]
    print()
    for text, ok in checks:
        print(f"{'PASS' if ok else 'FAIL'}  {text}")
    summaries = [
        {
            "summary": label,
            "wall_s": round(r["wall"], 2),
            "peak_rss_mb": round(r["rss_mb"]),
            "test_auc": r["metrics"]["roc_auc"],
            "decision": r["decision"],
            "version": r["version"],
            "stages_s": r["stages"],
        }
        for label, r in zip(labels, runs, strict=True)
    ]
    summaries.append({"summary": "bars", "checks": {text: ok for text, ok in checks}})
    report_lines(({"bench": "train", "args": vars(args)} | s for s in summaries), args.jsonl)
    return 0 if all(ok for _, ok in checks) else 1


if __name__ == "__main__":
    sys.exit(main())
