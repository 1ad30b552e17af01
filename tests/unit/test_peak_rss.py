"""credit_risk.devtools.peak_rss: a command's own peak RSS, not its parent's."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from credit_risk.devtools.peak_rss import run

# A parent that has touched 600 MiB, then measures the same small command both ways.
PARENT = """
import json, os, subprocess, sys
from credit_risk.devtools.peak_rss import run
big = bytearray(600 * 2**20)
for i in range(0, len(big), 4096):
    big[i] = 1
del big
command = [sys.executable, "-c", "x = bytearray(50 * 2**20); x[::4096] = b'1' * len(x[::4096])"]
proc = subprocess.Popen(command)
_, _, usage = os.wait4(proc.pid, 0)
code, launched = run(command)
print(json.dumps({"direct_mib": usage.ru_maxrss / 1024, "launched_mib": launched / 2**20, "code": code}))
"""


def test_the_launcher_reports_the_commands_own_peak_where_wait4_reports_the_parents():
    parent = subprocess.run([sys.executable, "-c", PARENT], capture_output=True, check=True)
    figures = json.loads(parent.stdout)
    assert figures["code"] == 0
    assert figures["direct_mib"] >= 600  # what the hostile-CSV test used to measure
    assert 50 <= figures["launched_mib"] < 150, figures  # the 50 MiB the command touched, plus Python


EXITS = [("raise SystemExit(3)", 3), ("import os; os.kill(os.getpid(), 9)", 137)]


@pytest.mark.parametrize("script, code", EXITS)
def test_the_launcher_passes_the_exit_code_through(script, code):
    returncode, peak = run([sys.executable, "-c", script])
    assert returncode == code and peak > 0
