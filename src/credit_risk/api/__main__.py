"""`python -m credit_risk.api`: run the API with uvicorn, settings from the environment."""

import os

# scikit-learn's OpenMP threads fight the server's own threads on a small machine (one row
# gains nothing from them; OMP_NUM_THREADS=1 nearly doubled throughput here). OpenMP reads
# it once, when numpy/scikit-learn load, so it is set before any import below; an explicit
# value from the environment wins.
os.environ.setdefault("OMP_NUM_THREADS", "1")

import logging
import sys

import uvicorn
from pydantic import ValidationError

from credit_risk.api.app import create_app
from credit_risk.logs import setup_logging
from credit_risk.settings import ApiSettings


def main() -> int:
    """Start one uvicorn worker (the poller and the log worker are threads of this process)."""
    setup_logging()
    try:
        settings = ApiSettings()
    except ValidationError as e:
        for err in e.errors():
            name = str(err["loc"][0]).upper() if err["loc"] else "?"
            given = "" if err["type"] == "missing" else f" (got {err['input']!r})"
            logging.getLogger("credit_risk.api").error("setting %s: %s%s", name, err["msg"], given)
        return 2
    logging.getLogger().setLevel(settings.log_level.upper())
    uvicorn.run(
        create_app(settings),
        host=settings.api_host,
        port=settings.api_port,
        loop="uvloop",
        http="httptools",
        access_log=settings.api_access_log,
        log_level=settings.log_level.lower(),
        timeout_graceful_shutdown=int(settings.api_shutdown_seconds),
        server_header=False,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
