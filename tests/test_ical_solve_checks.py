"""Solutions that cannot diverge: signal-to-noise, outliers, normalisation, flagged stations.

Every check is against injected gains and noise: the predicted precision of a solution
(1 / SNR) is compared with its actual error, and the failure cases (no data, bad model, low
signal, a broken station, an undamped iteration) must end flagged, finite and reported.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from sdpbatch.science.anchor import anchor_phase_gradient
from sdpbatch.science.solve import (
    SolverOptions,
    baseline_flags,
    baseline_gains,
    compress,
    solve_term,
    stefcal,
)
from test_ical_solve import SOURCES, point_sources, small_array

OPTIONS = SolverOptions()  # ICAL's, the schema's defaults


@pytest.fixture(scope="module")
def array():
    arr = small_array(nant=30, ntimes=1, nchan=6, seed=11)
    arr["model"] = point_sources(arr["uvw"], arr["freq"], SOURCES)
    return arr


def _gains(rng, nant, nfreq=1, amp=0.3):
    """Log-normal amplitudes with ``amp`` scatter (30 % by default), random phases."""
    shape = (1, nant, nfreq)
    return np.exp(amp * rng.normal(size=shape) + 1j * rng.normal(0, 1, shape))


def _data(arr, gains, *, sigma, rng, per_channel=False):
    channel = np.arange(arr["freq"].size) if per_channel else np.zeros(arr["freq"].size, int)
    gpq = baseline_gains(
        gains,
        interval=np.zeros(arr["a1"].size, int),
        antenna1=arr["a1"],
        antenna2=arr["a2"],
        channel=channel,
    )
    data = gpq * arr["model"]
    return data + sigma * (rng.normal(size=data.shape) + 1j * rng.normal(size=data.shape))


def _sums(arr, data, model=None, *, per_channel=False, flag=None):
    return compress(
        data,
        arr["model"] if model is None else model,
        np.ones(data.shape),  # weights of the wrong absolute scale: the SNR must not care
        antenna1=arr["a1"],
        antenna2=arr["a2"],
        interval=np.zeros(arr["a1"].size, int),
        channel=np.arange(arr["freq"].size) if per_channel else None,
        flag=flag,
    )


def _aligned(solved, true, flags, ref=0):
    """``true`` with the solution's degeneracies (phase reference, amplitude scale) applied."""
    r = slice(ref, ref + 1)
    t = true * (np.conj(true[:, r]) / np.abs(true[:, r])) * (solved[:, r] / np.abs(solved[:, r]))
    good = ~flags
    scale = np.abs(solved[good]).mean() / np.abs(t[good]).mean()
    return t * scale


def test_amplitudes_recovered_within_the_predicted_noise(array):
    rng = np.random.default_rng(1)
    nant = array["nant"]
    true = _gains(rng, nant)
    sigma = 3.0  # Jy per real/imaginary part, against ~8 Jy of sources
    data = _data(array, true, sigma=sigma, rng=rng)
    sol = solve_term(
        _sums(array, data), term="G", initial=np.ones((1, nant, 1)), normalise=True, options=OPTIONS
    )
    assert not sol.flags.any() and sol.stats.converged
    # normalised: unit mean amplitude over the stations
    assert np.abs(sol.gains).mean() == pytest.approx(1.0, abs=1e-12)
    expected = _aligned(sol.gains, true, sol.flags)
    error = np.abs(sol.gains - expected)
    predicted = np.abs(sol.gains) / sol.snr  # standard error of a complex gain
    # errors are ~ the prediction: rms ratio ~1 (referencing and normalising add a little)
    ratio = np.sqrt(np.mean(error**2) / np.mean(predicted**2))
    assert 0.6 < ratio < 1.6
    assert np.all(error < 5 * predicted)
    # the prediction itself matches the radiometer estimate sigma_g ~ sqrt(2) sigma / (S sqrt(N))
    flux = np.sqrt(np.mean(np.abs(array["model"]) ** 2))
    rough = np.sqrt(2) * sigma / (flux * np.sqrt((nant - 1) * array["freq"].size))
    assert 0.5 < np.median(predicted) / rough < 2.0


def test_bandpass_per_channel_with_ripple(array):
    rng = np.random.default_rng(2)
    nant, nchan = array["nant"], array["freq"].size
    ripple = 1 + 0.1 * np.sin(np.arange(nchan)[None, None, :] + rng.uniform(0, 6, (1, nant, 1)))
    true = _gains(rng, nant) * ripple
    data = _data(array, true, sigma=0.5, rng=rng, per_channel=True)
    sol = solve_term(
        _sums(array, data, per_channel=True),
        term="B",
        initial=np.ones((1, nant, nchan)),
        normalise=False,
        options=OPTIONS,
    )
    assert not sol.flags.any()
    expected = true * np.conj(true[:, sol.stats.reference : sol.stats.reference + 1])
    expected /= np.abs(true[:, sol.stats.reference : sol.stats.reference + 1])
    error = np.abs(sol.gains - expected)
    assert np.all(error < 5 * np.abs(sol.gains) / sol.snr)


