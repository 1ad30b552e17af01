"""Real backing services the stack and fault tests start, stop, kill and restart themselves.

- `postgres_database`: a fresh database on the machine's PostgreSQL (127.0.0.1:5432, trust auth);
- `PrivatePostgres`: a PostgreSQL instance of the test's own (initdb + pg_ctl), so a test can
  restart it without touching the cluster other tests use;
- `MotoServer`: moto's standalone S3 server (MinIO's stand-in) with the artifact bucket;
- `RestartableServer`: an `mlflow server` that can be stopped, killed and started again on the
  same port and store; with `auth=True`, MLflow's basic-auth app as the compose stack runs it.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

import boto3

from credit_risk.devtools.tracking_server import TrackingServer, free_port, start_tracking_server
from support import ROOT
from support.requirements import postgres_bin_dir

# CI's PostgreSQL (trust auth); STACK_POSTGRES_DSN points the tests at another server.
POSTGRES_DSN = os.environ.get("STACK_POSTGRES_DSN", "host=127.0.0.1 port=5432 user=postgres dbname=postgres")
BUCKET = "mlflow"
S3_ENV = {"AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test", "AWS_DEFAULT_REGION": "us-east-1"}
# The built-in admin of every authenticated RestartableServer (MLflow sets it at the first start).
AUTH_ADMIN = ("admin", f"admin-{uuid.uuid4().hex}")


def http_status(url: str) -> int:
    """The status of a GET; 0 when nothing answers."""
    try:
        with urllib.request.urlopen(url, timeout=2) as r:  # noqa: S310 - loopback
            return r.status
    except urllib.error.HTTPError as e:
        return e.code
    except (urllib.error.URLError, OSError):
        return 0


def wait_for_status(url: str, want: int, timeout: float, process: subprocess.Popen, log_path: Path) -> None:
    """Poll `url` until it answers `want`; AssertionError (with the log's tail) if the process dies."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(
                f"{process.args} exited with {process.returncode}:\n{log_path.read_text()[-3000:]}"
            )
        if http_status(url) == want:
            return
        time.sleep(0.3)
    raise AssertionError(
        f"{url} did not answer {want} within {timeout:.0f}s:\n{log_path.read_text()[-3000:]}"
    )


@contextlib.contextmanager
def postgres_database(dsn: str = POSTGRES_DSN, prefix: str = "credit_risk") -> Iterator[str]:
    """A fresh database (dropped afterwards); yields its SQLAlchemy URI for MLflow.

    Raises psycopg2.OperationalError when the server is not reachable, before yielding.
    """
    import psycopg2

    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    admin = psycopg2.connect(dsn, connect_timeout=3)
    admin.autocommit = True
    try:
        with admin.cursor() as cur:
            cur.execute(f'CREATE DATABASE "{name}"')
        params = admin.get_dsn_parameters()
        yield f"postgresql+psycopg2://{params['user']}@{params['host']}:{params['port']}/{name}"
    finally:
        with admin.cursor() as cur:
            cur.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.close()


class PrivatePostgres:
    """A PostgreSQL instance of our own: its data directory, its socket, a free port.

    The binaries are found by `postgres_bin_dir` (any version). PostgreSQL refuses to run as root;
    as root it runs as the `postgres` user, and its directory is made with tempfile (pytest's
    tmp_path is private to root).
    """

    def __init__(self):
        bin_dir = postgres_bin_dir()
        if bin_dir is None:
            raise FileNotFoundError("initdb/pg_ctl not found ($PG_BIN, PATH, pg_config, /usr/lib/postgresql)")
        self.bin = bin_dir
        self.port = free_port()
        self.root = Path(tempfile.mkdtemp(prefix="credit-risk-pg-"))
        self.data = self.root / "data"
        self.log_path = self.root / "postgres.log"
        self._as_postgres = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
        if self._as_postgres:
            shutil.chown(self.root, "postgres")

    @property
    def uri(self) -> str:
        """MLflow's backend store URI for the `mlflow` database."""
        return f"postgresql+psycopg2://postgres@127.0.0.1:{self.port}/mlflow"

    def _run(self, *args: str) -> None:
        subprocess.run([*self._as_postgres, *args], check=True, capture_output=True, timeout=120)

    def _pg_ctl(self, *args: str) -> None:
        options = f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 -c fsync=off"
        self._run(
            str(self.bin / "pg_ctl"),
            "-D",
            str(self.data),
            "-l",
            str(self.log_path),
            "-o",
            options,
            "-w",
            *args,
        )

    def start(self) -> None:
        """initdb on first use, start, and create the `mlflow` database."""
        if not self.data.exists():
            self._run(
                str(self.bin / "initdb"), "-D", str(self.data), "-A", "trust", "-U", "postgres", "--no-sync"
            )
            self._pg_ctl("start")
            self._run(
                str(self.bin / "createdb"),
                "-h",
                "127.0.0.1",
                "-p",
                str(self.port),
                "-U",
                "postgres",
                "mlflow",
            )
        else:
            self._pg_ctl("start")

    def stop(self, mode: str = "fast") -> None:
        """Stop the server (fast: active sessions are disconnected, as in a real restart)."""
        self._pg_ctl("stop", "-m", mode)

    def restart(self) -> None:
        """`pg_ctl restart -m fast`: every open connection is cut."""
        self._pg_ctl("restart", "-m", "fast")

    def remove(self) -> None:
        """Stop (if running) and delete the data directory."""
        with contextlib.suppress(subprocess.CalledProcessError):
            self.stop("immediate")
        shutil.rmtree(self.root, ignore_errors=True)


