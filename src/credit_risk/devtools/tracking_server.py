"""Starting a local `mlflow server` as the compose service runs it: for `make run`, tests, benches."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from credit_risk.tracking import wait_healthy


def free_port() -> int:
    """A TCP port on loopback that nobody listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def server_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """The environment for every process we start: telemetry off, no GenAI job runners."""
    env = dict(os.environ)
    env.update(
        MLFLOW_DISABLE_TELEMETRY="true",
        MLFLOW_SERVER_ENABLE_JOB_EXECUTION="false",
        PYTHONUNBUFFERED="1",
    )
    env.update(extra or {})
    return env


def tracking_server_command(
    backend_store_uri: str,
    artifacts_destination: str,
    host: str = "127.0.0.1",
    port: int = 5000,
    workers: int = 1,
    allowed_hosts: str | None = None,
    app_name: str | None = None,
) -> list[str]:
    """The `mlflow server` command line; the compose service passes the same flags.

    `app_name="basic-auth"` turns on MLflow's authentication (the compose stack's), configured by
    the file MLFLOW_AUTH_CONFIG_PATH names in the server's environment.
    """
    hosts = allowed_hosts or f"localhost,localhost:{port},127.0.0.1,127.0.0.1:{port}"
    auth = ["--app-name", app_name] if app_name else []
    return [
        sys.executable, "-m", "mlflow", "server",
        "--backend-store-uri", backend_store_uri,
        "--artifacts-destination", artifacts_destination,
        "--serve-artifacts",  # clients go through the server: they need no S3 credentials
        "--host", host,
        "--port", str(port),
        "--workers", str(workers),
        "--allowed-hosts", hosts,
        *auth,
    ]  # fmt: skip


@dataclass
class TrackingServer:
    """A running `mlflow server` subprocess."""

    process: subprocess.Popen
    url: str
    log_path: Path

    def stop(self, timeout: float = 15.0) -> None:
        """Stop the server and its workers (it runs in its own process group)."""
        if self.process.poll() is None:
            try:
                os.killpg(self.process.pid, 15)
                self.process.wait(timeout)
            except (ProcessLookupError, subprocess.TimeoutExpired):
                os.killpg(self.process.pid, 9)
                self.process.wait()


def launch_tracking_server(
    backend_store_uri: str,
    artifacts_destination: str,
    log_path: Path,
    port: int | None = None,
    env: dict[str, str] | None = None,
    app_name: str | None = None,
) -> TrackingServer:
    """Start `mlflow server` in its own process group without waiting for it to be healthy."""
    port = port or free_port()
    cmd = tracking_server_command(backend_store_uri, artifacts_destination, port=port, app_name=app_name)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab") as log_file:
        process = subprocess.Popen(  # noqa: S603 - our own command line
            cmd, stdout=log_file, stderr=subprocess.STDOUT, env=server_env(env), start_new_session=True
        )
    return TrackingServer(process, f"http://127.0.0.1:{port}", log_path)


def start_tracking_server(
    backend_store_uri: str,
    artifacts_destination: str,
    log_path: Path,
    port: int | None = None,
    env: dict[str, str] | None = None,
    timeout: float = 60.0,
    app_name: str | None = None,
) -> TrackingServer:
    """Start `mlflow server` in its own process group and wait until it is healthy."""
    server = launch_tracking_server(backend_store_uri, artifacts_destination, log_path, port, env, app_name)
    try:
        wait_healthy(server.url, timeout, server.process)
    except Exception as e:
        server.stop()
        raise RuntimeError(f"{e}; see {log_path}:\n{log_path.read_text()[-3000:]}") from e
    return server
