"""Settings for each process, read from the environment in this one place."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

# The promotion gate's modes: `auto` applies the gate, `always` promotes, `never` registers only.
PromoteMode = Literal["auto", "always", "never"]


class MlflowClientSettings(BaseSettings):
    """What every MLflow client of ours needs; MLflow's own variable names are kept."""

    model_config = SettingsConfigDict(env_file=None, extra="ignore")

    # min_length: an empty value would make MLflow quietly fall back to a local ./mlflow.db.
    mlflow_tracking_uri: str = Field(
        min_length=1,
        description="Where the tracking server is, e.g. http://mlflow:5000 (MLflow's own variable).",
    )
    # The account on a tracking server that authenticates (`mlflow server --app-name basic-auth`).
    # MLflow's own variables; SecretStr keeps the password out of every repr, log and error.
    mlflow_tracking_username: str | None = None
    mlflow_tracking_password: SecretStr | None = None
    # MLflow's client retries a failing call for minutes by default; ours fail in seconds.
    mlflow_http_request_max_retries: int = 2
    mlflow_http_request_timeout: int = 10
    mlflow_http_request_backoff_factor: int = 1
    # How long to wait for the tracking server at start before giving up.
    mlflow_wait_seconds: float = 60.0


class TrainerSettings(MlflowClientSettings):
    """The trainer's settings; the CLI's options override them."""

    experiment: str = "credit-risk-prediction"
    model_name: str = "credit-risk-model"
    promote: PromoteMode = "auto"
    min_auc: float = Field(0.75, ge=0.0, le=1.0)
    seed: int = 42
    # The tracking server as the user's browser reaches it, for the run link the trainer ends with
    # (in compose, http://mlflow:5000 is a name only the containers know). Unset: the tracking URI.
    mlflow_public_url: str | None = None
    # OpenMP threads for fitting and scoring. One, because on a busy 2-core machine OpenMP's
    # spin-waiting made 2 threads 4-6x slower than 1 (measured); on an idle one 1 costs ~1 s.
    train_threads: int = Field(1, ge=1)


class ApiSettings(MlflowClientSettings):
    """The API's settings (`python -m credit_risk.api`)."""

    api_host: str = "0.0.0.0"
    api_port: int = Field(8000, ge=1, le=65535)
    model_name: str = "credit-risk-model"
    model_poll_seconds: float = Field(10.0, gt=0)
    api_key: str | None = None
    max_batch_size: int = Field(10_000, ge=1)
    # Reasons given with a decline (issue 11; Regulation B: more than four is not likely to help). 0: none.
    max_reasons: int = Field(4, ge=0, le=13)
    max_body_bytes: int = Field(8 * 1024 * 1024, ge=1024)
    prediction_experiment: str = "credit-risk-predictions"
    prediction_log_queue_size: int = Field(100_000, ge=1)
    prediction_log_flush_seconds: float = Field(1.0, gt=0)
    prediction_log_run_max_records: int = Field(100_000, ge=1)
    prediction_log_spool_dir: Path = Path("spool")
    prediction_logging: bool = True
    log_level: str = "info"
    # Inputs and outputs go to the run as JSON-lines artifacts of this many records (or this old).
    prediction_log_chunk_records: int = Field(10_000, ge=1)
    prediction_log_chunk_seconds: float = Field(60.0, gt=0)
    # Off by default: one log line per prediction costs throughput; /metrics counts requests.
    api_access_log: bool = False
    # How long SIGTERM waits for in-flight requests and the prediction-log flush.
    api_shutdown_seconds: float = Field(20.0, gt=0)
    # Predictions per served version in the live stability window (GET /monitoring/stability).
    stability_window: int = Field(10_000, ge=10)
    # false: no live window (the endpoint answers 503, no PSI gauges); for measuring its cost.
    stability_monitoring: bool = True
    # Observed outcomes (POST /outcomes) go to runs of this experiment.
    outcome_experiment: str = "credit-risk-outcomes"


class MonitorSettings(MlflowClientSettings):
    """The offline stability and performance report (`python -m credit_risk.monitor`)."""

    model_name: str = "credit-risk-model"
    prediction_experiment: str = "credit-risk-predictions"
    monitoring_experiment: str = "credit-risk-monitoring"
    outcome_experiment: str = "credit-risk-outcomes"


class LocalSettings(BaseSettings):
    """`make run` (`python -m credit_risk.local`): the whole flow on this machine, no Docker."""

    model_config = SettingsConfigDict(env_file=None, extra="ignore")

    mlflow_port: int = Field(5000, ge=1, le=65535)
    api_port: int = Field(8000, ge=1, le=65535)
    # SQLite database, artifacts, server log and prediction spool of the local stack (ignored by git).
    local_mlflow_dir: Path = Path("mlflow/data")
    training_csv: Path = Path("data/cs-training.csv")
    # The trainer and the API read the same variable; here it is only to check the registry.
    model_name: str = "credit-risk-model"
    # Only to print a working curl line; the API reads its own API_KEY.
    api_key: str | None = None
    mlflow_start_seconds: float = Field(120.0, gt=0)
    api_ready_seconds: float = Field(120.0, gt=0)


class AccountsSettings(MlflowClientSettings):
    """`python -m credit_risk.accounts` (the compose job `create-accounts`): who may do what.

    It runs as the tracking server's admin (MLFLOW_TRACKING_USERNAME/PASSWORD); the other
    passwords are the ones it gives the service accounts and the person's UI account.
    """

    mlflow_tracking_username: str = Field(min_length=1)
    mlflow_tracking_password: SecretStr
    training_experiment: str = "credit-risk-prediction"
    prediction_experiment: str = "credit-risk-predictions"
    outcome_experiment: str = "credit-risk-outcomes"
    monitoring_experiment: str = "credit-risk-monitoring"
    model_name: str = "credit-risk-model"
    trainer_mlflow_username: str = "credit-risk-trainer"
    trainer_mlflow_password: SecretStr
    api_mlflow_username: str = "credit-risk-api"
    api_mlflow_password: SecretStr
    mlflow_ui_username: str = Field(min_length=1)
    mlflow_ui_password: SecretStr
