"""Prometheus metrics: per-route request counts and latencies, predictions, model and log state."""

from __future__ import annotations

import time
from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, ProcessCollector
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from credit_risk.reasons import REASON_CODES

# Routes whose in-progress count is worth a label of its own (a fixed set: raw paths would let
# any client grow the label set).
IN_PROGRESS_ROUTES = frozenset({"/predict", "/predict/batch", "/model/info", "/model/reload"})

# Fine buckets at the low end: a single prediction takes about a millisecond.
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class ApiMetrics:
    """The app's own registry (one per app, so several apps can live in one test process)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        ProcessCollector(registry=self.registry)  # CPU, memory, open files of the API process
        self.requests = Counter(
            "credit_risk_http_requests",
            "HTTP requests by route template, method and status.",
            ["route", "method", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "credit_risk_http_request_duration_seconds",
            "Time from request start to the end of the response, by route template.",
            ["route", "method"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.in_progress = Gauge(
            "credit_risk_http_requests_in_progress",
            "Requests the app has started and not yet answered (what a graceful stop waits for).",
            ["route"],
            registry=self.registry,
        )
        self.predictions = Counter(
            "credit_risk_predictions",
            "Predictions served, by outcome (1 = serious delinquency expected).",
            ["outcome"],
            registry=self.registry,
        )
        self.reasons = Counter(
            "credit_risk_reasons",
            "Reason codes given with predictions, by code (GET /model/reasons lists them).",
            ["code"],
            registry=self.registry,
        )
        # Every code's child made now: a fixed label set, and each code shows from the start at 0.
        self._reason_children = {r.code: self.reasons.labels(code=r.code) for r in REASON_CODES}
        self.outcome_0 = self.predictions.labels(outcome="0")
        self.outcome_1 = self.predictions.labels(outcome="1")
        self._children: dict[tuple, tuple] = {}

    def record_predictions(self, n_positive: int, n_total: int) -> None:
        """Count predictions by outcome."""
        if n_positive:
            self.outcome_1.inc(n_positive)
        if n_total - n_positive:
            self.outcome_0.inc(n_total - n_positive)

    def record_reasons(self, reasons: list[list[dict]]) -> None:
        """Count the reason codes given, one per reason per applicant."""
        counts: dict[str, int] = {}
        for row in reasons:
            for r in row:
                counts[r["code"]] = counts.get(r["code"], 0) + 1
        for code, n in counts.items():
            self._reason_children[code].inc(n)

    def observe(self, route: str, method: str, status: int, seconds: float) -> None:
        """Count one request and its latency (label lookups cached: they cost more than the inc)."""
        key = (route, method, status)
        children = self._children.get(key)
        if children is None:
            children = self._children[key] = (
                self.requests.labels(route=route, method=method, status=str(status)),
                self.latency.labels(route=route, method=method),
            )
        children[0].inc()
        children[1].observe(seconds)

    def add_collector(self, collector: Collector) -> None:
        """Register a collector that reads live state at scrape time."""
        self.registry.register(collector)


class StateCollector(Collector):
    """Model version and prediction-log counters, read at scrape time from their owners."""

    def __init__(self, model_version: Callable[[], str | None], log_stats: Callable[[], dict]):
        self._model_version = model_version
        self._log_stats = log_stats

    def collect(self):
        """Yield the current values."""
        version = self._model_version()
        served = GaugeMetricFamily(
            "credit_risk_model_version_served",
            "Registered version served now (0 when nothing is).",
        )
        served.add_metric([], float(version) if version and version.isdigit() else 0.0)
        yield served
        ready = GaugeMetricFamily("credit_risk_model_ready", "1 when a Production model is served.")
        ready.add_metric([], 1.0 if version else 0.0)
        yield ready
        stats = self._log_stats()
        prefix = "credit_risk_prediction_log"
        yield _gauge(f"{prefix}_queue_depth", "Records waiting in memory.", stats["queue_depth"])
        yield _gauge(f"{prefix}_spool_backlog", "Records waiting in the spool file.", stats["spool_backlog"])
        for name, help_text in (
            ("logged", "Records written to MLflow."),
            ("spooled", "Records written to the spool (tracking server down or queue full)."),
            ("replayed", "Spooled records logged after recovery."),
            ("dropped", "Records lost because the spool itself could not be written."),
        ):
            c = CounterMetricFamily(f"{prefix}_{name}", help_text)
            c.add_metric([], float(stats[f"{name}_total"]))
            yield c


class StabilityCollector(Collector):
    """`credit_risk_psi{feature=...}` of the served version's live window, computed at scrape time.

    The score is the characteristic `feature="score"`, so one alert rule (`credit_risk_psi > 0.25`)
    watches everything.
    """

    def __init__(self, figures: Callable[[], tuple[str, int, dict] | None]):
        self._figures = figures

    def collect(self):
        """Yield the current values (nothing while no version with a reference has scored)."""
        found = self._figures()
        psi = GaugeMetricFamily(
            "credit_risk_psi",
            "Population stability index of an input (or feature=score) over the live window.",
            labels=["feature", "model_version"],
        )
        size = GaugeMetricFamily(
            "credit_risk_stability_window_size", "Predictions in the live stability window."
        )
        if found is not None:
            version, rows, figures = found
            for name, f in figures.items():
                if f.psi is not None:
                    psi.add_metric([name, version], f.psi)
            size.add_metric([], float(rows))
        yield psi
        yield size


def _gauge(name: str, help_text: str, value: float) -> GaugeMetricFamily:
    g = GaugeMetricFamily(name, help_text)
    g.add_metric([], float(value))
    return g


class MetricsMiddleware:
    """Pure ASGI (no per-request task like BaseHTTPMiddleware): times every HTTP request."""

    def __init__(self, app: ASGIApp, metrics: ApiMetrics):
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500
        path = scope["path"]
        in_progress = self.metrics.in_progress.labels(path if path in IN_PROGRESS_ROUTES else "other")
        in_progress.inc()

        async def send_and_see(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_and_see)
        finally:
            in_progress.dec()
            route = scope.get("route")
            # The template, not the raw path: unknown paths must not blow up the label set.
            path = getattr(route, "path", None) or "unmatched"
            self.metrics.observe(path, scope["method"], status, time.perf_counter() - start)
