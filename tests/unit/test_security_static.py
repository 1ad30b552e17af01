"""Nobody gets in, read from code and Docker files: the API key, non-root, no S3 credentials, no pickle.

Checks already in integration/test_api_input.py (401 without/with a wrong key, the key never echoed in a
response) and unit/test_docker_files.py (last USER non-root, no AWS_* in the trainer/api compose
environment, no credentials in an image) are not repeated here.
"""

from __future__ import annotations

import ast
import os
import re
from pathlib import Path

import pytest
import yaml

from credit_risk.api import auth
from credit_risk.settings import ApiSettings, MlflowClientSettings, TrainerSettings
from support import ROOT

SRC = ROOT / "src"
DOCKERFILES = ["Dockerfile.api", "Dockerfile.trainer", "mlflow/Dockerfile"]
DEPLOYMENT_FILES = [*DOCKERFILES, "docker-compose.yml", ".env.example", "verify_phase2.sh", "Makefile"]
PICKLE_MODULES = {"pickle", "cPickle", "_pickle", "cloudpickle", "joblib", "dill", "shelve", "marshal"}
# Loaders that unpickle, or read the skops allow-list from the model itself.
UNSAFE_CALLS = {"load_model", "read_pickle", "load_pickle", "_load_pyfunc"}


def _python_sources() -> list[Path]:
    return sorted(SRC.rglob("*.py"))


# --- the API key ---------------------------------------------------------------------------------------


def test_api_key_is_compared_in_constant_time_and_never_with_equality():
    tree = ast.parse(Path(auth.__file__).read_text())
    (func,) = [
        n
        for n in ast.walk(tree)
        if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef) and n.name == "require_api_key"
    ]
    calls = [ast.unparse(n.func) for n in ast.walk(func) if isinstance(n, ast.Call)]
    assert "hmac.compare_digest" in calls
    # `key == expected` would leak the matching prefix length through timing.
    for node in ast.walk(func):
        if isinstance(node, ast.Compare) and any(isinstance(op, ast.Eq | ast.NotEq) for op in node.ops):
            operands = {ast.unparse(x) for x in [node.left, *node.comparators]}
            assert not operands & {"key", "expected"}, ast.unparse(node)


@pytest.mark.parametrize("dockerfile", DOCKERFILES)
def test_container_switches_to_a_non_root_user_before_its_command(dockerfile):
    lines = [line.strip() for line in (ROOT / dockerfile).read_text().replace("\\\n", " ").splitlines()]
    users = [i for i, line in enumerate(lines) if line.startswith("USER ")]
    cmd = max(i for i, line in enumerate(lines) if line.startswith(("CMD ", "ENTRYPOINT ")))
    assert users and users[-1] < cmd, "USER must come before CMD"
    uid = lines[users[-1]].split()[1].split(":")[0]
    assert uid.isdigit() and int(uid) >= 1000, f"run as an unprivileged numeric uid, not {uid!r}"
    created = re.search(r"useradd[^&]*--uid (\d+)", " ".join(lines))
    assert created and created[1] == uid, "the uid the image runs as is created in it"


def test_compose_never_runs_a_service_as_root_or_privileged():
    services = yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]
    for name, spec in services.items():
        assert str(spec.get("user", "")).split(":")[0] not in {"root", "0"}, name
        assert not spec.get("privileged") and not spec.get("cap_add"), name
        volumes = [str(v) for v in spec.get("volumes", [])]
        assert not any("docker.sock" in v for v in volumes), name


def test_trainer_and_api_have_no_way_to_receive_s3_credentials():
    services = yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]
    for name, dockerfile in [("trainer", "Dockerfile.trainer"), ("api", "Dockerfile.api")]:
        # An env_file would pass every variable of .env, the MinIO root password included.
        assert "env_file" not in services[name], name
        assert not re.search(r"\bAWS_|MLFLOW_S3_", (ROOT / dockerfile).read_text()), dockerfile
    for settings in (MlflowClientSettings, TrainerSettings, ApiSettings):
        fields = {f.lower() for f in settings.model_fields}
        assert not {f for f in fields if re.search(r"aws|s3|secret|access_key", f)}, settings.__name__


# --- model loading never unpickles ---------------------------------------------------------------------


