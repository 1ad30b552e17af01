"""Helpers the test tiers share (imported as `support.…`; pytest puts tests/ on the path)."""

from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