def boto_credentials() -> dict[str, str]:
    """boto3 keyword arguments for moto's fake account."""
    return {
        "aws_access_key_id": S3_ENV["AWS_ACCESS_KEY_ID"],
        "aws_secret_access_key": S3_ENV["AWS_SECRET_ACCESS_KEY"],
        "region_name": S3_ENV["AWS_DEFAULT_REGION"],
    }


class MotoServer:
    """moto's standalone S3 server in its own process group, with the artifact bucket."""

    def __init__(self, log_path: Path):
        self.port = free_port()
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self.log_path = log_path
        self.process: subprocess.Popen | None = None

    def start(self) -> None:
        """Start and create the bucket (moto keeps it in memory: a restart starts empty)."""
        with open(self.log_path, "a") as out:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)],
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        wait_for_status(f"{self.endpoint}/moto-api/", 200, 60, self.process, self.log_path)
        self.s3().create_bucket(Bucket=BUCKET)

    def s3(self):
        """A boto3 S3 client for this endpoint."""
        return boto3.client("s3", endpoint_url=self.endpoint, **boto_credentials())

    def kill(self) -> None:
        """SIGKILL: the endpoint vanishes mid-whatever."""
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()

    def stop(self) -> None:
        """SIGTERM, then SIGKILL if it lingers."""
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.kill()


class RestartableServer:
    """An `mlflow server` that can be stopped, killed and started again on the same port and store.

    Defaults to SQLite and a local artifact folder under `root`.
    """

    def __init__(
        self,
        root: Path,
        backend_store_uri: str | None = None,
        artifacts_destination: str | None = None,
        env: dict[str, str] | None = None,
        auth: bool = False,
    ):
        self.root = root
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.backend_store_uri = backend_store_uri or f"sqlite:///{root / 'mlflow.db'}"
        self.artifacts_destination = artifacts_destination or str(root / "artifacts")
        self.env = env
        self.auth = auth
        self._secret_key = uuid.uuid4().hex  # the basic-auth app's Flask secret, kept across restarts
        self.log_path = root / "server.log"
        self._server: TrackingServer | None = None

    def _auth_env(self) -> dict[str, str]:
        """The basic-auth app's environment: the image's mlflow/basic_auth.ini with the users kept
        beside the backend store (a PostgreSQL backend's own database, as in compose; a SQLite
        backend's neighbour file), and the admin's password set before the first request."""
        if self.backend_store_uri.startswith("sqlite:"):
            users = f"sqlite:///{self.root / 'basic_auth.db'}"
        else:
            users = self.backend_store_uri
        config = self.root / "basic_auth.ini"
        text = (ROOT / "mlflow" / "basic_auth.ini").read_text()
        config.write_text(re.sub(r"(?m)^database_uri = .*$", f"database_uri = {users}", text))
        return {
            "MLFLOW_AUTH_CONFIG_PATH": str(config),
            "MLFLOW_AUTH_ADMIN_PASSWORD": AUTH_ADMIN[1],
            "MLFLOW_FLASK_SERVER_SECRET_KEY": self._secret_key,
        }

    def start(self, timeout: float = 120.0) -> None:
        """Start and wait until healthy."""
        self._server = start_tracking_server(
            backend_store_uri=self.backend_store_uri,
            artifacts_destination=self.artifacts_destination,
            log_path=self.log_path,
            port=self.port,
            env={**(self.env or {}), **(self._auth_env() if self.auth else {})},
            timeout=timeout,
            app_name="basic-auth" if self.auth else None,
        )

    def stop(self) -> None:
        """SIGTERM the process group (SIGKILL after 15 s)."""
        if self._server is not None:
            self._server.stop()
            self._server = None

    def kill(self) -> None:
        """SIGKILL the process group: no shutdown of any kind."""
        if self._server is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self._server.process.pid, signal.SIGKILL)
            self._server.process.wait()
            self._server = None
