"""Driving the project's docker-compose.yml the way a user does, from the tests.

Every call is `docker-compose ARGS` in the repository root, with the environment saying which
files (the real compose file, plus the stand-in override when MinIO's image is not here), which
project name (so the tier never touches a developer's own stack) and which free host ports.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from support.docker_files import TEST_SECRETS

ROOT = Path(__file__).resolve().parents[2]
OVERRIDE = "tests/docker/standins/docker-compose.standins.yml"
PROJECT = "credit-risk-docker-tier"


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Stack:
    """The compose project under test and the URLs of its published ports."""

    env: dict[str, str]
    mlflow_port: int
    api_port: int
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def mlflow_url(self) -> str:
        return f"http://127.0.0.1:{self.mlflow_port}"

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.api_port}"

    def compose(
        self, *args: str, check: bool = True, timeout: float = 900, env: dict[str, str] | None = None
    ) -> subprocess.CompletedProcess:
        """`docker-compose ARGS` (with `env` over the stack's); on failure (check) raise with its output."""
        result = subprocess.run(
            ["docker-compose", *args],
            cwd=ROOT,
            env={**self.env, **(env or {})},
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        if check and result.returncode != 0:
            raise AssertionError(
                f"docker-compose {' '.join(args)} exited {result.returncode}:\n"
                f"{(result.stdout + result.stderr)[-4000:]}"
            )
        return result

    def container(self, service: str) -> str:
        """The id of the service's (one) container, running or not; "" when there is none."""
        return self.compose("ps", "-q", service).stdout.strip()

    def inspect(self, service: str) -> dict:
        """`docker inspect` of the service's container."""
        cid = self.container(service)
        assert cid, f"no container for service {service}"
        out = subprocess.run(["docker", "inspect", cid], capture_output=True, text=True, check=True).stdout
        return json.loads(out)[0]

    def health(self, service: str) -> str:
        """The container's health status (starting, healthy, unhealthy) or its state."""
        state = self.inspect(service)["State"]
        return state.get("Health", {}).get("Status") or state["Status"]

    def wait_healthy(self, service: str, timeout: float = 180) -> float:
        """Seconds until the service's healthcheck reports healthy; fail with its log if never.

        "unhealthy" is waited through: the engine goes on probing, and on a loaded machine the
        tracking server's first start (schema migrations) outlasts its start_period.
        """
        start = time.monotonic()
        while (status := self.health(service)) != "healthy":
            if status in {"exited", "dead"} or time.monotonic() - start > timeout:
                logs = self.compose("logs", "--tail", "60", service, check=False).stdout
                raise AssertionError(f"{service} is {status} after {time.monotonic() - start:.0f}s:\n{logs}")
            time.sleep(0.5)
        return time.monotonic() - start

    @property
    def person(self) -> tuple[str, str]:
        """The person's account (MANAGE) the stack was started with: what the UI logs in as."""
        return self.env["MLFLOW_TRACKING_USERNAME"], self.env["MLFLOW_TRACKING_PASSWORD"]

    def mlflow(self, path: str, body: dict | None = None, auth: tuple[str, str] | None = None) -> dict:
        """An MLflow REST call through the published port (GET, or POST with a JSON body), as the
        person's account unless `auth` says otherwise (the server refuses anonymous calls)."""
        url = f"{self.mlflow_url}/api/2.0/mlflow/{path}"
        auth = auth or self.person
        response = (
            httpx.get(url, timeout=30, auth=auth)
            if body is None
            else httpx.post(url, json=body, timeout=30, auth=auth)
        )
        assert response.status_code == 200, f"{url}: {response.status_code} {response.text[:500]}"
        return response.json()

    def api(self, path: str, body: dict | None = None, timeout: float = 10) -> tuple[int, dict]:
        """(status, JSON body) of an API call through the published port."""
        url = f"{self.api_url}{path}"
        response = (
            httpx.get(url, timeout=timeout) if body is None else httpx.post(url, json=body, timeout=timeout)
        )
        return response.status_code, response.json()


def image_present(tag: str) -> bool:
    """Whether the engine has an image of that tag."""
    return subprocess.run(["docker", "image", "inspect", tag], capture_output=True).returncode == 0


def make_stack(minio_image: str) -> Stack:
    """The tier's compose environment: own project name, free ports, the override if needed."""
    mlflow_port, api_port, console_port = free_port(), free_port(), free_port()
    files = ["docker-compose.yml"]
    if not image_present(minio_image):  # the real MinIO image, where a registry served it, is used
        files.append(OVERRIDE)
    env = {
        **os.environ,
        "COMPOSE_PROJECT_NAME": PROJECT,
        "COMPOSE_FILE": os.pathsep.join(files),
        "MLFLOW_PORT": str(mlflow_port),
        "API_PORT": str(api_port),
        "MINIO_CONSOLE_PORT": str(console_port),
        # Explicit, so a developer's own .env or shell cannot change what is checked.
        "API_KEY": "",
        "MODEL_NAME": "credit-risk-model",
        "PROMOTE": "auto",
        "MODEL_POLL_SECONDS": "10",
        # The secured stack's passwords (compose refuses to start without them); verify logs in
        # as the person's account.
        **TEST_SECRETS,
        "MLFLOW_TRACKING_USERNAME": TEST_SECRETS["MLFLOW_UI_USERNAME"],
        "MLFLOW_TRACKING_PASSWORD": TEST_SECRETS["MLFLOW_UI_PASSWORD"],
    }
    return Stack(env=env, mlflow_port=mlflow_port, api_port=api_port)
