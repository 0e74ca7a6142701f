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


@pytest.fixture
def one_thread() -> None:
    """One torch thread (engines may change it): reproducible numbers, no oversubscribed shared cores.
    Modules that train use it for every test: ``pytestmark = pytest.mark.usefixtures("one_thread")``."""
    torch = pytest.importorskip("torch", reason="one_thread sets PyTorch's thread count")
    torch.set_num_threads(1)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    """A tiny synthetic training dataset (``synthetic_training.make_dataset``), one per test module."""
    from synthetic_training import make_dataset

    return make_dataset(tmp_path_factory.mktemp("data"))


@pytest.fixture(scope="session")
def orthanc(tmp_path_factory):
    """A real Orthanc with its DICOMweb plugin on 127.0.0.1 (``orthanc.start_orthanc``), one per session; skips
    with the reason where Debian's orthanc / orthanc-dicomweb are not installed."""
    from orthanc import missing, start_orthanc

    reason = missing()
    if reason:
        pytest.skip(reason)
    server = start_orthanc(tmp_path_factory.mktemp("orthanc"))
    try:
        yield server
    finally:
        server.stop()
