"""Reading the training CSV: guards against files that are not CSV, the variants, the fingerprint."""

from __future__ import annotations

import csv
import hashlib
from pathlib import Path

import pandas as pd

from credit_risk.features import CSV_TO_API
from credit_risk.training.validation import (
    REQUIRED,
    DataValidationError,
    Problem,
    ValidationReport,
    file_error,
    validate,
)

# Names the row-id column goes by: Kaggle's file leaves it blank, pandas writes "Unnamed: 0".
ID_COLUMNS = frozenset({"", "Unnamed: 0", "id"})
# The real header is ~250 bytes and a row ~100. A longer line is not CSV, and letting pandas find
# that out would read a whole file of garbage into memory first (1 GB took 3.3 GB and 9 s).
MAX_LINE_BYTES = 64 * 1024
_BLOCK_BYTES = 1024 * 1024
# Separators people export by mistake (a European spreadsheet writes ';').
_OTHER_SEPARATORS = (";", "\t", "|")

__all__ = [
    "MAX_LINE_BYTES",
    "DataValidationError",
    "check_header",
    "check_line_lengths",
    "fingerprint",
    "load_dataset",
    "normalise_columns",
    "read_csv",
]


def fingerprint(path: str | Path) -> str:
    """SHA256 of the file's exact bytes, read in chunks so memory stays constant."""
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def check_header(path: str | Path) -> None:
    """Refuse a file whose first line is not a comma-separated header naming every required column.

    Reads at most MAX_LINE_BYTES, so a huge file of garbage is refused at once in constant memory,
    before pandas reads any of it.
    """
    try:
        with open(path, "rb") as f:
            first = f.readline(MAX_LINE_BYTES + 1)
    except OSError as e:  # missing file, a directory, no permission
        raise file_error(path, f"cannot be read: {e.strerror or e}") from e
    if not first:
        raise file_error(path, "the file is empty")
    if len(first) > MAX_LINE_BYTES:
        raise file_error(path, f"not a CSV header: the first line is longer than {MAX_LINE_BYTES} bytes")
    try:
        line = first.decode("utf-8-sig").rstrip("\r\n")
    except UnicodeDecodeError as e:
        raise file_error(path, f"not a readable CSV: the first line is not UTF-8 text ({e.reason})") from e
    names = [CSV_TO_API.get(n, n) for n in next(csv.reader([line]), [])]
    missing = [c for c in REQUIRED if c not in names]
    for sep in _OTHER_SEPARATORS if missing else ():
        if all(c in {CSV_TO_API.get(n, n) for n in line.split(sep)} for c in REQUIRED):
            raise file_error(path, f"columns are separated by {sep!r}; the file must be comma-separated")
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
                raise file_error(path, f"line {at} is longer than {MAX_LINE_BYTES} bytes: not a CSV row")
            line += len(parts) - 1
            run = lengths[-1]


def read_csv(path: str | Path) -> pd.DataFrame:
    """Read the file as it is: every variant docs/data.md lists, no renaming or checking yet."""
    try:
        return pd.read_csv(
            path,
            encoding="utf-8-sig",  # tolerate a BOM
            na_values=["NA", ""],
            keep_default_na=False,
            low_memory=False,
        )
    except pd.errors.EmptyDataError as e:
        raise file_error(path, "the file is empty") from e
    except OSError as e:  # missing file, a directory, no permission
        raise file_error(path, f"cannot be read: {e.strerror or e}") from e
    except (pd.errors.ParserError, UnicodeDecodeError) as e:
        raise file_error(path, f"not a readable CSV: {e}") from e


def normalise_columns(df: pd.DataFrame) -> pd.DataFrame:
    """Drop the row-id column and give the hyphenated columns the API's names."""
    first = df.columns[0] if len(df.columns) else None
    if first in ID_COLUMNS or (isinstance(first, str) and first.startswith("Unnamed: 0")):
        df = df.drop(columns=first)
    return df.rename(columns=CSV_TO_API)


def load_dataset(path: str | Path) -> tuple[pd.DataFrame, ValidationReport]:
    """Check the header and line lengths, read, normalise, validate; raise DataValidationError if unfit."""
    check_header(path)
    check_line_lengths(path)
    df = normalise_columns(read_csv(path))
    typed, report = validate(df, str(path))
    if not report.ok:
        raise DataValidationError(report)
    return typed, report
