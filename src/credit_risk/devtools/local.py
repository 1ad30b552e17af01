"""`make run`: the whole service on this machine without Docker.

A local `mlflow server` (SQLite and artifacts under mlflow/data/), the real data fetched when
missing, one training run, then the API in the foreground. Ctrl-C or SIGTERM stops everything.
"""

from __future__ import annotations

import argparse
import json
import logging
import shlex
import signal
import socket
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from mlflow.tracking import MlflowClient

from credit_risk.devtools.fetch_data import FetchError, fetch
from credit_risk.devtools.tracking_server import TrackingServer, launch_tracking_server, server_env
from credit_risk.logs import setup_logging
from credit_risk.registry import production_version
from credit_risk.settings import LocalSettings, MlflowClientSettings
from credit_risk.tracking import configure_mlflow, http_get, wait_healthy

log = logging.getLogger("credit_risk.local")


class Shutdown(BaseException):
    """SIGINT or SIGTERM arrived: stop everything and exit cleanly.

    A BaseException, like KeyboardInterrupt, so no `except Exception` on the way swallows it.
    """


class LocalStackError(Exception):
    """The local stack cannot start; the message says why and what to do."""


def _on_signal(signum: int, _frame: object) -> None:
    raise Shutdown(signal.Signals(signum).name)


def _port_free(port: int) -> bool:
    with socket.socket() as s:
        # Same option uvicorn sets, so a socket in TIME_WAIT does not count as taken.
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def check_ports(settings: LocalSettings) -> None:
    """Refuse to start on a taken port, and say whether an MLflow server is what holds it."""
    if not _port_free(settings.mlflow_port):
        status, body = http_get(f"http://127.0.0.1:{settings.mlflow_port}/version")
        holder = f"an MLflow server (version {body.strip()})" if status == 200 else "another program"
        raise LocalStackError(
            f"port {settings.mlflow_port} is already used by {holder}. Stop it (an earlier `make run`? "
            f"press Ctrl-C there), or pick another port: MLFLOW_PORT=5001 make run"
        )
    if not _port_free(settings.api_port):
        raise LocalStackError(
            f"port {settings.api_port} for the API is already in use. Stop what holds it, "
            f"or pick another port: API_PORT=8001 make run"
        )


def training_csv(settings: LocalSettings, csv: Path | None) -> Path:
    """The CSV to train on: the one given, else the default, fetched when missing."""
    if csv is not None:
        if not csv.is_file():
            raise LocalStackError(f"{csv} does not exist")
        return csv
    try:
        return fetch(settings.training_csv)
    except FetchError as e:
        raise LocalStackError(f"{e}. Put cs-training.csv in {settings.training_csv.parent}/ by hand") from e


def _spawn(module: str, args: list[str], env: dict[str, str]) -> subprocess.Popen:
    # Its own session: Ctrl-C reaches only us, and we stop the children in order.
    return subprocess.Popen(  # noqa: S603 - our own modules
        [sys.executable, "-m", module, *args], env=server_env(env), start_new_session=True
    )


def _stop(process: subprocess.Popen | None, timeout: float = 30.0) -> None:
    """SIGTERM a child (the API flushes its prediction log then), SIGKILL after `timeout`."""
    if process is None or process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(timeout)
    except subprocess.TimeoutExpired:
        log.warning("%s did not stop within %.0fs; killing it", process.args[2], timeout)
        process.kill()
        process.wait()


def wait_ready(url: str, process: subprocess.Popen, timeout: float, probe: str = "/health/ready") -> None:
    """Poll one of the API's probes until 200; fail early if the API exits."""
    try:
        wait_healthy(url, timeout, process, path=probe, what="the API")
    except RuntimeError as e:
        raise LocalStackError(f"{e} before it was ready") from e
    except TimeoutError as e:
        raise LocalStackError(str(e)) from e


def has_production_model(tracking_uri: str, model_name: str) -> bool:
    """Whether the registry has a version of `model_name` in Production (the only one the API serves)."""
    return production_version(MlflowClient(tracking_uri), model_name) is not None


def banner(mlflow_url: str, api_url: str, api_key: str | None) -> str:
    """Where to look once everything runs, with a ready-to-paste prediction request."""
    from credit_risk.api.schemas import EXAMPLE_RECORD  # the payload the API documents

    key_header = f" -H 'X-API-Key: {api_key}'" if api_key else ""
    curl = (
        f"curl -s -X POST {api_url}/predict -H 'Content-Type: application/json'{key_header} "
        f"-d {shlex.quote(json.dumps(EXAMPLE_RECORD))}"
    )
    return "\n".join(
        [
            "",
            "The credit-risk service runs locally (Ctrl-C stops everything):",
            f"  MLflow UI   {mlflow_url}",
            f"  API docs    {api_url}/docs",
            f"  model info  curl -s {api_url}/model/info",
            f"  predict     {curl}",
            f"  verify      VERIFY_EXPECT_AUTH=0 MLFLOW_URL={mlflow_url} API_URL={api_url} "
            "./verify_phase2.sh --no-docker",
            "  MLflow authentication is OFF here: a laptop stack, bound to 127.0.0.1. The Docker stack",
            "  turns it on (docs/access-control.md); expose nothing started by `make run`.",
            "",
        ]
    )