def test_station_without_data_is_flagged_and_others_are_unaffected(array):
    rng = np.random.default_rng(3)
    nant = array["nant"]
    true = _gains(rng, nant)
    data = _data(array, true, sigma=0.1, rng=rng)
    flag = np.zeros(data.shape, bool)
    dead = (array["a1"] == 0) | (array["a2"] == 0) | (array["a1"] == 7) | (array["a2"] == 7)
    flag[dead] = True
    data[dead] = np.nan  # what a dead tile may hold: it must not leak into anything
    previous = np.full((1, nant, 1), 0.9 + 0.1j)
    sol = solve_term(
        _sums(array, data, flag=flag),
        term="G",
        initial=np.ones((1, nant, 1)),
        fallback=previous,
        normalise=True,
        options=OPTIONS,
    )
    assert np.all(np.isfinite(sol.gains))
    assert sol.flags[0, [0, 7], 0].all() and sol.flags.sum() == 2
    assert sol.stats.flagged_no_data == 2 and sol.snr[0, 0, 0] == 0
    np.testing.assert_array_equal(sol.gains[0, [0, 7], 0], previous[0, [0, 7], 0])
    assert sol.stats.reference != 0  # station 0 has no data: another is the reference
    assert abs(np.angle(sol.gains[0, sol.stats.reference, 0])) < 1e-12
    good = ~sol.flags
    expected = _aligned(sol.gains, true, sol.flags, sol.stats.reference)
    assert np.all(np.abs(sol.gains - expected)[good] < 5 * np.abs(sol.gains[good]) / sol.snr[good])
    # data on baselines to flagged stations are flagged for applying
    bflag = baseline_flags(
        sol.flags,
        interval=np.zeros(array["a1"].size, int),
        antenna1=array["a1"],
        antenna2=array["a2"],
        channel=np.zeros(array["freq"].size, int),
    )
    np.testing.assert_array_equal(bflag[:, 0], dead)


def test_bad_model_is_normalised_and_reported_not_blown_up(array):
    """A model with the wrong sources: the residual is the signal, the SNR says so."""
    rng = np.random.default_rng(4)
    nant = array["nant"]
    data = _data(array, _gains(rng, nant), sigma=0.1, rng=rng)
    initial = np.ones((1, nant, 1))
    right = solve_term(
        _sums(array, data), term="G", initial=initial, normalise=True, options=OPTIONS
    )
    wrong = point_sources(array["uvw"], array["freq"], [(1.0, -0.07, 0.04)])
    sol = solve_term(
        _sums(array, data, wrong), term="G", initial=initial, normalise=True, options=OPTIONS
    )
    assert np.all(np.isfinite(sol.gains))
    good = ~sol.flags
    assert np.abs(sol.gains[good]).mean() == pytest.approx(1.0, abs=1e-12)
    assert np.abs(sol.gains).max() < 11  # no runaway amplitude survives the outlier test
    assert sol.stats.median_snr < right.stats.median_snr / 30
    assert sol.stats.flagged_low_snr > 0.2 * nant


def test_low_signal_is_flagged(array):
    rng = np.random.default_rng(5)
    nant = array["nant"]
    data = _data(array, _gains(rng, nant), sigma=300.0, rng=rng)
    sol = solve_term(
        _sums(array, data), term="G", initial=np.ones((1, nant, 1)), normalise=True, options=OPTIONS
    )
    assert sol.stats.flagged_low_snr == sol.flags.sum() > 0.9 * nant
    assert np.all(sol.snr[sol.flags] < 3.0)
    unflagged = solve_term(
        _sums(array, data),
        term="G",
        initial=np.ones((1, nant, 1)),
        normalise=True,
        options=SolverOptions(min_snr=0),
    )
    assert unflagged.stats.flagged_fraction == 0.0  # min_snr 0 flags nothing


def test_broken_station_is_an_outlier_and_the_rest_is_solved_without_it(array):
    rng = np.random.default_rng(6)
    nant = array["nant"]
    true = _gains(rng, nant, amp=0.1)
    true[0, 5, 0] *= 12.0  # a receiver gone wild
    data = _data(array, true, sigma=0.2, rng=rng)
    sol = solve_term(
        _sums(array, data), term="G", initial=np.ones((1, nant, 1)), normalise=True, options=OPTIONS
    )
    assert sol.flags[0, 5, 0] and sol.stats.flagged_outlier == 1 and sol.flags.sum() == 1
    assert sol.gains[0, 5, 0] == 1.0  # the fallback (initial), not the wild value
    # normalised over the others only: unit mean, not dragged down by the outlier
    assert np.abs(sol.gains[~sol.flags]).mean() == pytest.approx(1.0, abs=1e-12)
    expected = _aligned(sol.gains, true, sol.flags)
    good = ~sol.flags
    assert np.all(np.abs(sol.gains - expected)[good] < 5 * np.abs(sol.gains[good]) / sol.snr[good])


