"""Loading every CSV variant, naming every validation problem, and the streamed fingerprint."""

from __future__ import annotations

import hashlib
import tracemalloc

import numpy as np
import pandas as pd
import pytest

from credit_risk.features import FEATURES, TARGET
from credit_risk.training.data import DataValidationError, fingerprint, load_dataset
from support.data import synthetic_frame, write_kaggle_csv

HEADER = (
    ",SeriousDlqin2yrs,RevolvingUtilizationOfUnsecuredLines,age,NumberOfTime30-59DaysPastDueNotWorse,"
    "DebtRatio,MonthlyIncome,NumberOfOpenCreditLinesAndLoans,NumberOfTimes90DaysLate,"
    "NumberRealEstateLoansOrLines,NumberOfTime60-89DaysPastDueNotWorse,NumberOfDependents"
)


def _frame(n: int = 200, seed: int = 1) -> pd.DataFrame:
    return synthetic_frame(n=n, seed=seed)


def _errors(path) -> list:
    with pytest.raises(DataValidationError) as info:
        load_dataset(path)
    return info.value.report.errors


def _one_error(path, column: str):
    found = [p for p in _errors(path) if p.column == column]
    assert len(found) == 1, found
    return found[0]


@pytest.mark.parametrize("id_column", ["", "Unnamed: 0", "id"])
@pytest.mark.parametrize("line_ending", ["\r\n", "\n"])
def test_loader_accepts_every_id_column_and_line_ending(tmp_path, id_column, line_ending):
    df = _frame()
    path = write_kaggle_csv(df, tmp_path / "f.csv", id_column=id_column, line_ending=line_ending)
    typed, report = load_dataset(path)
    assert list(typed.columns) == [TARGET, *FEATURES]
    assert report.ok and report.rows == len(df)
    np.testing.assert_array_equal(typed[list(FEATURES)].to_numpy(), df[list(FEATURES)].to_numpy())
    assert report.target_rate == pytest.approx(df[TARGET].mean())


def test_loader_maps_hyphenated_names_to_api_names(tmp_path):
    path = write_kaggle_csv(_frame(), tmp_path / "f.csv")
    assert "NumberOfTime30-59DaysPastDueNotWorse" in path.read_text().splitlines()[0]
    typed, _ = load_dataset(path)
    assert "NumberOfTime30_59DaysPastDueNotWorse" in typed.columns
    assert "NumberOfTime60_89DaysPastDueNotWorse" in typed.columns


def _rows_text(rows: list[str], line_ending: str = "\r\n") -> str:
    # 20 ordinary rows of each class so the file passes the "enough rows per class" check.
    filler = [f"{i},{i % 2},0.5,40,0,0.3,5000,5,0,1,0,1" for i in range(100, 140)]
    return line_ending.join([HEADER, *rows, *filler]) + line_ending


def test_na_and_empty_cells_are_both_missing(tmp_path):
    path = tmp_path / "f.csv"
    path.write_text(_rows_text(["1,0,0.5,40,0,0.3,NA,5,0,1,0,", "2,1,0.5,40,0,0.3,,5,0,1,0,NA"]))
    typed, report = load_dataset(path)
    assert typed["MonthlyIncome"].iloc[:2].isna().all()
    assert typed["NumberOfDependents"].iloc[:2].isna().all()
    income = next(w for w in report.warnings if w.column == "MonthlyIncome")
    assert (income.count, income.example_line) == (2, 2)


def test_scientific_notation_is_read_as_a_number(tmp_path):
    path = tmp_path / "f.csv"
    path.write_text(_rows_text(["1,0,7.96E-05,40,0,1.5e+3,5000,5,0,1,0,1"]))
    typed, _ = load_dataset(path)
    assert typed["RevolvingUtilizationOfUnsecuredLines"].iloc[0] == pytest.approx(7.96e-05)
    assert typed["DebtRatio"].iloc[0] == 1500.0


def test_utf8_byte_order_mark_is_ignored(tmp_path):
    path = tmp_path / "f.csv"
    path.write_bytes(b"\xef\xbb\xbf" + _rows_text(["1,0,0.5,40,0,0.3,5000,5,0,1,0,1"]).encode())
    typed, report = load_dataset(path)
    assert report.ok and list(typed.columns) == [TARGET, *FEATURES]


def test_quoted_fields_are_unquoted(tmp_path):
    path = tmp_path / "f.csv"
    quoted = HEADER.replace("age", '"age"')
    text = _rows_text(['"1","1","0.5","40","0","0.3","5000","5","0","1","0","1"']).replace(HEADER, quoted)
    path.write_text(text)
    typed, _ = load_dataset(path)
    assert typed[TARGET].iloc[0] == 1 and typed["age"].iloc[0] == 40.0


def test_validation_names_missing_required_column(tmp_path):
    path = write_kaggle_csv(_frame().drop(columns=["DebtRatio"]), tmp_path / "f.csv")
    problem = _one_error(path, "DebtRatio")
    assert "missing" in problem.message


def test_validation_names_column_count_and_line_of_text_values(tmp_path):
    df = _frame().astype({"age": object})
    df.loc[[5, 9, 30], "age"] = "forty"
    problem = _one_error(write_kaggle_csv(df, tmp_path / "f.csv"), "age")
    # Row 5 is the file's 7th line: the header is line 1.
    assert (problem.count, problem.example_line) == (3, 7)
    assert "not a number" in problem.message and "forty" in problem.message


