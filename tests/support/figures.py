"""Where a measured figure comes from: the date, the commit and how loaded the machine was.

The fault tests and the benches (`bench/soak.py`, `train_bench.py`, `api_bench.py`) write their
figures with `report_lines`, so that every JSON-lines report (docs/figures/*.jsonl) has one shape.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import subprocess
from collections.abc import Iterable
from pathlib import Path

from support import ROOT


def run_context() -> dict:
    """Date (UTC), commit (`+dirty` when src, tests or bench have changes), load average, CPU count."""

    def git(*args: str) -> str:
        try:
            return subprocess.run(
                ["git", *args], cwd=ROOT, capture_output=True, text=True, timeout=10
            ).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return ""

    commit = git("rev-parse", "--short", "HEAD") or "unknown"
    if git("status", "--porcelain", "--untracked-files=no", "--", "src", "tests", "bench"):
        commit += "+dirty"
    return {
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "commit": commit,
        "loadavg_1m": round(os.getloadavg()[0], 2),
        "cpus": os.cpu_count(),
    }


def report_lines(records: Iterable[dict], path: str | os.PathLike | None = None) -> list[str]:
    """Each record stamped with one `run_context()` as a JSON line; appended to `path` when given."""
    context = run_context()
    lines = [json.dumps(record | context, default=str) for record in records]
    if path and lines:
        with open(path, "a") as f:
            f.writelines(line + "\n" for line in lines)
    return lines


def add_jsonl_option(parser: argparse.ArgumentParser, *aliases: str) -> None:
    """The benches' `--jsonl FILE`: append one JSON line per summary (see `report_lines`)."""
    parser.add_argument(
        "--jsonl",
        *aliases,
        type=Path,
        metavar="FILE",
        help="append one JSON line per summary, with date, commit and machine load (docs/figures/)",
    )
