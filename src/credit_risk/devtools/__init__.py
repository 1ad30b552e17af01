"""Developer tooling, not part of the service: `make run`, a local `mlflow server`, the data fetcher."""
