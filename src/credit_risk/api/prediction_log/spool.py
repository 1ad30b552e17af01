"""The spool: an append-only JSON-lines file of records not yet logged, and its cursor."""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import threading
from pathlib import Path

import orjson

log = logging.getLogger("credit_risk.api.prediction_log")


class SpoolBusy(Exception):
    """Another live process holds this spool directory."""


class Spool:
    """An append-only JSON-lines file and a cursor: the byte offset up to which it is logged."""

    def __init__(self, directory: Path):
        directory.mkdir(parents=True, exist_ok=True)
        self._lock_file = open(directory / ".lock", "w")  # noqa: SIM115 - held for the spool's life
        try:
            fcntl.flock(self._lock_file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as e:
            self._lock_file.close()
            raise SpoolBusy(
                f"spool directory {directory} is used by another API process; give each its own"
            ) from e
        self._path = directory / "pending.jsonl"
        self._cursor_path = directory / "pending.cursor"
        self._lock = threading.Lock()
        # Unbuffered: a failed append must leave nothing behind in a buffer (see append).
        self._file = open(self._path, "ab", buffering=0)  # noqa: SIM115 - kept open for appends
        self._size = self._file.tell()
        try:
            self._offset = min(int(self._cursor_path.read_text()), self._size)
        except (OSError, ValueError):
            self._offset = 0
        self.backlog = self._count_lines(self._offset)

    def _count_lines(self, offset: int) -> int:
        with open(self._path, "rb") as f:
            f.seek(offset)
            return sum(1 for _ in f)

    @property
    def pending(self) -> bool:
        """True while some spooled record is not logged yet."""
        return self._offset < self._size

    def append(self, records: list[dict]) -> None:
        """Add records at the end (written to the OS, so they survive a crash of this process).

        OSError (a full disk) when they cannot all be written: then none of them is, so the
        caller can count them as dropped and the file holds whole records only (issue 14).
        """
        data = memoryview(b"".join(orjson.dumps(r) + b"\n" for r in records))
        with self._lock:
            try:
                while data:
                    data = data[self._file.write(data) :]  # a short write returns what it took
            except OSError:
                os.ftruncate(self._file.fileno(), self._size)  # drop the torn part written so far
                raise
            self._size = os.fstat(self._file.fileno()).st_size
            self.backlog += len(records)

    def read(self, max_records: int) -> tuple[list[dict], int]:
        """The next records after the cursor, and the offset just past them."""
        records: list[dict] = []
        with open(self._path, "rb") as f:
            f.seek(self._offset)
            offset = self._offset
            while len(records) < max_records and offset < self._size:
                line = f.readline()
                if not line.endswith(b"\n"):
                    break  # a line still being written
                offset += len(line)
                try:
                    records.append(orjson.loads(line))
                except orjson.JSONDecodeError:
                    log.error(
                        "skipping a corrupt spool line at byte %d of %s", offset - len(line), self._path
                    )
        return records, offset

    def commit(self, offset: int, n_records: int) -> None:
        """Mark everything before `offset` as logged; empty the file once all of it is."""
        with self._lock:
            self.backlog = max(0, self.backlog - n_records)
            if offset >= self._size:
                self._file.truncate(0)
                self._size = self._offset = 0
                self.backlog = 0
                with contextlib.suppress(FileNotFoundError):
                    self._cursor_path.unlink()
                return
            self._offset = offset
            tmp = self._cursor_path.with_suffix(".tmp")
            tmp.write_text(str(offset))
            os.replace(tmp, self._cursor_path)  # atomic: a crash leaves the old or the new cursor

    def close(self) -> None:
        """Close the file and release the directory."""
        self._file.close()
        self._lock_file.close()