def test_no_module_imports_a_pickle_library_or_an_unsafe_loader():
    for path in _python_sources():
        tree = ast.parse(path.read_text(), str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names = {a.name.split(".")[0] for a in node.names}
            elif isinstance(node, ast.ImportFrom):
                names = {(node.module or "").split(".")[0], *(a.name for a in node.names)}
            else:
                names = set()
            assert not names & PICKLE_MODULES, f"{path}:{node.lineno} imports {names & PICKLE_MODULES}"
            if isinstance(node, ast.Call):
                called = ast.unparse(node.func)
                assert called.rsplit(".", 1)[-1] not in UNSAFE_CALLS, f"{path}:{node.lineno} calls {called}"
                keywords = {k.arg: ast.unparse(k.value) for k in node.keywords}
                assert keywords.get("allow_pickle") != "True", f"{path}:{node.lineno}"
                if called == "skops.io.load":
                    assert keywords.get("trusted") == "TRUSTED_TYPES", f"{path}:{node.lineno}: our list only"


def test_pickle_deserialization_is_never_allowed_anywhere():
    flag = "MLFLOW_ALLOW_PICKLE_DESERIALIZATION"
    for path in _python_sources():
        # Only a string literal that *is* the name could set it (a docstring may mention it).
        constants = {n.value for n in ast.walk(ast.parse(path.read_text())) if isinstance(n, ast.Constant)}
        assert flag not in constants, path
    for name in DEPLOYMENT_FILES:
        assert flag not in (ROOT / name).read_text(), name
    assert flag not in os.environ or os.environ[flag].lower() not in {"1", "true"}


def test_compose_mlflow_keeps_the_security_middleware_on():
    command = yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]["mlflow"]["command"]
    assert "--allowed-hosts" in command
    hosts = command[command.index("--allowed-hosts") + 1]
    assert "*" not in hosts.split(","), hosts
    assert "--disable-security-middleware" not in command


# --- the tracking server authenticates (issue 13) ------------------------------------------------------

SECRET_VARIABLES = {
    *("MLFLOW_AUTH_ADMIN_PASSWORD", "MLFLOW_FLASK_SERVER_SECRET_KEY", "MLFLOW_TRACKING_PASSWORD"),
    *("TRAINER_MLFLOW_PASSWORD", "API_MLFLOW_PASSWORD", "MLFLOW_UI_PASSWORD"),
}


def _compose_raw() -> dict:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]


def test_compose_and_image_run_the_tracking_server_with_basic_auth():
    command = _compose_raw()["mlflow"]["command"]
    assert command[command.index("--app-name") + 1] == "basic-auth"
    cmd = (ROOT / "mlflow" / "Dockerfile").read_text()
    assert '"--app-name", "basic-auth"]' in cmd  # the image's own default authenticates too
    assert "MLFLOW_AUTH_CONFIG_PATH=/etc/mlflow/basic_auth.ini" in cmd
    assert "COPY mlflow/basic_auth.ini /etc/mlflow/basic_auth.ini" in cmd


def test_auth_config_denies_by_default_and_holds_no_secret():
    import configparser

    config = configparser.ConfigParser()
    config.read(ROOT / "mlflow" / "basic_auth.ini")
    section = config["mlflow"]
    assert section["default_permission"] == "NO_PERMISSIONS"
    assert section.getboolean("grant_default_workspace_access") is False
    # PostgreSQL beside the backend store, every connection detail from libpq's PG* variables.
    assert section["database_uri"] == "postgresql+psycopg2://"
    assert "admin_password" not in section
    # The credential cache: short, since a changed password stays valid on another worker that long.
    assert 0 < section.getint("auth_cache_ttl_seconds") <= 60


def test_every_password_in_compose_is_required_and_has_no_default():
    for name, spec in _compose_raw().items():
        for key, value in (spec.get("environment") or {}).items():
            if key in SECRET_VARIABLES:
                assert re.fullmatch(r"\$\{\w+:\?[^}]+\}", str(value)), f"{name}: {key}={value}"


def test_the_admin_password_reaches_only_the_server_and_the_accounts_job():
    services = _compose_raw()
    holders = {n for n, s in services.items() if "MLFLOW_ADMIN_PASSWORD" in str(s.get("environment"))}
    assert holders == {"mlflow", "create-accounts"}
    for name, own in [("trainer", "TRAINER_MLFLOW_PASSWORD"), ("api", "API_MLFLOW_PASSWORD")]:
        env = services[name]["environment"]
        assert env["MLFLOW_TRACKING_PASSWORD"].startswith("${" + own + ":?"), name
        passwords = re.findall(r"\$\{(\w*PASSWORD\w*)", str(env))
        assert set(passwords) == {own}, f"{name} gets {passwords}"


def test_env_example_ships_no_mlflow_password_and_git_ignores_dot_env():
    example = dict(
        line.split("=", 1)
        for line in (ROOT / ".env.example").read_text().splitlines()
        if line and not line.startswith("#")
    )
    for name in [
        "MLFLOW_ADMIN_PASSWORD",
        "MLFLOW_SECRET_KEY",
        "TRAINER_MLFLOW_PASSWORD",
        "API_MLFLOW_PASSWORD",
        "MLFLOW_UI_PASSWORD",
    ]:
        assert example[name] == "", f".env.example must leave {name} empty"
    assert ".env" in (ROOT / ".gitignore").read_text().splitlines()


def test_mlflow_passwords_are_secret_strings():
    for settings in (MlflowClientSettings, TrainerSettings, ApiSettings):
        field = settings.model_fields["mlflow_tracking_password"]
        assert "SecretStr" in str(field.annotation), settings.__name__
    secret = "do-not-show-me"  # noqa: S105 - a test value
    shown = repr(ApiSettings(mlflow_tracking_uri="http://x", mlflow_tracking_password=secret))
    assert "do-not-show-me" not in shown
