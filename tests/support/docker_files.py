"""Reading the Docker files as compose and docker would: variables, services, CMD and ENV lines."""

from __future__ import annotations

import json
import re

import mlflow.environment_variables
import yaml

from support import ROOT

DOCKERFILES = ["Dockerfile.api", "Dockerfile.trainer", "mlflow/Dockerfile"]
LONG_RUNNING = ["postgres", "minio", "mlflow", "api"]
MLFLOW_VARIABLES = {
    v.name for v in vars(mlflow.environment_variables).values() if isinstance(getattr(v, "name", None), str)
}
# Read by boto3 inside the tracking server (artifacts in MinIO), not by our code.
S3_CLIENT_VARIABLES = {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"}
# GIT_PYTHON_REFRESH: read by GitPython (imported by MLflow), silences its no-git warning.
PYTHON_VARIABLES = {
    "PYTHONUNBUFFERED",
    "PYTHONDONTWRITEBYTECODE",
    "PIP_DISABLE_PIP_VERSION_CHECK",
    "GIT_PYTHON_REFRESH",
}
# Read by libpq inside the tracking server (its auth store's connection, mlflow/basic_auth.ini).
LIBPQ_VARIABLES = {"PGHOST", "PGUSER", "PGPASSWORD", "PGDATABASE"}
VARIABLE = re.compile(r"\$\{(\w+)(?::-([^}]*))?\}")
# `${VAR:?message}`: compose refuses to start while VAR is unset or empty.
REQUIRED = re.compile(r"\$\{(\w+):\?([^}]*)\}")
# What the static checks put in .env for the required variables (the repository holds no real one).
TEST_SECRETS = {
    "MLFLOW_ADMIN_PASSWORD": "test-admin-password",
    "MLFLOW_SECRET_KEY": "test-secret-key-for-the-ui",
    "TRAINER_MLFLOW_PASSWORD": "test-trainer-password",
    "API_MLFLOW_PASSWORD": "test-api-password-1",
    "MLFLOW_UI_USERNAME": "test-person",
    "MLFLOW_UI_PASSWORD": "test-person-password",
}


def env_example() -> dict[str, str]:
    """The variables of .env.example (what compose reads from .env)."""
    lines = (ROOT / ".env.example").read_text().splitlines()
    pairs = (line.split("=", 1) for line in lines if line.strip() and not line.startswith("#"))
    return {k.strip(): v.strip() for k, v in pairs}


def interpolate(value: object, variables: dict[str, str]) -> object:
    """Compose's `${VAR:-default}` substitution, recursively; `$$` is a literal `$`."""
    if isinstance(value, dict):
        return {k: interpolate(v, variables) for k, v in value.items()}
    if isinstance(value, list):
        return [interpolate(v, variables) for v in value]
    if isinstance(value, str):
        value = REQUIRED.sub(lambda m: variables.get(m[1], ""), value)
        return VARIABLE.sub(lambda m: variables.get(m[1], m[2] or ""), value).replace("$$", "$")
    return value


def required_variables() -> dict[str, str]:
    """The `${VAR:?message}` variables of docker-compose.yml, with their messages."""
    return {m[1]: m[2] for m in REQUIRED.finditer((ROOT / "docker-compose.yml").read_text())}


def compose(variables: dict[str, str] | None = None) -> dict:
    """docker-compose.yml with its variables resolved as compose would with `variables` as .env."""
    raw = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    return interpolate(raw, variables or {})


def service_env(name: str, variables: dict[str, str] | None = None) -> dict[str, str]:
    """A service's `environment:` as strings."""
    env = compose(variables)["services"][name].get("environment", {})
    return {k: str(v) for k, v in env.items()}


def dockerfile_cmd(path: str) -> list[str]:
    """The exec-form CMD of a Dockerfile."""
    lines = (ROOT / path).read_text().splitlines()
    cmd = [line for line in lines if line.startswith("CMD ")]
    assert len(cmd) == 1, f"{path} must have exactly one CMD"
    return json.loads(cmd[0].removeprefix("CMD "))


def dockerfile_env(path: str) -> set[str]:
    """Names set by ENV instructions (the multi-line `ENV A=1 \\ B=2` form)."""
    text = (ROOT / path).read_text().replace("\\\n", " ")
    names: set[str] = set()
    for line in text.splitlines():
        if line.startswith("ENV "):
            names |= set(re.findall(r"(\w+)=", line))
    return names
