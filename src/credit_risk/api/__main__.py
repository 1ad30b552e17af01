"""`python -m credit_risk.api`: run the API with uvicorn, settings from the environment."""

import os

# scikit-learn's OpenMP threads fight the server's own threads on a small machine (one row
# gains nothing from them; OMP_NUM_THREADS=1 nearly doubled throughput here). OpenMP reads
# it once, when numpy/scikit-learn load, so it is set before any import below; an explicit
# value from the environment wins.
os.environ.setdefault("OMP_NUM_THREADS", "1")

import logging

import uvicorn

from credit_risk.api.app import create_app
from credit_risk.settings import ApiSettings


def main() -> None:
    """Start one uvicorn worker (the poller and the log worker are threads of this process)."""
    settings = ApiSettings()
    logging.basicConfig(
        level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
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


if __name__ == "__main__":
    main()
