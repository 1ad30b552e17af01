"""Where a measured figure comes from: the date, the commit and how loaded the machine was."""

from __future__ import annotations

import datetime
import os
import subprocess

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
