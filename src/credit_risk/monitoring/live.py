"""The API's live stability window: bin counts of what each served version scores, no rows kept.

The window rolls in blocks: counts go into the current block; when it holds a tenth of
STABILITY_WINDOW predictions it is closed, and the oldest closed blocks leave while the window
holds more than STABILITY_WINDOW. So it covers between 90 % and 100 % of STABILITY_WINDOW
predictions, and the memory is eleven count vectors per version. A batch is tallied in pieces
that fill blocks exactly. numpy and the standard library only.
"""

from __future__ import annotations

import threading
from collections import OrderedDict, deque

import numpy as np

from credit_risk.monitoring.reference import Figures, Reference

BLOCKS = 10
# Versions whose windows are kept (the served one and the few before it, for a swap's aftermath).
KEPT_VERSIONS = 3


class _Window:
    def __init__(self, reference: Reference, capacity: int):
        self.reference = reference
        self.capacity = capacity
        self.block_size = max(1, -(-capacity // BLOCKS))
        self.total = np.zeros(reference.size, dtype=np.int64)
        self.current = np.zeros(reference.size, dtype=np.int64)
        self.current_rows = 0
        self.closed: deque[tuple[np.ndarray, int]] = deque()
        self.rows = 0

    def add(self, counts: np.ndarray, n: int) -> None:
        self.current += counts
        self.total += counts
        self.current_rows += n
        self.rows += n
        while self.rows > self.capacity and self.closed:
            old, old_rows = self.closed.popleft()
            self.total -= old
            self.rows -= old_rows
        if self.current_rows >= self.block_size:
            self.closed.append((self.current, self.current_rows))
            self.current = np.zeros_like(self.total)
            self.current_rows = 0

    @property
    def room(self) -> int:
        """Rows the current block takes before it closes."""
        return self.block_size - self.current_rows


class StabilityMonitor:
    """Rolling bin counts per served version; `observe` is on the request path, so it stays small."""

    def __init__(self, capacity: int, enabled: bool = True):
        self.capacity = capacity
        self.enabled = enabled
        self._windows: OrderedDict[str, _Window] = OrderedDict()
        self._lock = threading.Lock()

    def observe(self, version: str, reference: Reference | None, X: np.ndarray, probs: np.ndarray) -> None:
        """Count what one request scored (nothing when the version has no reference)."""
        if reference is None or not self.enabled:
            return
        window = self._windows.get(version)
        if window is None or window.reference is not reference:
            with self._lock:
                window = self._windows[version] = _Window(reference, self.capacity)
                while len(self._windows) > KEPT_VERSIONS:
                    self._windows.popitem(last=False)
        start, n = 0, len(probs)
        while start < n:  # one piece for a single row; a batch in block-sized pieces
            end = min(n, start + window.room)
            counts = reference.tally(X[start:end], probs[start:end])  # outside the lock: the numpy work
            with self._lock:
                window.add(counts, end - start)
            start = end

    def figures(self, version: str) -> tuple[int, dict[str, Figures]] | None:
        """(window size, figures per characteristic) of a version; None before its first prediction."""
        with self._lock:
            window = self._windows.get(version)
            if window is None:
                return None
            total, rows = window.total.copy(), window.rows
        return rows, window.reference.figures(total)
