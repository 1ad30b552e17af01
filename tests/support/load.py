"""Mixed client traffic against a running API, remembering every prediction it got an answer for.

Used by the fault tests and by bench/soak.py: several threads, each with its own keep-alive
connection, send `/predict`, `/predict/batch` and `/model/info` in a fixed proportion. Every
prediction answered with 200 is kept as (time received, prediction_id), so a test can compare
what was answered with what reached MLflow, and say how recent a missing one was.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections import Counter
from dataclasses import dataclass, field

import httpx

from support.api import metric_histories, payloads

# Out of every 10 requests: 7 single predictions, 2 batches, 1 /model/info.
DEFAULT_MIX = ("predict",) * 7 + ("batch",) * 2 + ("info",)


@dataclass
class _ThreadStats:
    statuses: Counter = field(default_factory=Counter)  # (route, status) -> count
    errors: Counter = field(default_factory=Counter)  # (route, exception type) -> count
    answered: list[tuple[float, str]] = field(default_factory=list)  # (monotonic time, prediction_id)
    probabilities: dict[str, float] = field(default_factory=dict)  # prediction_id -> answered probability
    versions: Counter = field(default_factory=Counter)


class Load:
    """Client threads that run until `stop()`; statistics merge across threads."""

    def __init__(
        self,
        url: str,
        threads: int = 4,
        mix: tuple[str, ...] = DEFAULT_MIX,
        batch_size: int = 20,
        api_key: str | None = None,
        timeout: float = 30.0,
        pause: float = 0.0,
    ):
        self.url = url
        self._mix = mix
        self._batch_size = batch_size
        self._headers = {"X-API-Key": api_key} if api_key else {}
        self._timeout = timeout
        # Seconds each thread waits between requests: keeps the prediction rate below what the
        # tracking server can log, when a test needs the spool to drain while the load goes on.
        self._pause = pause
        self._bodies = payloads(500, seed=21)
        self._stop = threading.Event()
        self._stats = [_ThreadStats() for _ in range(threads)]
        self._threads = [
            threading.Thread(target=self._work, args=(s, i), name=f"load-{i}", daemon=True)
            for i, s in enumerate(self._stats)
        ]

    def start(self) -> Load:
        for t in self._threads:
            t.start()
        return self

    def stop(self) -> None:
        """Stop sending and wait for the requests in flight to end."""
        self._stop.set()
        for t in self._threads:
            t.join(self._timeout + 5)

    def __enter__(self) -> Load:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def _work(self, stats: _ThreadStats, index: int) -> None:
        bodies = itertools.cycle(self._bodies[index * 7 :] + self._bodies[: index * 7])
        routes = itertools.cycle(self._mix)
        with httpx.Client(base_url=self.url, timeout=self._timeout, headers=self._headers) as http:
            while not self._stop.wait(self._pause):
                route = next(routes)
                try:
                    if route == "predict":
                        resp = http.post("/predict", json=next(bodies))
                    elif route == "batch":
                        records = [next(bodies) for _ in range(self._batch_size)]
                        resp = http.post("/predict/batch", json={"records": records})
                    else:
                        resp = http.get("/model/info")
                except httpx.HTTPError as e:
                    stats.errors[(route, type(e).__name__)] += 1
                    time.sleep(0.05)  # a refused connection returns at once: do not spin
                    continue
                received = time.monotonic()
                stats.statuses[(route, resp.status_code)] += 1
                if resp.status_code != 200 or route == "info":
                    continue
                body = resp.json()
                stats.versions[body["model_version"]] += 1
                items = body["predictions"] if route == "batch" else [body]
                stats.answered.extend((received, item["prediction_id"]) for item in items)
                stats.probabilities.update((item["prediction_id"], item["probability"]) for item in items)

    @property
    def statuses(self) -> Counter:
        """(route, status) -> count, over all threads."""
        return sum((s.statuses for s in self._stats), Counter())

    @property
    def errors(self) -> Counter:
        """(route, exception type) -> count of requests that got no HTTP answer."""
        return sum((s.errors for s in self._stats), Counter())

    @property
    def versions(self) -> Counter:
        """model_version -> count of 200 prediction responses."""
        return sum((s.versions for s in self._stats), Counter())

    @property
    def answered(self) -> list[tuple[float, str]]:
        """(time received, prediction_id) of every prediction answered with 200, in time order."""
        return sorted(itertools.chain.from_iterable(list(s.answered) for s in self._stats))

    @property
    def probabilities(self) -> dict[str, float]:
        """prediction_id -> the probability answered for it, over all threads."""
        merged: dict[str, float] = {}
        for s in self._stats:
            merged.update(dict(s.probabilities))
        return merged

    @property
    def requests(self) -> int:
        """Requests that got an HTTP answer so far."""
        return sum(sum(s.statuses.values()) for s in self._stats)

    def server_errors(self) -> Counter:
        """(route, status) of every 5xx answer."""
        return Counter({k: v for k, v in self.statuses.items() if k[1] >= 500})

    def wait_for_more(self, n: int, timeout: float = 60.0) -> None:
        """Block until `n` more requests were answered (AssertionError after `timeout`)."""
        target = self.requests + n
        deadline = time.monotonic() + timeout
        while self.requests < target:
            if time.monotonic() > deadline:
                raise AssertionError(f"load: fewer than {n} answers in {timeout:.0f}s ({self.errors})")
            time.sleep(0.05)


def log_drained(api_url: str) -> bool:
    """True when the API's prediction log holds nothing in memory or in its spool."""
    stats = httpx.get(f"{api_url}/health", timeout=10).json()["prediction_log"]
    return stats["queue_depth"] == 0 and stats["spool_backlog"] == 0


@dataclass(frozen=True)
class LoggedPoint:
    """One `probability` point of the prediction experiment."""

    prediction_id: str
    step: int
    timestamp: int
    value: float


def logged_predictions(tracking_uri: str, experiment: str) -> list[LoggedPoint]:
    """Every `probability` point in the experiment, named by the prediction_id the API answered."""
    return [
        LoggedPoint(f"{run.data.tags['api_process']}-{m.step}", m.step, m.timestamp, m.value)
        for run, history in metric_histories(tracking_uri, experiment)
        for m in history
    ]
