"""The test suite's own guards: what CI requires, where PostgreSQL is, the leak reaper (issue 14)."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from support.requirements import is_required, postgres_bin_dir, require_tool, unavailable

TESTS = Path(__file__).resolve().parents[1]


def _clear_flags(monkeypatch):
    for name in ("CI", "REQUIRE_POSTGRES", "REQUIRE_SHELLCHECK"):
        monkeypatch.delenv(name, raising=False)


def test_a_missing_part_is_a_skip_outside_ci(monkeypatch):
    _clear_flags(monkeypatch)
    with pytest.raises(pytest.skip.Exception, match="postgres unavailable"):
        unavailable("postgres", "not reachable")


@pytest.mark.parametrize("flag", ["CI=true", "CI=1", "REQUIRE_POSTGRES=1"])
def test_a_missing_postgres_is_a_failure_under_ci_or_require_postgres(monkeypatch, flag):
    _clear_flags(monkeypatch)
    monkeypatch.setenv(*flag.split("="))
    with pytest.raises(pytest.fail.Exception, match="postgres unavailable"):
        unavailable("postgres", "not reachable")


def test_require_postgres_does_not_require_other_tools(monkeypatch):
    _clear_flags(monkeypatch)
    monkeypatch.setenv("REQUIRE_POSTGRES", "1")
    assert is_required("postgres") and not is_required("shellcheck")


def test_a_missing_tool_fails_under_ci(monkeypatch):
    _clear_flags(monkeypatch)
    monkeypatch.setenv("CI", "true")
    monkeypatch.setenv("PATH", "/nonexistent")
    with pytest.raises(pytest.fail.Exception, match="shellcheck unavailable"):
        require_tool("shellcheck", "apt-get install shellcheck")


def _fake_postgres(directory: Path) -> Path:
    directory.mkdir(parents=True)
    for name in ("initdb", "pg_ctl"):
        (directory / name).write_text("#!/bin/sh\n")
        (directory / name).chmod(stat.S_IRWXU)
    return directory


def test_postgres_binaries_are_found_on_path_whatever_the_version(monkeypatch, tmp_path):
    monkeypatch.delenv("PG_BIN", raising=False)
    bin_dir = _fake_postgres(tmp_path / "postgresql" / "17" / "bin")
    monkeypatch.setenv("PATH", str(bin_dir))
    assert postgres_bin_dir() == bin_dir


def test_pg_bin_overrides_the_search(monkeypatch, tmp_path):
    bin_dir = _fake_postgres(tmp_path / "pg16")
    monkeypatch.setenv("PG_BIN", str(bin_dir))
    assert postgres_bin_dir() == bin_dir


LEAKING_TEST = """
import subprocess

def test_leaves_a_process_running():
    subprocess.Popen(["sleep", "120"])
"""


def test_a_process_left_running_fails_the_session(pytester):
    """The reaper stops the leaked process and the session's exit status says FAILED."""
    pytester.makeconftest((TESTS / "conftest.py").read_text())
    pytester.makepyfile(test_leak=LEAKING_TEST)
    result = pytester.runpytest("-p", "no:cacheprovider")
    result.assert_outcomes(passed=1)
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.stdout.fnmatch_lines(["*LEAK (session fails)*sleep 120*"])


def test_a_clean_session_passes(pytester):
    pytester.makeconftest((TESTS / "conftest.py").read_text())
    pytester.makepyfile(test_clean="def test_nothing():\n    pass\n")
    result = pytester.runpytest("-p", "no:cacheprovider")
    assert result.ret == pytest.ExitCode.OK
