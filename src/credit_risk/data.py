"""Loading, validating and fingerprinting the training CSV."""

from __future__ import annotations

import csv
import hashlib
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from credit_risk.features import (
    AGE_RANGE,
    COUNT_COLUMNS,
    CSV_TO_API,
    FEATURES,
    NULLABLE,
    PAST_DUE,
    PAST_DUE_CODES,
    TARGET,
)

# Names the row-id column goes by: Kaggle's file leaves it blank, pandas writes "Unnamed: 0".
ID_COLUMNS = frozenset({"", "Unnamed: 0", "id"})
REQUIRED = (TARGET, *FEATURES)
NON_NEGATIVE = (*COUNT_COLUMNS, "MonthlyIncome", "DebtRatio", "RevolvingUtilizationOfUnsecuredLines")
# A data line's number in the file: line 1 is the header.
_FIRST_DATA_LINE = 2
# The real header is ~250 bytes and a row ~100. A longer line is not CSV, and letting pandas find
# that out would read a whole file of garbage into memory first (1 GB took 3.3 GB and 9 s).
MAX_LINE_BYTES = 64 * 1024
_BLOCK_BYTES = 1024 * 1024
# Separators people export by mistake (a European spreadsheet writes ';').
_OTHER_SEPARATORS = (";", "\t", "|")


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


def fingerprint(path: str | Path) -> str:
    """SHA256 of the file's exact bytes, read in chunks so memory stays constant."""
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def _example_line(mask: pd.Series) -> int:
    return int(np.flatnonzero(mask.to_numpy())[0]) + _FIRST_DATA_LINE


def _problem(column: str, mask: pd.Series, message: str) -> Problem | None:
    count = int(mask.sum())
    if not count:
        return None
    return Problem(column, message, count, _example_line(mask))


def _file_error(path: str | Path, message: str) -> DataValidationError:
    return DataValidationError(ValidationReport(str(path), errors=[Problem("<file>", message)]))


def check_header(path: str | Path) -> None:
    """Refuse a file whose first line is not a comma-separated header naming every required column.

    Reads at most MAX_LINE_BYTES, so a huge file of garbage is refused at once in constant memory,
    before pandas reads any of it.
    """
    try:
        with open(path, "rb") as f:
            first = f.readline(MAX_LINE_BYTES + 1)
    except OSError as e:  # missing file, a directory, no permission
        raise _file_error(path, f"cannot be read: {e.strerror or e}") from e
    if not first:
        raise _file_error(path, "the file is empty")
    if len(first) > MAX_LINE_BYTES:
        raise _file_error(path, f"not a CSV header: the first line is longer than {MAX_LINE_BYTES} bytes")
    try:
        line = first.decode("utf-8-sig").rstrip("\r\n")
    except UnicodeDecodeError as e:
        raise _file_error(path, f"not a readable CSV: the first line is not UTF-8 text ({e.reason})") from e
    names = [CSV_TO_API.get(n, n) for n in next(csv.reader([line]), [])]
    missing = [c for c in REQUIRED if c not in names]
    for sep in _OTHER_SEPARATORS if missing else ():
        if all(c in {CSV_TO_API.get(n, n) for n in line.split(sep)} for c in REQUIRED):
            raise _file_error(path, f"columns are separated by {sep!r}; the file must be comma-separated")
    errors = [
        Problem(c, "the column appears more than once in the header") for c in REQUIRED if names.count(c) > 1
    ]
    errors += [Problem(c, "required column is missing from the header (line 1)") for c in missing]
    if errors:
        raise DataValidationError(ValidationReport(str(path), errors=errors))


def check_line_lengths(path: str | Path) -> None:
    """Refuse a file with a line longer than MAX_LINE_BYTES, reading it in blocks (constant memory)."""
    line, run = 1, 0  # the number of the line the block starts in, and its length so far
    with open(path, "rb") as f:
        while block := f.read(_BLOCK_BYTES):
            parts = block.split(b"\n")
            # parts[0] continues the previous block's line; the last part runs on into the next block.
            lengths = [run + len(parts[0]), *map(len, parts[1:])]
            if max(lengths) > MAX_LINE_BYTES:
                at = line + next(i for i, n in enumerate(lengths) if n > MAX_LINE_BYTES)
                raise _file_error(path, f"line {at} is longer than {MAX_LINE_BYTES} bytes: not a CSV row")
            line += len(parts) - 1
            run = lengths[-1]


def read_csv(path: str | Path) -> pd.DataFrame:
    """Read the file as it is: every variant DATA.md lists, no renaming or checking yet."""
    try:
        return pd.read_csv(
            path,
            encoding="utf-8-sig",  # tolerate a BOM
            na_values=["NA", ""],
            keep_default_na=False,
            low_memory=False,
        )
    except pd.errors.EmptyDataError as e:
        raise _file_error(path, "the file is empty") from e
    except OSError as e:  # missing file, a directory, no permission
        raise _file_error(path, f"cannot be read: {e.strerror or e}") from e
    except (pd.errors.ParserError, UnicodeDecodeError) as e:
        raise _file_error(path, f"not a readable CSV: {e}") from e