def test_validation_rejects_target_other_than_0_or_1(tmp_path):
    df = _frame()
    df.loc[[12, 40], TARGET] = 2
    problem = _one_error(write_kaggle_csv(df, tmp_path / "f.csv"), TARGET)
    assert (problem.count, problem.example_line) == (2, 14)


def test_validation_rejects_missing_value_outside_the_nullable_columns(tmp_path):
    df = _frame()
    df.loc[[3], "DebtRatio"] = np.nan
    problem = _one_error(write_kaggle_csv(df, tmp_path / "f.csv"), "DebtRatio")
    assert (problem.count, problem.example_line) == (1, 5)
    assert "missing" in problem.message


def test_validation_rejects_missing_target(tmp_path):
    df = _frame()
    df[TARGET] = df[TARGET].astype(float)
    df.loc[[0, 1], TARGET] = np.nan
    problem = _one_error(write_kaggle_csv(df, tmp_path / "f.csv"), TARGET)
    assert (problem.count, problem.example_line) == (2, 2)


@pytest.mark.parametrize("column", ["MonthlyIncome", "NumberOfTimes90DaysLate", "DebtRatio"])
def test_validation_rejects_negative_values(tmp_path, column):
    df = _frame()
    df.loc[[20, 21, 22, 23], column] = -1.0
    problem = _one_error(write_kaggle_csv(df, tmp_path / "f.csv"), column)
    assert (problem.count, problem.example_line) == (4, 22)
    assert "negative" in problem.message


@pytest.mark.parametrize("age", [-3.0, 121.0, 150.0])
def test_validation_rejects_age_outside_0_to_120(tmp_path, age):
    df = _frame()
    df.loc[[50], "age"] = age
    problem = _one_error(write_kaggle_csv(df, tmp_path / "f.csv"), "age")
    assert (problem.count, problem.example_line) == (1, 52)


def test_validation_rejects_repeated_column(tmp_path):
    path = tmp_path / "f.csv"
    path.write_text(_rows_text(["1,0,0.5,40,0,0.3,5000,5,0,1,0,1"]).replace("DebtRatio", "age", 1))
    columns = {p.column for p in _errors(path)}
    assert "age" in columns and "DebtRatio" in columns


def test_validation_rejects_a_single_class_target(tmp_path):
    df = _frame()
    df[TARGET] = 0
    assert "each class" in _one_error(write_kaggle_csv(df, tmp_path / "f.csv"), TARGET).message


@pytest.mark.parametrize(
    ("content", "expected"),
    [(b"", "empty"), (HEADER.encode() + b"\r\n", "no data rows"), (b"\xff\xfe\x00garbage", "readable")],
)
def test_validation_rejects_unusable_files(tmp_path, content, expected):
    path = tmp_path / "f.csv"
    path.write_bytes(content)
    assert expected in str(_errors(path))


def test_validation_rejects_a_missing_file(tmp_path):
    assert "cannot be read" in _one_error(tmp_path / "absent.csv", "<file>").message


def test_validation_reports_every_problem_at_once(tmp_path):
    df = _frame()
    df.loc[[7], "MonthlyIncome"] = -5.0
    df.loc[[8], "age"] = 200.0
    df.loc[[9], "NumberRealEstateLoansOrLines"] = -1.0
    with pytest.raises(DataValidationError) as info:
        load_dataset(write_kaggle_csv(df, tmp_path / "f.csv"))
    text = str(info.value)
    for column, line in [("MonthlyIncome", 9), ("age", 10), ("NumberRealEstateLoansOrLines", 11)]:
        assert f"{column}: 1 row(s)" in text and f"line {line}" in text


def test_known_oddities_of_the_real_file_are_warnings_not_errors(tmp_path):
    df = _frame()
    df.loc[[4], "age"] = 0.0
    df.loc[[6, 7], ["NumberOfTime30_59DaysPastDueNotWorse", "NumberOfTimes90DaysLate"]] = [[98.0, 96.0]] * 2
    typed, report = load_dataset(write_kaggle_csv(df, tmp_path / "f.csv"))
    warned = {w.column: w for w in report.warnings}
    assert warned["age"].count == 1 and warned["age"].example_line == 6
    assert warned["NumberOfTimes90DaysLate"].count == 2
    assert typed["NumberOfTimes90DaysLate"].iloc[6] == 96.0  # kept raw; the model's transformer handles it


def test_fingerprint_is_the_sha256_of_the_exact_bytes(tmp_path):
    path = write_kaggle_csv(_frame(), tmp_path / "f.csv")
    assert fingerprint(path) == hashlib.sha256(path.read_bytes()).hexdigest()
    # The same rows with other line endings are another file, with another fingerprint.
    lf = write_kaggle_csv(_frame(), tmp_path / "lf.csv", line_ending="\n")
    assert fingerprint(lf) != fingerprint(path)


def test_fingerprint_reads_in_constant_memory(tmp_path):
    path = tmp_path / "big.csv"
    size = 32 * 1024 * 1024
    with open(path, "wb") as f:
        block = np.random.default_rng(0).bytes(1024 * 1024)
        for _ in range(size // len(block)):
            f.write(block)
    tracemalloc.start()
    try:
        digest = fingerprint(path)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert digest == hashlib.sha256(path.read_bytes()).hexdigest()
    assert peak < 4 * 1024 * 1024, f"peak {peak} bytes while hashing a {size}-byte file"
