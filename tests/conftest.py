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
