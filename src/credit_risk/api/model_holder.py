"""Which model is served: the Production version of the registry, swapped atomically when it changes.

Knows nothing of HTTP. The served state is one immutable `Serving` object behind a single
reference: a request reads the reference once and predicts with that snapshot, so a swap
(one assignment, done by the poll thread) never mixes two versions inside one request.
"""

from __future__ import annotations

import contextlib
import ctypes
import gc
import logging
import threading
import weakref
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from types import MappingProxyType

import numpy as np
from mlflow.tracking import MlflowClient

from credit_risk.api.errors import ModelNotReady
from credit_risk.api.fast_forest import make_scorer
from credit_risk.logs import first_line
from credit_risk.model_io import TEST_METRICS, LoadedModel, ModelRejected, load_model_version
from credit_risk.monitoring.reference import Reference, load_reference
from credit_risk.reasons import make_explainer
from credit_risk.registry import production_version
from credit_risk.tracking import access_problem

log = logging.getLogger(__name__)

# Polls at which a replaced version still referenced is collected again (each a full collection).
REPLACED_TRIES = 10
# What /model/info shows of the version's run: its test metrics and the threshold.
RUN_METRICS = (*TEST_METRICS, "decision_threshold")


@dataclass(frozen=True)
class Serving:
    """A snapshot of what is served: a model, or the reason there is none."""

    model: LoadedModel | None
    reason: str = ""
    loaded_at: datetime | None = None
    metrics: Mapping[str, float] = field(default_factory=lambda: MappingProxyType({}))
    # The model's predict_proba, or the exact fast path for it (fast_forest), and which one.
    score: Callable[[np.ndarray], np.ndarray] | None = None
    scorer: str = ""
    # Exact contributions for reason codes (credit_risk.reasons); None if the model has none.
    explainer: object | None = None
    # The version's stability reference (None for a version trained without one).
    reference: Reference | None = None