def normalise_columns(df: pd.DataFrame) -> pd.DataFrame:
    """Drop the row-id column and give the hyphenated columns the API's names."""
    first = df.columns[0] if len(df.columns) else None
    if first in ID_COLUMNS or (isinstance(first, str) and first.startswith("Unnamed: 0")):
        df = df.drop(columns=first)
    return df.rename(columns=CSV_TO_API)


def validate(df: pd.DataFrame, path: str = "<data>") -> tuple[pd.DataFrame, ValidationReport]:
    """Check the contract; return the typed frame (target + FEATURES) and the report."""
    report = ValidationReport(path, rows=len(df))
    errors, warnings = report.errors, report.warnings

    header = [str(c) for c in df.columns]
    for name in sorted({c.split(".")[0] for c in header if c.split(".")[0] in REQUIRED}):
        # pandas renames a repeated header "x" to "x.1"
        if f"{name}.1" in header:
            errors.append(Problem(name, "the column appears more than once in the header"))
    missing = [c for c in REQUIRED if c not in df.columns]
    for c in missing:
        errors.append(Problem(c, "required column is missing"))
    extra = [c for c in header if c not in REQUIRED and c.split(".")[0] not in REQUIRED]
    if extra:
        warnings.append(Problem(", ".join(extra), "unknown column(s) ignored"))
    if len(df) == 0:
        errors.append(Problem("<file>", "the file has a header but no data rows"))
    if errors:
        return df, report

    typed = pd.DataFrame(index=df.index)
    for c in REQUIRED:
        raw = df[c]
        # pandas 3 reads text as its `str` dtype, not object: anything non-numeric is coerced here
        numeric = pd.api.types.is_numeric_dtype(raw) and not pd.api.types.is_bool_dtype(raw)
        values = raw.astype(float) if numeric else pd.to_numeric(raw, errors="coerce")
        bad_text = values.isna() & raw.notna()
        if bad_text.any():
            errors.append(_problem(c, bad_text, f"not a number (e.g. {raw[bad_text].iloc[0]!r})"))
        if np.isinf(values).any():
            errors.append(_problem(c, pd.Series(np.isinf(values), index=df.index), "infinite value"))
        typed[c] = values.astype(np.float64)

    for c in REQUIRED:
        nan = typed[c].isna() & df[c].isna()
        if c in NULLABLE:
            if nan.all():
                errors.append(_problem(c, nan, "every value is missing"))
            elif nan.any():
                warnings.append(_problem(c, nan, "missing (handled by the model)"))
        elif p := _problem(c, nan, "missing value in a required column"):
            errors.append(p)

    target = typed[TARGET]
    if p := _problem(TARGET, target.notna() & ~target.isin([0, 1]), "target must be 0 or 1"):
        errors.append(p)
    for c in NON_NEGATIVE:
        if p := _problem(c, typed[c] < 0, "negative value"):
            errors.append(p)
    lo, hi = AGE_RANGE
    if p := _problem("age", (typed["age"] < lo) | (typed["age"] > hi), f"age outside {lo}-{hi}"):
        errors.append(p)
    if errors:
        return typed, report

    # Oddities the real file does contain: reported, then handled by the model.
    if p := _problem("age", typed["age"] < 18, "applicant younger than 18"):
        warnings.append(p)
    for c in PAST_DUE:
        if p := _problem(c, typed[c].isin(PAST_DUE_CODES), "96/98 reporting code (treated as missing)"):
            warnings.append(p)
    if p := _problem(
        "RevolvingUtilizationOfUnsecuredLines",
        typed["RevolvingUtilizationOfUnsecuredLines"] > 1,
        "utilisation above 100%",
    ):
        warnings.append(p)
    if p := _problem("<row>", typed.duplicated(), "exact duplicate of an earlier row"):
        warnings.append(p)

    counts = target.value_counts()
    if len(counts) < 2 or counts.min() < 10:
        errors.append(
            Problem(TARGET, f"need at least 10 rows of each class to train, got {counts.to_dict()}")
        )
    report.target_rate = float(target.mean())
    typed[TARGET] = target.astype(np.int8)
    return typed, report


def load_dataset(path: str | Path) -> tuple[pd.DataFrame, ValidationReport]:
    """Check the header and line lengths, read, normalise, validate; raise DataValidationError if unfit."""
    check_header(path)
    check_line_lengths(path)
    df = normalise_columns(read_csv(path))
    typed, report = validate(df, str(path))
    if not report.ok:
        raise DataValidationError(report)
    return typed, report