@dataclass
class _Children:
    """What `run` started, so that every exit path stops all of it, the API before MLflow."""

    server: TrackingServer | None = None
    trainer: subprocess.Popen | None = None
    api: subprocess.Popen | None = None

    def stop(self) -> None:
        _stop(self.trainer, timeout=10)
        _stop(self.api)
        if self.server is not None:
            self.server.stop()


def _start_tracking_server(settings: LocalSettings, root: Path) -> TrackingServer:
    """`mlflow server` on SQLite and a local artifact folder under `root`, once it is healthy."""
    log.info("starting MLflow at http://localhost:%d (store %s)", settings.mlflow_port, root)
    server = launch_tracking_server(
        backend_store_uri=f"sqlite:///{root / 'mlflow.db'}",
        artifacts_destination=str(root / "artifacts"),
        log_path=root / "mlflow-server.log",
        port=settings.mlflow_port,
    )
    try:
        wait_healthy(server.url, settings.mlflow_start_seconds, server.process)
    except (RuntimeError, TimeoutError) as e:
        server.stop()
        raise LocalStackError(f"{e}; see {server.log_path}") from e
    except BaseException:  # Ctrl-C while it starts: `run` does not hold it yet
        server.stop()
        raise
    configure_mlflow(MlflowClientSettings(mlflow_tracking_uri=server.url))
    return server


def _wait_for_api(settings: LocalSettings, tracking_uri: str, api: subprocess.Popen, mlflow_url: str) -> None:
    """Ready when a version is in Production; otherwise alive, with a warning that says why not ready."""
    api_local = f"http://127.0.0.1:{settings.api_port}"
    if has_production_model(tracking_uri, settings.model_name):
        wait_ready(api_local, api, settings.api_ready_seconds)
        return
    wait_ready(api_local, api, settings.api_ready_seconds, probe="/health/live")
    # The API follows the registry: it starts serving as soon as a version is promoted.
    log.warning(
        "no version of %s is in Production (the trainer said why above): the API answers 503 "
        "until you promote one in the MLflow UI (%s, Models) or train a better model",
        settings.model_name,
        mlflow_url,
    )


def run(settings: LocalSettings, csv: Path | None) -> int:
    """Start the tracking server, train once, serve the API until a signal; return the exit code."""
    check_ports(settings)
    csv = training_csv(settings, csv)
    root = settings.local_mlflow_dir.resolve()
    root.mkdir(parents=True, exist_ok=True)
    mlflow_url = f"http://localhost:{settings.mlflow_port}"
    api_url = f"http://localhost:{settings.api_port}"
    children = _Children()
    try:
        children.server = server = _start_tracking_server(settings, root)
        env = {"MLFLOW_TRACKING_URI": server.url}
        log.info("training on %s", csv)
        children.trainer = _spawn("credit_risk.train", ["--csv", str(csv)], env)
        if (code := children.trainer.wait()) != 0:
            log.error("the trainer failed (exit code %d); see its messages above", code)
            return code
        api_env = {
            **env,
            "API_HOST": "127.0.0.1",
            "API_PORT": str(settings.api_port),
            "PREDICTION_LOG_SPOOL_DIR": str(root / "spool"),
        }
        children.api = _spawn("credit_risk.api", [], api_env)
        _wait_for_api(settings, server.url, children.api, mlflow_url)
        print(banner(mlflow_url, api_url, settings.api_key), flush=True)  # the CLI speaking to its user
        code = children.api.wait()
        log.error("the API exited with code %d", code)
        return code or 1
    except Shutdown as e:
        log.info("%s received: stopping the API and the MLflow server", e)
        return 0
    finally:
        # Signals now would interrupt the clean stop itself.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        children.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--csv", type=Path, help="train on this file instead of data/cs-training.csv")
    parser.add_argument("--mlflow-dir", type=Path, help="where the local MLflow keeps its data")
    args = parser.parse_args(argv)
    setup_logging()
    settings = LocalSettings()
    if args.mlflow_dir is not None:
        settings = settings.model_copy(update={"local_mlflow_dir": args.mlflow_dir})
    signal.signal(signal.SIGINT, _on_signal)
    signal.signal(signal.SIGTERM, _on_signal)
    try:
        return run(settings, args.csv)
    except LocalStackError as e:
        log.error("%s", e)
        return 1
    except Shutdown:
        return 0


if __name__ == "__main__":
    sys.exit(main())
