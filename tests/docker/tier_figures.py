"""Figures the Docker tier measures (build, start-up and wall times, image sizes), printed at its end."""

from __future__ import annotations

FIGURES: dict[str, str] = {}


def record(name: str, value: str) -> None:
    """Keep a figure for the session's closing summary (tests/docker/conftest.py prints them)."""
    FIGURES[name] = value
