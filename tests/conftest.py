"""Shared test fixtures: everything is built in tmp_path, nothing is downloaded."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from sdpbatch.offline import configure_astropy_offline

configure_astropy_offline()
os.environ.setdefault("OMP_NUM_THREADS", "1")

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


@pytest.fixture
def shared_data() -> Path:
    """The workplace's reference data folder; tests using it skip where it is absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip("../shared/data is not present")
    return SHARED_DATA


@pytest.fixture(scope="session")
def raw_like_master(tmp_path_factory):
    """The raw-like MeasurementSet of ``raw_like_ms.py``, built once per session (read only)."""
    from raw_like_ms import build_raw_like_ms

    path = tmp_path_factory.mktemp("raw_like") / "raw.ms"
    return path, build_raw_like_ms(path)


@pytest.fixture
def raw_like(raw_like_master, tmp_path):
    """A fresh copy of the raw-like MeasurementSet for one test: (path, RawLikeTruth)."""
    import shutil

    master, truth = raw_like_master
    path = tmp_path / master.name
    shutil.copytree(master, path)
    return path, truth
