"""What a test needs from the machine: skipped on a laptop without it, a failure under CI.

CI must not go green by quietly losing its real parts (issue 14): under `CI=true` a missing
PostgreSQL, S3 endpoint, hadolint, shellcheck (or Docker engine, for the Docker tier) fails the
test. `REQUIRE_POSTGRES=1` asks the same of PostgreSQL alone, outside CI.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

TRUE = {"1", "true", "yes", "on"}


def _flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in TRUE


def is_required(what: str = "") -> bool:
    """True under CI, or when REQUIRE_<WHAT>=1 (e.g. REQUIRE_POSTGRES) asks for this part."""
    return _flag("CI") or (bool(what) and _flag(f"REQUIRE_{what.upper()}"))


def unavailable(what: str, reason: str) -> None:
    """Skip here, fail under CI (or REQUIRE_<WHAT>=1): `what` is missing, `reason` says why."""
    message = f"{what} unavailable: {reason}"
    if is_required(what):
        pytest.fail(f"{message} (required: CI=true or REQUIRE_{what.upper()}=1)", pytrace=False)
    pytest.skip(message)


def require_tool(name: str, hint: str) -> str:
    """The path of the executable `name`; skip (fail under CI) when it is not on PATH."""
    path = shutil.which(name)
    if path is None:
        unavailable(name, f"not on PATH ({hint})")
    return path


def postgres_bin_dir() -> Path | None:
    """Where initdb and pg_ctl are: $PG_BIN, then PATH, then `pg_config --bindir`, then the newest
    /usr/lib/postgresql/<version>/bin (Debian does not put them on PATH)."""
    candidates: list[Path] = []
    if os.environ.get("PG_BIN"):
        candidates.append(Path(os.environ["PG_BIN"]))
    if on_path := shutil.which("pg_ctl"):
        candidates.append(Path(on_path).resolve().parent)
    if pg_config := shutil.which("pg_config"):
        try:
            out = subprocess.run([pg_config, "--bindir"], capture_output=True, text=True, timeout=10)
            candidates.append(Path(out.stdout.strip()))
        except (OSError, subprocess.SubprocessError):
            pass
    versions = Path("/usr/lib/postgresql").glob("*/bin")
    candidates += sorted(
        versions, key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else 0, reverse=True
    )
    for directory in candidates:
        if (directory / "initdb").is_file() and (directory / "pg_ctl").is_file():
            return directory
    return None
