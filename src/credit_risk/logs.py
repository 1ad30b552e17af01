"""One log format for every process we start, and the one-line form of an error."""

from __future__ import annotations

import logging
import sys

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
# An error's first line is what a log line or a 503 reason shows; tracebacks stay in the log.
FIRST_LINE_CHARS = 300


def setup_logging(level: int | str = logging.INFO) -> None:
    """Log to stderr in LOG_FORMAT (a process's entry point calls this once)."""
    logging.basicConfig(level=level, format=LOG_FORMAT, stream=sys.stderr)


def first_line(error: BaseException) -> str:
    """The first line of an error's message, cut to FIRST_LINE_CHARS; its type when it has none."""
    text = str(error).strip()
    return text.splitlines()[0][:FIRST_LINE_CHARS] if text else type(error).__name__
