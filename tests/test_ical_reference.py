"""ICAL gives the results stored before its restructuring (tests/ical_reference.py).

Images within 1e-6 of their peak, gains within 1e-9: the same science, whatever the code's
shape.  The cases cover self-calibration alone, calibration against a catalogue with T, G and
B terms and Briggs weighting, and MeasurementSets of several channels built with casacore.
"""

from __future__ import annotations

import numpy as np
import pytest

from ical_reference import REFERENCE, run_all


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    return run_all(tmp_path_factory.mktemp("reference"))


def _stored() -> dict[str, dict[str, np.ndarray]]:
    out: dict[str, dict[str, np.ndarray]] = {}
    with np.load(REFERENCE) as data:
        for key in data.files:
            case, name = key.split("/")
            out.setdefault(case, {})[name] = data[key]
    return out


STORED = _stored()


@pytest.mark.parametrize("case", sorted(STORED))
def test_same_results_as_stored(results, case):
    stored, now = STORED[case], results[case]
    assert sorted(now) == sorted(stored)
    peak = float(np.abs(stored["restored"]).max())
    for name in ("restored", "residual_taylor", "residual_cube"):
        assert now[name].shape == stored[name].shape, name
        error = np.abs(now[name].astype(np.float64) - stored[name]).max()
        assert error < 1e-6 * peak, f"{name}: {error / peak:.2e} of the peak"
    model_now = np.zeros(stored["residual_taylor"].size)
    model_now[now["model_index"]] = now["model_value"]
    model_then = np.zeros_like(model_now)
    model_then[stored["model_index"]] = stored["model_value"]
    assert np.abs(model_now - model_then).max() < 1e-6 * peak
    for name in (k for k in stored if k.startswith("gains_")):
        assert np.abs(now[name] - stored[name]).max() < 1e-9, name
