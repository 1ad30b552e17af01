"""Broken and hostile training files through the real CLI: a clear message, exit 2, nothing registered.

Every case runs `python -m credit_risk.train --csv ...` as a subprocess against the real
`mlflow server` fixture. The bad files run two at a time (each process spends ~4 s importing
MLflow and scikit-learn, the validation itself takes milliseconds).
"""

from __future__ import annotations

import csv
import os
import subprocess
import sys
import time
import tracemalloc
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from mlflow.tracking import MlflowClient

from credit_risk.devtools.peak_rss import run as peak_rss_of
from credit_risk.devtools.tracking_server import server_env
from credit_risk.features import TARGET
from credit_risk.training.cli import EXIT_BAD_DATA, EXIT_OK
from credit_risk.training.data import MAX_LINE_BYTES, DataValidationError, check_line_lengths, load_dataset
from support.data import API_TO_CSV, synthetic_frame, write_kaggle_csv

pytestmark = pytest.mark.integration

GIB = 1024**3
# Written for real at the start of the garbage file; the rest of the gigabyte is a sparse hole
# (NUL bytes), so the first "line" runs for the whole file without a line break.
GARBAGE_PREFIX_BYTES = 16 * 1024 * 1024


def _cli(csv_path: Path, tracking_uri: str, name: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "credit_risk.train",
        "--csv",
        str(csv_path),
        "--model-name",
        name,
        "--experiment",
        name,
        "--wait-seconds",
        "20",
    ]


