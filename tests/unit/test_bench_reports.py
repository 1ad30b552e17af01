"""The benches' `--jsonl` reports: one writer (support.figures.report_lines), one line per summary."""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
from pathlib import Path

import pytest

from support import ROOT
from support.figures import add_jsonl_option, report_lines

CONTEXT = {"date", "commit", "loadavg_1m", "cpus"}


def _bench(name: str, monkeypatch):
    """Import bench/<name>.py as a module (bench/ is scripts, not a package), undone after the test."""
    spec = importlib.util.spec_from_file_location(f"bench_{name}", ROOT / "bench" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setattr(sys, "path", list(sys.path))  # the script puts src/ and tests/ first
    monkeypatch.setitem(sys.modules, spec.name, module)  # its dataclasses look themselves up there
    spec.loader.exec_module(module)
    return module


def test_report_lines_appends_one_stamped_line_per_record(tmp_path):
    path = tmp_path / "figures.jsonl"
    path.write_text('{"earlier": 1}\n')
    lines = report_lines([{"bench": "x", "n": 1}, {"bench": "x", "n": 2, "where": Path("data/x.csv")}], path)
    written = [json.loads(line) for line in path.read_text().splitlines()]
    assert written[0] == {"earlier": 1}  # appended, never overwritten
    assert written[1:] == [json.loads(line) for line in lines]
    assert [w["n"] for w in written[1:]] == [1, 2] and written[2]["where"] == "data/x.csv"
    assert all(w.keys() >= CONTEXT for w in written[1:])
    # One run, one context: every line of a call carries the same date and commit.
    assert len({(w["date"], w["commit"]) for w in written[1:]}) == 1


def test_report_lines_without_a_path_writes_nothing(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (line,) = report_lines([{"fault": "f", "lost": 0}], None)
    assert json.loads(line)["lost"] == 0 and list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("bench", ["train_bench", "api_bench", "soak"])
def test_every_bench_writes_its_report_with_the_shared_writer(bench):
    text = (ROOT / "bench" / f"{bench}.py").read_text()
    assert "add_jsonl_option(" in text and "report_lines(" in text


def test_soak_still_takes_its_old_report_option(tmp_path):
    parser = argparse.ArgumentParser()
    add_jsonl_option(parser, "--report")
    assert parser.parse_args(["--report", str(tmp_path / "a")]).jsonl == tmp_path / "a"
    assert parser.parse_args([]).jsonl is None


def test_api_bench_summaries_are_the_printed_medians_and_ratios(tmp_path, monkeypatch):
    api_bench = _bench("api_bench", monkeypatch)

    def target(name: str, rps: list[float]):
        rounds = [
            {"rps": r, "p50": 10.0 + i, "p99": 30.0 + i, "failed": i, "cpu_target": 1.0, "cpu_tracking": 0.5}
            for i, r in enumerate(rps)
        ]
        return api_bench.Target(name, "http://x/predict", tmp_path / "body.json", None, rounds)

    on = target("ours, logging on", [900.0, 1000.0, 1100.0])
    off = target("ours, logging off", [1000.0, 1000.0, 1000.0])
    summary = api_bench.target_summary(on)
    assert (summary["rps"], summary["p50"], summary["p99"], summary["failed"]) == (1000.0, 11.0, 31.0, 3)
    ratio = api_bench.throughput_ratio(on, off)
    assert ratio["per_round"] == [0.9, 1.0, 1.1] and ratio["median"] == 1.0
    path = tmp_path / "api.jsonl"
    report_lines(({"bench": "api"} | s for s in (summary, ratio)), path)
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    assert [x["summary"] for x in lines] == ["single-row predict", "throughput ratio"]
    assert lines[0]["target"] == "ours, logging on" and len(lines[0]["rounds"]) == 3
