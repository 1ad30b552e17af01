"""The API image's pins (requirements-api.txt) against the project's: no engine needed."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def pins(path: Path) -> dict[str, str]:
    lines = [line.split("#")[0].strip() for line in path.read_text().splitlines()]
    pairs = (re.split(r"==", line, maxsplit=1) for line in lines if "==" in line)
    return {re.sub(r"\[.*\]", "", name).lower(): version for name, version in pairs}


def test_api_requirements_pin_the_versions_requirements_txt_pins():
    api, ours = pins(ROOT / "requirements-api.txt"), pins(ROOT / "requirements.txt")
    shared = set(api) - {"mlflow-skinny"}
    assert shared <= set(ours), shared - set(ours)
    assert {k: api[k] for k in shared} == {k: ours[k] for k in shared}
    assert api["mlflow-skinny"] == ours["mlflow"]


def test_api_requirements_leave_out_the_server_and_plotting_stack():
    assert not {"mlflow", "matplotlib", "pandas", "pyarrow"} & set(pins(ROOT / "requirements-api.txt"))


def test_api_requirements_cover_what_the_api_needs_from_requirements_txt():
    # Everything the trainer-only stack does not explain must be in the API's list too.
    trainer_only = {"mlflow", "pandas", "pyarrow", "matplotlib"}
    assert set(pins(ROOT / "requirements.txt")) - trainer_only <= set(pins(ROOT / "requirements-api.txt"))