class ModelHolder:
    """Follows the Production stage of one registered model and holds the loaded version."""

    def __init__(self, client: MlflowClient, model_name: str, poll_seconds: float):
        self._client = client
        self.model_name = model_name
        self._poll_seconds = poll_seconds
        self._state = Serving(None, "the first registry poll has not finished yet")
        self._refresh_lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.tracking_reachable: bool | None = None
        self.last_poll_at: datetime | None = None
        # Swapped-out versions that a request still held when the swap collected, with the polls
        # left to try again: collected at every poll until they are gone (or the tries run out).
        self._replaced: list[tuple[weakref.ref, int]] = []

    @property
    def state(self) -> Serving:
        """The current snapshot (one attribute read: safe from any thread)."""
        return self._state

    @property
    def ready(self) -> bool:
        """True when a Production model is loaded."""
        return self._state.model is not None

    def current(self) -> Serving:
        """The snapshot to predict with, or ModelNotReady with the reason nothing is served."""
        state = self._state
        if state.model is None:
            raise ModelNotReady(state.reason)
        return state

    def refresh(self) -> Serving:
        """Ask the registry now; load and swap in a new Production version, or serve nothing."""
        with self._refresh_lock:  # the poll thread and /model/reload never load twice at once
            if self._replaced:
                self._collect_replaced()
            reachable = self._refresh()
            # Published only now, after the state: whoever sees a finished poll sees its outcome.
            self.tracking_reachable = reachable
            self.last_poll_at = datetime.now(UTC)
            return self._state

    def _refresh(self) -> bool:
        """One poll; returns whether the registry answered."""
        try:
            mv = production_version(self._client, self.model_name)
        except Exception as e:
            problem = access_problem(e, self._client.tracking_uri, f"registered model '{self.model_name}'")
            if self._state.model is None:
                self._set(Serving(None, problem or f"the model registry is unreachable: {first_line(e)}"))
            else:
                # The registry cannot say the version left Production, so it stays: a dead
                # tracking server must not take predictions down with it.
                log.warning(
                    "registry poll failed, still serving version %s: %s", self._state.model.version, e
                )
            return False
        if mv is None:
            self._set(Serving(None, f"no version of model '{self.model_name}' is in the Production stage"))
            return True
        current = self._state.model
        if current is not None and current.version == str(mv.version):
            return True
        log.info("Production version of %s is %s; loading it", self.model_name, mv.version)
        try:
            model = load_model_version(self._client, self.model_name, str(mv.version))
        except ModelRejected as e:
            self._set(Serving(None, f"Production version {mv.version} cannot be served: {e}"))
            return True
        except Exception as e:  # the registry or artifact store failed mid-load
            uri = self._client.tracking_uri
            why = access_problem(e, uri, f"version {mv.version}'s artifacts") or first_line(e)
            self._set(Serving(None, f"Production version {mv.version} could not be loaded: {why}"))
            return True
        score, scorer = make_scorer(model)
        explainer = _explainer(model)
        metrics = MappingProxyType(self._run_metrics(model.run_id))
        reference = load_reference(self._client, model.run_id)
        self._set(Serving(model, "", datetime.now(UTC), metrics, score, scorer, explainer, reference))
        return True

    def _run_metrics(self, run_id: str) -> dict[str, float]:
        try:
            metrics = self._client.get_run(run_id).data.metrics
        except Exception as e:  # info only: a model without its run's metrics is still servable
            log.warning("metrics of run %s unavailable: %s", run_id, e)
            return {}
        return {k: float(metrics[k]) for k in RUN_METRICS if k in metrics}

    def _set(self, state: Serving) -> None:
        old = self._state
        self._state = state  # the atomic swap
        if state.model is not None:
            log.info("now serving %s version %s (%s)", state.model.name, state.model.version, state.scorer)
        elif old.model is not None or old.reason != state.reason:
            log.warning("serving nothing: %s", state.reason)
        if old.model is not None:  # a version replaced or withdrawn: free it
            self._replaced.append((weakref.ref(old), REPLACED_TRIES))
            del old
            self._collect_replaced()
        elif state.model is not None:
            gc.freeze()  # the first version: its objects live long, keep them out of the GC's walks

    def _collect_replaced(self) -> None:
        # Once was not always enough: a version that a slow request held at the swap and again at
        # the next poll stayed frozen in memory for good (+36 MiB in a soak, 2026-12-04).
        _collect_and_freeze()
        alive = [(ref, tries - 1) for ref, tries in self._replaced if ref() is not None]
        if any(tries == 0 for _, tries in alive):
            log.warning("a replaced model version is still referenced after %d polls", REPLACED_TRIES)
        self._replaced = [r for r in alive if r[1] > 0]

    def start(self) -> None:
        """Poll the registry in a daemon thread: at once, then every poll interval."""
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="model-poller", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.refresh()
            except Exception:  # the poller must outlive any surprise
                log.exception("registry poll failed unexpectedly")
            self._stop.wait(self._poll_seconds)

    def stop(self, timeout: float = 10.0) -> None:
        """Stop polling (an in-progress load is left to finish within `timeout`)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)


def _explainer(model: LoadedModel):
    # The gate refuses a version without exact reasons; one promoted by hand is served without.
    try:
        return make_explainer(model.pipeline)
    except (TypeError, ValueError, AttributeError) as e:
        log.warning("version %s: no reason codes (%s)", model.version, e)
        return None


def _collect_and_freeze() -> None:
    """After a swap: free the old version, then freeze what is left (the new one) out of the GC's walks.

    Frozen objects are in no collection, and a version's objects hold reference cycles: a version
    frozen while it served was never freed once replaced, so every swap leaked the old model and
    its explainer (bench/soak.py: +32 MiB a swap with the test models). Unfrozen first, one full
    collection frees it; one that an in-flight request still held is freed at the next poll.
    The heap's free pages then go back to the OS (glibc; elsewhere nothing): loading frees tens
    of MiB of temporaries (the explainer's per-tree tables, the artifact's bytes).
    """
    gc.unfreeze()
    gc.collect()
    gc.freeze()
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)
