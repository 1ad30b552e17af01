"""Render the fault figures of a FAULTS_REPORT file (JSON lines) as the Markdown table in docs/benchmarks.md.

    FAULTS_REPORT=$PWD/docs/figures/faults.jsonl make test
    python bench/faults_table.py docs/figures/faults.jsonl

One row per fault, each figure by the name the test gave it; the run's date, commit and load
average come from the lines themselves.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

CONTEXT = ("date", "commit", "loadavg_1m", "cpus")


def _value(v) -> str:
    if isinstance(v, int):
        return f"{v:,}"
    if isinstance(v, dict | list):
        return "`" + json.dumps(v)[:160] + "`"
    return str(v)


def table(lines: list[dict]) -> str:
    """The Markdown table, and a line naming the run(s) it came from."""
    rows = ["| fault | measured | load (1 min) |", "| --- | --- | ---: |"]
    for line in lines:
        figures = "; ".join(
            f"{k.replace('_', ' ')} {_value(v)}" for k, v in line.items() if k != "fault" and k not in CONTEXT
        )
        rows.append(f"| {line['fault']} | {figures} | {line.get('loadavg_1m', '?')} |")
    dates = sorted({line.get("date", "?")[:16] for line in lines})
    commits = sorted({line.get("commit", "?") for line in lines})
    cpus = sorted({str(line.get("cpus", "?")) for line in lines})
    source = (
        f"From {len(lines)} lines, {dates[0]} to {dates[-1]} UTC, "
        f"commit {', '.join(commits)}, {'/'.join(cpus)} CPUs."
    )
    return "\n".join(rows) + "\n\n" + source


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("report", type=Path)
    args = p.parse_args()
    lines = [json.loads(t) for t in args.report.read_text().splitlines() if t.strip()]
    print(table(lines))


if __name__ == "__main__":
    main()
