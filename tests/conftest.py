"""Shared fixtures: the real SPIDER slices (skipped when ../shared is absent) and small synthetic data."""
from __future__ import annotations

from pathlib import Path

import pytest

SPIDER_DIR = Path(__file__).resolve().parents[2] / "shared" / "data" / "spider-t2space-png"


@pytest.fixture(scope="session")
def spider_dir() -> Path:
    """The shared SPIDER PNG export (images/, masks/); skips the test when it is not beside the repo."""
    if not (SPIDER_DIR / "images").is_dir():
        pytest.skip(f"shared SPIDER data not found at {SPIDER_DIR}")
    return SPIDER_DIR
