"""The ionospheric phase screen: its statistics, 1/frequency, the seed, and what the
simulated MeasurementSet holds against a direct sum with the saved true phases."""

from __future__ import annotations

import json

import numpy as np
import pytest
from casacore import tables

import sdpbatch.execution.simulate as simulate_module
from sdpbatch.cli import main
from sdpbatch.io.truth import read_ionosphere
from sdpbatch.science.constants import C
from sdpbatch.science.ionosphere import (
    ionosphere_gains,
    outer_wavenumber,
    structure_function,
    von_karman_screen,
)
from sdpbatch.vocabulary import TRUTH_IONOSPHERE_FILE

SAMPLES = 12_000
"""Point pairs per separation: the estimate of D scatters by ~sqrt(2/SAMPLES) = 1.3 %."""


def _measured_structure(screen, r, rng):
    x = rng.uniform(-3e6, 3e6, (SAMPLES, 2))  # spread over ~20 outer scales: independent pairs
    angle = rng.uniform(0.0, 2.0 * np.pi, SAMPLES)
    step = r * np.stack([np.cos(angle), np.sin(angle)], axis=-1)
    return np.mean((screen.phase(x) - screen.phase(x + step)) ** 2)


def test_structure_function_follows_the_five_thirds_law():
    """sigma 10 rad, r_diff 10 km: outer scale L0 = 350 km.  The screen's D(r) is the von
    Karman law within its ~1.5 % scatter from 100 m to 10 km; at 30-300 m (r/L0 < 1e-3) its
    slope is 5/3 within the scatter and the outer scale's -0.02 there, and D(100 m) is
    (r / r_diff)^(5/3) within the outer scale's 6 % (the law tends to 5/3 as (r/L0)^(1/3))."""
    screen = von_karman_screen(
        np.random.default_rng(5), rms_phase=10.0, diffractive_scale=1e4, smallest_scale=10.0,
        per_bin=16,
    )  # fmt: skip
    rng = np.random.default_rng(0)
    for r in (100.0, 300.0, 1000.0, 3000.0, 10000.0):
        exact = structure_function(r, rms_phase=10.0, diffractive_scale=1e4)
        assert _measured_structure(screen, r, rng) == pytest.approx(exact, rel=0.05), r
    small = np.array([30.0, 100.0, 300.0])
    measured = np.array([_measured_structure(screen, r, rng) for r in small])
    slope = np.polyfit(np.log(small), np.log(measured), 1)[0]
    assert slope == pytest.approx(5 / 3, abs=0.04)
    assert measured[1] == pytest.approx((100.0 / 1e4) ** (5 / 3), rel=0.1)


def test_structure_function_formula_tends_to_kolmogorov_and_saturates():
    k0 = outer_wavenumber(1.0, 1e4)
    small = 1e-7 / k0
    assert structure_function(small, rms_phase=1.0, diffractive_scale=1e4) == pytest.approx(
        (small / 1e4) ** (5 / 3), rel=0.005
    )
    assert structure_function(200.0 / k0, rms_phase=1.0, diffractive_scale=1e4) == pytest.approx(
        2.0, rel=1e-6
    )


def test_rms_over_a_large_region_is_the_parameter():
    screen = von_karman_screen(np.random.default_rng(7), rms_phase=1.0, diffractive_scale=1e4)
    x = np.random.default_rng(1).uniform(-2e6, 2e6, (SAMPLES, 2))  # outer scale 22 km
    assert np.std(screen.phase(x)) == pytest.approx(1.0, rel=0.04)


def test_phase_scales_as_one_over_frequency():
    phases = np.array([[0.3, -1.1], [0.02, 1.4]])
    nu = np.array([5e7, 1e8, 2e8])
    gains = ionosphere_gains(phases, nu)
    assert gains.shape == (2, 2, 3)
    np.testing.assert_allclose(np.angle(gains), phases[..., None] * (1e8 / nu), atol=1e-15)
    np.testing.assert_allclose(np.abs(gains), 1.0, atol=1e-15)


ONE_SOURCE = (
    "Format = Name, Type, Ra, Dec, I, SpectralIndex, LogarithmicSI, "
    "ReferenceFrequency='100000000'\n"
    "s0,POINT,00:09:00.0,-31.30.00.0,5.0,[-0.7],true,100e6\n"
)
SMALL = {
    "n_workers": 1, "rmax": 300.0, "ntimes": 3, "nfreqwin": 3, "channels_per_window": 3,
    "phase_error": 0.0, "beam": "none", "ionosphere_rms_phase": 1.0,
    "ionosphere_scale_km": 3.0,
}  # fmt: skip


def _simulate(tmp_path, name, **extra):
    sky = tmp_path / "sky.txt"
    sky.write_text(ONE_SOURCE)
    params = tmp_path / f"{name}.json"
    params.write_text(json.dumps({**SMALL, "sky_model": str(sky)}))
    flags = [x for k, v in extra.items() for x in (f"--{k.replace('_', '-')}", str(v))]
    out = tmp_path / name
    assert main(["simulate", str(params), "--out", str(out), *flags]) == 0
    return out


def test_measurement_set_is_the_direct_sum_with_the_saved_phases(tmp_path, monkeypatch):
    monkeypatch.setattr(simulate_module, "ROWS_PER_BLOCK", 6000)  # a block per time
    out = _simulate(tmp_path, "iono")
    truth = read_ionosphere(out / TRUTH_IONOSPHERE_FILE)
    assert truth["phase"].shape == (3, truth["station"].size, 1)
    assert 0.05 < np.std(truth["phase"]) < 3.0
    with tables.table(str(out / "ska_pipeline_simulation_vislist_0.ms"), ack=False) as t:
        data, uvw = t.getcol("DATA")[:, :, 0], t.getcol("UVW")
        a1, a2, when = t.getcol("ANTENNA1"), t.getcol("ANTENNA2"), t.getcol("TIME")
    with tables.table(str(out / "ska_pipeline_simulation_vislist_0.ms/SPECTRAL_WINDOW")) as t:
        nu = t.getcol("CHAN_FREQ")[0]
    ra, dec = np.radians(2.25), np.radians(-31.5)
    l_ = np.cos(dec) * np.sin(ra)
    m = np.sin(dec) * np.cos(np.radians(-30)) - np.cos(dec) * np.sin(np.radians(-30)) * np.cos(ra)
    n = np.sqrt(1 - l_**2 - m**2)
    flux = 5.0 * (nu / 1e8) ** -0.7
    ti = np.searchsorted(truth["time"], when - 1e-3)
    phase = truth["phase"][ti, a1, 0] - truth["phase"][ti, a2, 0]  # at 100 MHz
    geometry = uvw @ np.array([l_, m, n - 1])
    expected = flux * np.exp(
        1j * (2 * np.pi * nu[None, :] / C * geometry[:, None] + phase[:, None] * 1e8 / nu)
    )
    assert np.abs(data - expected).max() < 1e-6 * np.abs(expected).max()


def test_seeded_screen_is_reproducible(tmp_path):
    first = read_ionosphere(_simulate(tmp_path, "a") / TRUTH_IONOSPHERE_FILE)["phase"]
    again = read_ionosphere(_simulate(tmp_path, "b") / TRUTH_IONOSPHERE_FILE)["phase"]
    other = read_ionosphere(_simulate(tmp_path, "c", seed=7) / TRUTH_IONOSPHERE_FILE)["phase"]
    np.testing.assert_array_equal(first, again)
    assert np.abs(first - other).max() > 0.1