def test_spike_in_one_channel_of_one_station_is_an_outlier(array):
    rng = np.random.default_rng(7)
    nant, nchan = array["nant"], array["freq"].size
    true = _gains(rng, nant) * np.ones((1, 1, nchan))
    true[0, 9, 3] *= 4.0
    data = _data(array, true, sigma=0.2, rng=rng, per_channel=True)
    sol = solve_term(
        _sums(array, data, per_channel=True),
        term="B",
        initial=np.ones((1, nant, nchan)),
        normalise=True,
        options=OPTIONS,
    )
    assert sol.flags[0, 9, 3] and sol.flags.sum() == 1 and sol.stats.flagged_outlier == 1


def test_model_missing_flux_keeps_the_data_scale_when_normalised(array):
    """Half the model flux: G amplitudes absorb sqrt(2) unless normalised."""
    rng = np.random.default_rng(8)
    nant = array["nant"]
    true = _gains(rng, nant, amp=0.2)
    data = _data(array, true, sigma=0.05, rng=rng)
    half = _sums(array, data, 0.5 * array["model"])
    kept = solve_term(
        half, term="G", initial=np.ones((1, nant, 1)), normalise=False, options=OPTIONS
    )
    scaled = solve_term(
        half, term="G", initial=np.ones((1, nant, 1)), normalise=True, options=OPTIONS
    )
    ratio = np.abs(kept.gains).mean() / np.abs(true).mean()
    assert ratio == pytest.approx(np.sqrt(2), rel=0.02)
    assert np.abs(scaled.gains).mean() == pytest.approx(1.0, abs=1e-12)
    relative = np.abs(scaled.gains) / np.abs(true)
    assert relative.std() / relative.mean() < 0.01  # relative amplitudes are right
    assert scaled.stats.normalised and not kept.stats.normalised


def test_undamped_iteration_is_reported_as_diverged(array):
    rng = np.random.default_rng(9)
    nant = array["nant"]
    data = _data(array, _gains(rng, nant), sigma=0.1, rng=rng)
    sums = _sums(array, data)
    sol = solve_term(
        sums,
        term="G",
        initial=np.ones((1, nant, 1)),
        normalise=True,
        options=SolverOptions(step=1.0),
    )
    assert not sol.stats.converged and sol.stats.flagged_diverged == nant
    assert np.all(sol.gains == 1.0)  # all fall back to the initial gains
    damped = solve_term(
        sums, term="G", initial=np.ones((1, nant, 1)), normalise=True, options=OPTIONS
    )
    assert damped.stats.converged and damped.stats.iterations < 100


def test_phase_only_term_and_stats_for_the_report(array):
    rng = np.random.default_rng(10)
    nant = array["nant"]
    true = np.exp(1j * rng.normal(0, 1, (1, nant, 1)))
    data = _data(array, true, sigma=0.5, rng=rng)
    sol = solve_term(
        _sums(array, data), term="T", initial=np.ones((1, nant, 1)), normalise=True, options=OPTIONS
    )
    np.testing.assert_allclose(np.abs(sol.gains), 1.0)
    report = json.loads(json.dumps(sol.stats.as_dict()))
    assert report["term"] == "T" and report["solutions"] == nant
    assert report["flagged_fraction"] == 0.0 and report["normalised"] is False
    assert report["median_snr"] > 10 and report["amplitude_spread"] < 1e-12


def test_stefcal_leaves_cells_without_data_alone():
    a = np.zeros((2, 3, 3), complex)
    b = np.zeros((2, 3, 3))
    b[1] = 1.0 - np.eye(3)
    a[1] = b[1] * 4.0  # all gains 2
    g, iterations, change = stefcal(a, b, np.ones((2, 3)), phase_only=False, options=OPTIONS)
    np.testing.assert_array_equal(g[0], 1.0)
    assert iterations[0] == 0 and iterations[1] > 0
    np.testing.assert_allclose(g[1], 2.0, rtol=1e-10)
    assert change[1] < 1e-12


def test_anchor_gradient_ignores_flagged_gains():
    rng = np.random.default_rng(12)
    pos = rng.normal(0, 300, (20, 3))
    anchor = np.exp(1j * rng.normal(0, 1, (1, 20, 1)))
    plane = np.exp(1j * (pos @ np.array([2e-3, -1e-3, 0.0])))[None, :, None]
    solved = anchor * plane
    flags = np.zeros(solved.shape, bool)
    flags[0, 3, 0] = True
    solved[0, 3, 0] = 5.0  # a fallback value: neither in the fit nor moved
    kept = anchor_phase_gradient(solved, anchor, pos, flags=flags)
    assert kept[0, 3, 0] == 5.0
    good = ~flags[0, :, 0]
    residual = np.angle(kept[0, good, 0] * np.conj(anchor[0, good, 0]))
    np.testing.assert_allclose(residual - residual.mean(), 0.0, atol=1e-9)
