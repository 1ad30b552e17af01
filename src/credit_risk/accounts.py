"""The tracking server's accounts, one per service with least privilege: `python -m credit_risk.accounts`.

Runs as the server's admin (MLFLOW_TRACKING_USERNAME / MLFLOW_TRACKING_PASSWORD), as the compose
job `create-accounts` before the trainer and the API start. Idempotent: it runs on every `up`.

- The experiments and the registered model exist, created by the admin, so that no service
  owns them (a creator gets MANAGE on what it creates).
- trainer: EDIT on the training experiment and the registered model (runs, versions, stages).
- API: READ on the registered model and the training experiment (a version's run: its metrics and
  artifacts), EDIT on the predictions and outcomes experiments. Nothing it could promote or delete with.
- a person (the UI, the monitoring report, outcome files): MANAGE on the model and every experiment.

Each account's password is set to the one in the settings every time, so changing it in `.env`
and running the job again rotates it. Exit 0 done, 1 refused or failed, 3 server unreachable.
"""

from __future__ import annotations

import logging
import sys
from dataclasses import dataclass

from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient
from mlflow.utils.credentials import get_default_host_creds
from mlflow.utils.rest_utils import http_request
from pydantic import ValidationError

from credit_risk.logs import first_line, setup_logging
from credit_risk.settings import AccountsSettings
from credit_risk.tracking import (
    TrackingAccessDenied,
    TrackingServerUnavailable,
    configure_mlflow,
    get_or_create_experiment,
    wait_for_tracking_server,
)

log = logging.getLogger("credit_risk.accounts")

USERS = "/api/2.0/mlflow/users"
GRANT = "/api/3.0/mlflow/users/permissions/grant"
REVOKE = "/api/3.0/mlflow/users/permissions/revoke"


@dataclass(frozen=True)
class Grant:
    """One permission of one account on one resource."""

    username: str
    resource_type: str  # "experiment" (by id) or "registered_model" (by name)
    resource_id: str
    permission: str
    what: str  # for the log: "experiment 'credit-risk-predictions'"


def plan(
    settings: AccountsSettings,
    training_id: str,
    predictions_id: str,
    outcomes_id: str = "",
    monitoring_id: str = "",
) -> list[Grant]:
    """Every grant the stack needs, given the experiments' ids (outcomes and monitoring: when given)."""
    training = ("experiment", training_id, f"experiment '{settings.training_experiment}'")
    predictions = ("experiment", predictions_id, f"experiment '{settings.prediction_experiment}'")
    outcomes = ("experiment", outcomes_id, f"experiment '{settings.outcome_experiment}'")
    monitoring = ("experiment", monitoring_id, f"experiment '{settings.monitoring_experiment}'")
    model = ("registered_model", settings.model_name, f"registered model '{settings.model_name}'")
    trainer, api, person = (
        settings.trainer_mlflow_username,
        settings.api_mlflow_username,
        settings.mlflow_ui_username,
    )
    rows = [
        (trainer, training, "EDIT"),
        (trainer, model, "EDIT"),
        (api, model, "READ"),
        (api, training, "READ"),
        (api, predictions, "EDIT"),
        (person, training, "MANAGE"),
        (person, predictions, "MANAGE"),
        (person, model, "MANAGE"),
    ]
    if outcomes_id:  # POST /outcomes writes there; a person records outcomes from a CSV
        rows += [(api, outcomes, "EDIT"), (person, outcomes, "MANAGE")]
    if monitoring_id:  # the offline report (python -m credit_risk.monitor) runs as a person
        rows += [(person, monitoring, "MANAGE")]
    return [Grant(user, rtype, rid, perm, what) for user, (rtype, rid, what), perm in rows]


class AccountsError(Exception):
    """The basic-auth API refused an admin call; `error_code` is MLflow's (RESOURCE_ALREADY_EXISTS...)."""

    def __init__(self, message: str, error_code: str):
        super().__init__(message)
        self.error_code = error_code


