"""Every dependency of every API route runs on the event loop (issue 11).

FastAPI runs a plain `def` dependency in its threadpool: one thread hop per dependency per
request. With the seven /predict had (before most were folded into `Scoring`) the hops cost
more CPU than the prediction itself, and nothing in a functional test notices. The routers
carry their own dependencies (the API key's included), so no app or server is needed.
"""

from __future__ import annotations

import inspect

from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute

from credit_risk.api.app import ROUTERS


def _calls(dependant: Dependant):
    for sub in dependant.dependencies:
        yield sub.call
        yield from _calls(sub)


def _runs_on_the_loop(call) -> bool:
    # A dependency is a function, or an instance with __call__ (FastAPI's security schemes).
    if inspect.isfunction(call) or inspect.ismethod(call):
        return inspect.iscoroutinefunction(call)
    return inspect.iscoroutinefunction(type(call).__call__)


def test_no_route_depends_on_a_sync_function():
    routes = [r for router in ROUTERS for r in router.routes if isinstance(r, APIRoute)]
    predict = next(r for r in routes if r.path == "/predict")
    # The walk sees the route's dependencies: the API key (and what it needs), scoring, explain.
    assert len(list(_calls(predict.dependant))) >= 4
    sync = sorted(
        {
            f"{route.path}: {getattr(call, '__qualname__', type(call).__qualname__)}"
            for route in routes
            for call in [route.endpoint, *_calls(route.dependant)]
            if not _runs_on_the_loop(call)
        }
    )
    assert sync == [], f"these run in FastAPI's threadpool, a thread hop per request: {sync}"
