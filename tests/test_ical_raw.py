"""ICAL end to end on raw-like data (tests/raw_like_ms.py, built with casacore): a snapshot with
autocorrelations, flagged tiles and channels holding garbage, per-correlation flags,
WEIGHT_SPECTRUM, 30 % station amplitude scatter and a bandpass ripple, an extended double
source (two Gaussians) plus points.

Calibrated against the field's component list (its Gaussians included), T, then T and G, then
T, G and B: each keeps or improves the dynamic range, TGB reaches at least 3x T's, and the
solved amplitudes are the injected ones within the noise of the solutions.
"""

from __future__ import annotations

import numpy as np
import pytest

from sdpbatch.execution.ical import run_ical
from sdpbatch.io.skymodel_file import read_sky_model
from sdpbatch.parameters import Parameters
from sdpbatch.science.assess import robust_rms

SETTINGS = dict(
    npixel=512,
    cellsize=3e-4,
    nmajor=4,
    niter=5000,
    threshold=0.001,
    fractional_threshold=0.05,
    calibration_model="none",  # the model is given to run_ical below
    first_selfcal_T=0,
    first_selfcal_G=0,  # every term solved first against the catalogue: its flux is the scale
    first_selfcal_B=0,
    n_workers=1,
    threads_per_worker=2,
)


@pytest.fixture(scope="module")
def runs(raw_like_master, tmp_path_factory):
    path, truth = raw_like_master
    sky = read_sky_model(truth.write_component_list(tmp_path_factory.mktemp("sky") / "sky.txt"))
    results = {}
    for context in ("T", "TG", "TGB"):
        params = Parameters(**SETTINGS, calibration_context=context)
        results[context] = run_ical([path], params, sky_model=sky)
    return results, truth


def _dynamic_range(result) -> float:
    return float(result.restored.max() / robust_rms(result.residual_taylor[0]))


def test_each_term_keeps_or_improves_the_dynamic_range(runs):
    results, _ = runs
    dr = {context: _dynamic_range(r) for context, r in results.items()}
    assert dr["TG"] >= dr["T"] and dr["TGB"] >= dr["TG"], dr
    assert dr["TGB"] >= 3 * dr["T"], dr
    for result in results.values():  # nothing was undone, every solution converged
        assert result.undone == []
        assert all(s["converged"] for c in result.cycles for s in c.solutions.values())


def test_solved_amplitudes_are_the_injected_ones_within_the_noise(runs):
    """|T G B| per station and channel, relative to the stations' mean (self-calibration
    keeps no absolute scale of its own), against the injected gains; the flagged tiles and
    channels are left out (their solutions are flagged and hold the fallback gain)."""
    results, truth = runs
    result = results["TGB"]
    total = np.ones(truth.gains.shape, complex)
    for solution in result.solutions.values():
        total = total * solution.gains[0]  # one integration: (nant, 1 or nchan)
    stations = np.setdiff1d(np.arange(truth.spec.nant), truth.spec.flagged_stations)
    channels = np.setdiff1d(np.arange(truth.gains.shape[1]), truth.spec.flagged_channels)
    solved = np.abs(total)[np.ix_(stations, channels)]
    injected = np.abs(truth.gains)[np.ix_(stations, channels)]
    ratio = (solved / solved.mean(axis=0)) / (injected / injected.mean(axis=0))
    snr = result.cycles[-1].solutions["B"]["median_snr"]
    # a solution's relative error is ~1/SNR; the product of three terms and the normalisation
    # over ~46 stations stay within a few times that
    assert np.std(ratio - 1) < 5 / snr, (np.std(ratio - 1), snr)
    # and the test would see uncorrected amplitudes (30 % scatter)
    assert np.std(injected / injected.mean(axis=0) - 1) > 0.2
    # the flagged tiles and RFI channels were flagged as having no data
    assert result.cycles[-1].solutions["B"]["flagged_no_data"] >= 2 * truth.gains.shape[1]
