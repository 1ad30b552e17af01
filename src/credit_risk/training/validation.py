"""The data contract's checks: what is wrong with a frame, where, and how often."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from credit_risk.features import (
    AGE_RANGE,
    COUNT_COLUMNS,
    FEATURES,
    NULLABLE,
    PAST_DUE,
    PAST_DUE_CODES,
    TARGET,
)

REQUIRED = (TARGET, *FEATURES)
NON_NEGATIVE = (*COUNT_COLUMNS, "MonthlyIncome", "DebtRatio", "RevolvingUtilizationOfUnsecuredLines")
# A data line's number in the file: line 1 is the header.
_FIRST_DATA_LINE = 2
# Each class needs this many rows for a stratified split and a meaningful AUC.
MIN_CLASS_ROWS = 10


@dataclass(frozen=True)
class Problem:
    """One finding of the validation: what is wrong, where, and how often."""

    column: str
    message: str
    count: int = 0
    example_line: int | None = None

    def __str__(self) -> str:
        where = f" (e.g. line {self.example_line})" if self.example_line is not None else ""
        rows = f"{self.count} row(s): " if self.count else ""
        return f"{self.column}: {rows}{self.message}{where}"


@dataclass
class ValidationReport:
    """What the validation found; logged to the MLflow run as JSON."""

    path: str
    rows: int = 0
    target_rate: float | None = None
    errors: list[Problem] = field(default_factory=list)
    warnings: list[Problem] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.errors

    def to_dict(self) -> dict:
        return {
            "path": self.path,
            "rows": self.rows,
            "target_rate": self.target_rate,
            "ok": self.ok,
            "errors": [asdict(p) | {"text": str(p)} for p in self.errors],
            "warnings": [asdict(p) | {"text": str(p)} for p in self.warnings],
        }


class DataValidationError(Exception):
    """The CSV cannot be trained on; the report names every problem."""

    def __init__(self, report: ValidationReport):
        self.report = report
        lines = "\n".join(f"  - {p}" for p in report.errors)
        super().__init__(f"{report.path} failed validation with {len(report.errors)} error(s):\n{lines}")


def _example_line(mask: pd.Series) -> int:
    return int(np.flatnonzero(mask.to_numpy())[0]) + _FIRST_DATA_LINE


def _problem(column: str, mask: pd.Series, message: str) -> Problem | None:
    count = int(mask.sum())
    if not count:
        return None
    return Problem(column, message, count, _example_line(mask))


def file_error(path: str | Path, message: str) -> DataValidationError:
    """A DataValidationError for a problem with the file as a whole."""
    return DataValidationError(ValidationReport(str(path), errors=[Problem("<file>", message)]))


def validate(df: pd.DataFrame, path: str = "<data>") -> tuple[pd.DataFrame, ValidationReport]:
    """Check the contract; return the typed frame (target + FEATURES) and the report.

    Each stage adds its findings to the report; a stage runs only if the ones before it found
    no error, since it relies on what they checked (the columns exist, the values are numbers).
    """
    report = ValidationReport(path, rows=len(df))
    _check_columns(df, report)
    if report.errors:
        return df, report
    typed = _to_numbers(df, report)
    _check_missing(df, typed, report)
    _check_ranges(typed, report)
    if report.errors:
        return typed, report
    _note_oddities(typed, report)
    _check_classes(typed, report)
    report.target_rate = float(typed[TARGET].mean())
    typed[TARGET] = typed[TARGET].astype(np.int8)
    return typed, report


def _add(findings: list[Problem], problem: Problem | None) -> None:
    if problem is not None:
        findings.append(problem)


def _check_columns(df: pd.DataFrame, report: ValidationReport) -> None:
    """Every required column once; unknown columns are a warning; at least one row."""
    header = [str(c) for c in df.columns]
    for name in sorted({c.split(".")[0] for c in header if c.split(".")[0] in REQUIRED}):
        # pandas renames a repeated header "x" to "x.1"
        if f"{name}.1" in header:
            report.errors.append(Problem(name, "the column appears more than once in the header"))
    for c in REQUIRED:
        if c not in df.columns:
            report.errors.append(Problem(c, "required column is missing"))
    extra = [c for c in header if c not in REQUIRED and c.split(".")[0] not in REQUIRED]
    if extra:
        report.warnings.append(Problem(", ".join(extra), "unknown column(s) ignored"))
    if len(df) == 0:
        report.errors.append(Problem("<file>", "the file has a header but no data rows"))


def _to_numbers(df: pd.DataFrame, report: ValidationReport) -> pd.DataFrame:
    """The required columns as float64; text that is not a number and infinities are errors."""
    typed = pd.DataFrame(index=df.index)
    for c in REQUIRED:
        raw = df[c]
        # pandas 3 reads text as its `str` dtype, not object: anything non-numeric is coerced here
        numeric = pd.api.types.is_numeric_dtype(raw) and not pd.api.types.is_bool_dtype(raw)
        values = raw.astype(float) if numeric else pd.to_numeric(raw, errors="coerce")
        bad_text = values.isna() & raw.notna()
        if bad_text.any():
            report.errors.append(_problem(c, bad_text, f"not a number (e.g. {raw[bad_text].iloc[0]!r})"))
        if np.isinf(values).any():
            report.errors.append(_problem(c, pd.Series(np.isinf(values), index=df.index), "infinite value"))
        typed[c] = values.astype(np.float64)
    return typed


def _check_missing(df: pd.DataFrame, typed: pd.DataFrame, report: ValidationReport) -> None:
    """Missing values: a warning in the nullable columns (unless all are missing), else an error."""
    for c in REQUIRED:
        nan = typed[c].isna() & df[c].isna()
        if c in NULLABLE:
            if nan.all():
                report.errors.append(_problem(c, nan, "every value is missing"))
            elif nan.any():
                report.warnings.append(_problem(c, nan, "missing (handled by the model)"))
        else:
            _add(report.errors, _problem(c, nan, "missing value in a required column"))


def _check_ranges(typed: pd.DataFrame, report: ValidationReport) -> None:
    """The target is 0/1, counts and amounts are not negative, age is within AGE_RANGE."""
    target = typed[TARGET]
    _add(report.errors, _problem(TARGET, target.notna() & ~target.isin([0, 1]), "target must be 0 or 1"))
    for c in NON_NEGATIVE:
        _add(report.errors, _problem(c, typed[c] < 0, "negative value"))
    lo, hi = AGE_RANGE
    age = typed["age"]
    _add(report.errors, _problem("age", (age < lo) | (age > hi), f"age outside {lo}-{hi}"))


def _note_oddities(typed: pd.DataFrame, report: ValidationReport) -> None:
    """Oddities the real file does contain: reported as warnings, then handled by the model."""
    warn = report.warnings
    _add(warn, _problem("age", typed["age"] < 18, "applicant younger than 18"))
    for c in PAST_DUE:
        _add(warn, _problem(c, typed[c].isin(PAST_DUE_CODES), "96/98 reporting code (treated as missing)"))
    utilisation = "RevolvingUtilizationOfUnsecuredLines"
    _add(warn, _problem(utilisation, typed[utilisation] > 1, "utilisation above 100%"))
    _add(warn, _problem("<row>", typed.duplicated(), "exact duplicate of an earlier row"))


def _check_classes(typed: pd.DataFrame, report: ValidationReport) -> None:
    """Enough rows of each class to split and train."""
    counts = typed[TARGET].value_counts()
    if len(counts) < 2 or counts.min() < MIN_CLASS_ROWS:
        report.errors.append(
            Problem(
                TARGET, f"need at least {MIN_CLASS_ROWS} rows of each class to train, got {counts.to_dict()}"
            )
        )