class AccountsAdmin:
    """The admin side of MLflow's basic-auth REST API, through MLflow's own HTTP client."""

    def __init__(self, uri: str):
        self._creds = get_default_host_creds(uri)

    def _call(self, endpoint: str, method: str, **kwargs) -> dict:
        response = http_request(self._creds, endpoint, method, max_retries=2, timeout=15, **kwargs)
        if response.status_code != 200:
            # The body is MLflow's message (never our request): e.g. "Password must be at least ...".
            raise AccountsError(
                f"{method} {endpoint} answered {response.status_code}: {response.text[:300]}",
                _error_code(response),
            )
        return response.json() if response.content else {}

    def ensure_user(self, username: str, password: str) -> bool:
        """Create the user, or set its password to `password`; True when it was created."""
        response = http_request(self._creds, f"{USERS}/get", "GET", params={"username": username}, timeout=15)
        if response.status_code == 200:
            self._call(f"{USERS}/update-password", "PATCH", json={"username": username, "password": password})
            return False
        self._call(f"{USERS}/create", "POST", json={"username": username, "password": password})
        return True

    def grant(self, grant: Grant) -> None:
        """Give `grant.username` exactly `grant.permission` on the resource (replacing another level)."""
        key = {"username": grant.username, "resource_type": grant.resource_type}
        key["resource_id"] = grant.resource_id
        body = {**key, "permission": grant.permission}
        try:
            self._call(GRANT, "POST", json=body)
        except AccountsError as e:
            if e.error_code != "RESOURCE_ALREADY_EXISTS":
                raise
            # A grant on this resource exists, perhaps at another level: the job's level wins.
            self._call(REVOKE, "POST", json=key)
            self._call(GRANT, "POST", json=body)


def _error_code(response) -> str:
    try:
        return str(response.json().get("error_code", "INTERNAL_ERROR"))
    except ValueError:
        return "INTERNAL_ERROR"


def ensure_registered_model(client: MlflowClient, name: str) -> None:
    """Create the registered model if missing, so the admin owns it rather than a service."""
    try:
        client.get_registered_model(name)
    except MlflowException as e:
        if e.error_code != "RESOURCE_DOES_NOT_EXIST":
            raise
        try:
            client.create_registered_model(name)
        except MlflowException as race:
            if race.error_code != "RESOURCE_ALREADY_EXISTS":
                raise


def provision(settings: AccountsSettings) -> list[Grant]:
    """Create or update the accounts and their grants; return the grants."""
    configure_mlflow(settings)
    client = wait_for_tracking_server(settings.mlflow_tracking_uri, settings.mlflow_wait_seconds)
    training_id = get_or_create_experiment(client, settings.training_experiment)
    predictions_id = get_or_create_experiment(client, settings.prediction_experiment)
    outcomes_id = get_or_create_experiment(client, settings.outcome_experiment)
    monitoring_id = get_or_create_experiment(client, settings.monitoring_experiment)
    ensure_registered_model(client, settings.model_name)
    admin = AccountsAdmin(settings.mlflow_tracking_uri)
    for username, password in [
        (settings.trainer_mlflow_username, settings.trainer_mlflow_password),
        (settings.api_mlflow_username, settings.api_mlflow_password),
        (settings.mlflow_ui_username, settings.mlflow_ui_password),
    ]:
        created = admin.ensure_user(username, password.get_secret_value())
        log.info("account %s %s", username, "created" if created else "exists; password set")
    grants = plan(settings, training_id, predictions_id, outcomes_id, monitoring_id)
    for grant in grants:
        admin.grant(grant)
        log.info("account %s: %s on %s", grant.username, grant.permission, grant.what)
    return grants


def main() -> int:
    """Run the job and return its exit code."""
    setup_logging()
    try:
        settings = AccountsSettings()
    except ValidationError as e:
        missing = sorted({str(err["loc"][0]).upper() for err in e.errors()})
        log.error("create-accounts: set %s (see .env.example)", ", ".join(missing))
        return 1
    try:
        provision(settings)
    except TrackingServerUnavailable as e:
        log.error("%s", e)
        return 3
    except (TrackingAccessDenied, AccountsError, MlflowException) as e:
        log.error("create-accounts failed: %s", first_line(e))
        return 1
    log.info("accounts ready on %s", settings.mlflow_tracking_uri)
    return 0


if __name__ == "__main__":
    sys.exit(main())