def run_cli(
    csv_path: Path, tracking_uri: str, name: str, timeout: float = 300
) -> subprocess.CompletedProcess:
    """`python -m credit_risk.train` as the trainer image runs it."""
    return subprocess.run(
        _cli(csv_path, tracking_uri, name),
        env=server_env({"MLFLOW_TRACKING_URI": tracking_uri}),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def _frame(n: int = 300) -> pd.DataFrame:
    return synthetic_frame(n, seed=11)


def _kaggle_text(df: pd.DataFrame, path: Path) -> str:
    return write_kaggle_csv(df, path).read_text()


def _with_text_age(df: pd.DataFrame) -> pd.DataFrame:
    df = df.astype({"age": object})
    df.loc[4, "age"] = "forty"
    return df


def _with(df: pd.DataFrame, row: int, column: str, value) -> pd.DataFrame:
    df = df.copy()
    df.loc[row, column] = value
    return df


def _duplicate_age_column(path: Path) -> None:
    lines = _kaggle_text(_frame(), path).splitlines()
    path.write_text("\r\n".join([lines[0] + ",age", *(line + ",40" for line in lines[1:])]) + "\r\n")


def _semicolons(path: Path) -> None:
    df = _frame().rename(columns=API_TO_CSV)
    df.to_csv(path, sep=";", index=False, na_rep="NA")


def _random_bytes(path: Path) -> None:
    path.write_bytes(np.random.default_rng(0).bytes(1024 * 1024))


# case -> (how to write the file, what stderr must say)
BROKEN: dict[str, tuple[Callable[[Path], None], str]] = {
    "empty_file": (lambda p: p.write_bytes(b""), "<file>: the file is empty"),
    "header_only": (
        lambda p: p.write_text(_kaggle_text(_frame(), p).splitlines()[0] + "\r\n"),
        "<file>: the file has a header but no data rows",
    ),
    "missing_target": (
        lambda p: write_kaggle_csv(_frame().drop(columns=[TARGET]), p),
        f"{TARGET}: required column is missing from the header (line 1)",
    ),
    "target_of_2": (
        lambda p: write_kaggle_csv(_with(_frame(), 7, TARGET, 2), p),
        f"{TARGET}: 1 row(s): target must be 0 or 1 (e.g. line 9)",
    ),
    "text_in_numeric_column": (
        lambda p: write_kaggle_csv(_with_text_age(_frame()), p),
        "age: 1 row(s): not a number (e.g. 'forty') (e.g. line 6)",
    ),
    "negative_count": (
        lambda p: write_kaggle_csv(_with(_frame(), 20, "NumberOfOpenCreditLinesAndLoans", -3.0), p),
        "NumberOfOpenCreditLinesAndLoans: 1 row(s): negative value (e.g. line 22)",
    ),
    "all_na_column": (
        lambda p: write_kaggle_csv(_with(_frame(), slice(None), "MonthlyIncome", np.nan), p),
        "MonthlyIncome: 300 row(s): every value is missing",
    ),
    "duplicate_header": (_duplicate_age_column, "age: the column appears more than once in the header"),
    "semicolon_delimiter": (
        _semicolons,
        "<file>: columns are separated by ';'; the file must be comma-separated",
    ),
    "random_bytes": (_random_bytes, "<file>: not a readable CSV: the first line is not UTF-8 text"),
}


def assert_nothing_registered(tracking_uri: str, name: str) -> None:
    client = MlflowClient(tracking_uri)
    assert client.search_registered_models(f"name='{name}'") == []
    assert client.search_model_versions(f"name='{name}'") == []
    # Validation comes before the tracking server is contacted: not even an experiment.
    assert client.get_experiment_by_name(name) is None


@pytest.fixture(scope="module")
def broken_runs(mlflow_server, tmp_path_factory) -> dict[str, tuple[str, subprocess.CompletedProcess]]:
    """Every broken file through the CLI, two processes at a time (2 cores): case -> (model name, result)."""
    root = tmp_path_factory.mktemp("broken")
    jobs = {}
    for case, (write, _) in BROKEN.items():
        path = root / f"{case}.csv"
        write(path)
        jobs[case] = (path, f"hostile-{case}-{uuid.uuid4().hex[:6]}")
    with ThreadPoolExecutor(max_workers=2) as pool:
        futures = {
            case: pool.submit(run_cli, path, mlflow_server.url, name) for case, (path, name) in jobs.items()
        }
        return {case: (jobs[case][1], f.result()) for case, f in futures.items()}


@pytest.mark.parametrize("case", list(BROKEN))
def test_broken_csv_exits_2_with_a_clear_message_and_registers_nothing(broken_runs, mlflow_server, case):
    name, proc = broken_runs[case]
    expected = BROKEN[case][1]
    assert proc.returncode == EXIT_BAD_DATA, proc.stderr[-3000:]
    assert expected in proc.stderr, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr
    assert_nothing_registered(mlflow_server.url, name)


# shape -> (what comes before the garbage, what stderr must say)
GARBAGE = {
    "no_line_break_at_all": (
        lambda _: b"",
        f"<file>: not a CSV header: the first line is longer than {MAX_LINE_BYTES} bytes",
    ),
    "after_a_valid_header_and_rows": (
        lambda p: "\r\n".join(_kaggle_text(_frame(20), p).splitlines()[:4]).encode() + b"\r\n",
        f"<file>: line 5 is longer than {MAX_LINE_BYTES} bytes: not a CSV row",
    ),
}


@pytest.fixture(params=list(GARBAGE))
def garbage_gigabyte(request, tmp_path) -> tuple[Path, str]:
    """1 GiB: a prefix, 16 MiB of printable garbage, then a sparse hole; the garbage never ends its line."""
    write_prefix, expected = GARBAGE[request.param]
    path = tmp_path / "garbage.csv"
    prefix = write_prefix(path)
    with open(path, "wb") as f:
        f.write(prefix + np.random.default_rng(1).bytes(GARBAGE_PREFIX_BYTES // 2).hex().encode())
    os.truncate(path, GIB)
    yield path, expected
    path.unlink()


def test_gigabyte_of_garbage_is_refused_in_bounded_time_and_memory(garbage_gigabyte, mlflow_server):
    path, expected = garbage_gigabyte
    name = f"hostile-garbage-{uuid.uuid4().hex[:6]}"
    log = path.with_suffix(".log")
    start = time.monotonic()
    # Through a small launcher: a child's own wait4 figure would include this pytest process's
    # peak (see credit_risk.devtools.peak_rss), which a full run grows past a gigabyte.
    with open(log, "wb") as out:
        returncode, peak_rss = peak_rss_of(
            _cli(path, mlflow_server.url, name),
            env=server_env({"MLFLOW_TRACKING_URI": mlflow_server.url}),
            stdout=out,
            stderr=out,
        )
    wall = time.monotonic() - start
    stderr = log.read_text(errors="replace")
    print(f"1 GiB garbage: trainer exit {returncode} in {wall:.2f}s, peak RSS {peak_rss / 2**20:.0f} MiB")
    assert returncode == EXIT_BAD_DATA, stderr[-3000:]
    assert expected in stderr, stderr[-3000:]
    assert "Traceback" not in stderr
    # pandas took 3.3 GB and 9 s on the first shape, 2.3 GB on the second; the whole trainer
    # process, imports included, stays far below a gigabyte.
    assert peak_rss < GIB, f"peak RSS {peak_rss / 2**20:.0f} MiB"
    assert wall < 60, f"took {wall:.0f}s"
    assert_nothing_registered(mlflow_server.url, name)


def test_pre_checks_refuse_a_gigabyte_of_garbage_reading_only_its_start(garbage_gigabyte):
    path, expected = garbage_gigabyte
    tracemalloc.start()
    start = time.perf_counter()
    try:
        with pytest.raises(DataValidationError) as info:
            load_dataset(path)
        elapsed = time.perf_counter() - start
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    print(f"pre-checks on 1 GiB of garbage: {elapsed * 1000:.1f} ms, peak {peak / 1024:.0f} KiB")
    assert expected in str(info.value)
    assert peak < 4 * 1024 * 1024, f"peak {peak} bytes"
    assert elapsed < 1.0, f"took {elapsed:.2f}s"


def test_line_check_reads_a_valid_file_in_constant_memory(tmp_path):
    path = write_kaggle_csv(_frame(20_000), tmp_path / "f.csv")
    tracemalloc.start()
    try:
        check_line_lengths(path)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert path.stat().st_size > 1024 * 1024 and peak < 4 * 1024 * 1024, peak


def test_valid_file_many_times_the_real_size_is_not_refused_by_a_size_cap(tmp_path):
    # ~3x the rows of the real file (150,000): the header check must not be a size limit.
    block = _frame(5000)
    path = write_kaggle_csv(block, tmp_path / "big.csv")
    rows = path.read_bytes().split(b"\r\n", 1)[1]
    repeats = 90
    with open(path, "ab") as f:
        for _ in range(repeats - 1):
            f.write(rows)
    typed, report = load_dataset(path)
    assert report.ok and report.rows == len(typed) == repeats * len(block)
    assert path.stat().st_size > 20 * 1024 * 1024


def test_valid_file_with_bom_quoted_fields_and_crlf_trains(tmp_path, mlflow_server):
    # Excel's "CSV UTF-8" export: a byte-order mark, every field quoted, CRLF line endings.
    df = synthetic_frame(1500, seed=12).rename(columns=API_TO_CSV)
    df.insert(0, "", range(1, len(df) + 1))
    path = tmp_path / "excel.csv"
    df.to_csv(
        path, index=False, na_rep="NA", encoding="utf-8-sig", quoting=csv.QUOTE_ALL, lineterminator="\r\n"
    )
    raw = path.read_bytes()
    assert raw.startswith(b'\xef\xbb\xbf"","SeriousDlqin2yrs"') and b'"\r\n"' in raw
    name = f"hostile-excel-{uuid.uuid4().hex[:6]}"
    proc = run_cli(path, mlflow_server.url, name)
    assert proc.returncode == EXIT_OK, proc.stderr[-3000:]
    (mv,) = MlflowClient(mlflow_server.url).search_model_versions(f"name='{name}'")
    params = MlflowClient(mlflow_server.url).get_run(mv.run_id).data.params
    assert int(params["dataset_rows"]) == 1500
