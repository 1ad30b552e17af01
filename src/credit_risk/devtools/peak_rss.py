"""Run a command and report its own peak RSS, whatever the size of the process that asked.

`ru_maxrss` of a child, as `os.wait4` reports it, is not the child's alone: Linux keeps the
high-water mark of the memory the child ran in before it exec'd, and a child that Python
spawns (fork or vfork) ran in its parent's memory. A command started from a pytest process
that has grown to 1.1 GB therefore "peaks" at 1.1 GB even if it never uses 400 MB.

This launcher is a small, fresh process: the command is its child, so the inherited mark is
the launcher's (about 10 MB), and the figure is the command's own.

    python -m credit_risk.devtools.peak_rss OUT_FILE -- COMMAND [ARG...]

writes the command's peak RSS in KiB to OUT_FILE and exits with the command's exit code
(128 + N when a signal N ended it). stdin, stdout and stderr are the command's.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path


def run(command: list[str], **popen_kwargs) -> tuple[int, int]:
    """Run `command` through this launcher: (exit code, peak RSS in bytes of the command itself)."""
    fd, name = tempfile.mkstemp(prefix="peak-rss-")
    os.close(fd)
    out = Path(name)
    try:
        returncode = subprocess.run(  # noqa: S603 (the caller's own command)
            [sys.executable, "-m", __spec__.name, str(out), "--", *command], **popen_kwargs
        ).returncode
        return returncode, int(out.read_text()) * 1024
    finally:
        out.unlink(missing_ok=True)


def main(argv: list[str]) -> int:
    if len(argv) < 3 or argv[1] != "--":
        print(__doc__, file=sys.stderr)
        return 2
    out, command = Path(argv[0]), argv[2:]
    proc = subprocess.Popen(command)  # noqa: S603 (the command line it was given)
    _, status, usage = os.wait4(proc.pid, 0)
    out.write_text(str(usage.ru_maxrss))  # KiB on Linux
    code = os.waitstatus_to_exitcode(status)
    return 128 - code if code < 0 else code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
