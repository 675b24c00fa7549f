"""The direct Fourier sum: against a slow loop, and its sign convention against ducc0."""

from __future__ import annotations

import cmath
import math

import ducc0
import numpy as np
import pytest

from sdpbatch.science.constants import C
from sdpbatch.science.gains import corrupt, random_gains
from sdpbatch.science.noise import add_noise, radiometer_sigma
from sdpbatch.science.predict import (
    predict_point_sources,
    predict_point_sources_by_station,
    predict_rows,
    station_uvw,
)


def _slow(uvw, freqs, lmn, flux):
    out = np.zeros((uvw.shape[0], freqs.size), dtype=complex)
    for r in range(uvw.shape[0]):
        for c, nu in enumerate(freqs):
            for s in range(lmn.shape[0]):
                u, v, w = uvw[r]
                l_, m, n = lmn[s]
                phase = 2 * math.pi * nu / C * (u * l_ + v * m + w * (n - 1))
                out[r, c] += flux[s, c] * cmath.exp(1j * phase)
    return out


def _sources(rng, nsrc, spread=0.1):
    lm = rng.uniform(-spread, spread, (nsrc, 2))
    return np.column_stack([lm, np.sqrt(1 - (lm**2).sum(axis=1))])


@pytest.mark.parametrize(
    "freqs",
    [
        np.array([0.9e8, 1.05e8]),
        np.array([0.9e8, 0.93e8, 1.01e8]),  # uneven: one exponential per channel
        np.linspace(0.9e8, 1.1e8, 64),  # even: the phasor recurrence over 64 channels
    ],
)
def test_vectorised_sum_matches_slow_loop(freqs):
    rng = np.random.default_rng(3)
    uvw = rng.normal(0, 3000, (150, 3))
    lmn = _sources(rng, 7, spread=0.5)
    flux = rng.uniform(0.1, 10, (7, freqs.size))
    fast = predict_point_sources(uvw, freqs, lmn, flux, row_chunk=16)
    np.testing.assert_allclose(fast, _slow(uvw, freqs, lmn, flux), rtol=0, atol=1e-10)


def test_station_factored_sum_matches_slow_loop():
    """Station phases multiplied per baseline give the baseline direct sum (to rounding)."""
    rng = np.random.default_rng(5)
    ntime, nant = 3, 9
    ant_uvw = rng.normal(0, 600, (ntime, nant, 3))
    a1, a2 = np.triu_indices(nant, 1)
    time_index = np.repeat(np.arange(ntime), a1.size)
    a1, a2 = np.tile(a1, ntime), np.tile(a2, ntime)
    uvw = ant_uvw[time_index, a2] - ant_uvw[time_index, a1]
    freqs = np.array([0.95e8, 1.1e8])
    lmn = _sources(rng, 5, spread=0.3)
    flux = rng.uniform(0.1, 10, (5, 2))
    shuffle = rng.permutation(time_index.size)  # any row order
    time_index, a1, a2, uvw = time_index[shuffle], a1[shuffle], a2[shuffle], uvw[shuffle]
    fast = predict_point_sources_by_station(ant_uvw, time_index, a1, a2, freqs, lmn, flux)
    np.testing.assert_allclose(fast, _slow(uvw, freqs, lmn, flux), rtol=0, atol=1e-10)


def _baselines(rng, ntime, nant, *, drop=0.0):
    """Rows of every baseline at each time (a fraction ``drop`` missing), in random order."""
    ant_uvw = rng.normal(0, 600, (ntime, nant, 3))
    a1, a2 = np.triu_indices(nant, 1)
    time_index = np.repeat(np.arange(ntime), a1.size)
    a1, a2 = np.tile(a1, ntime), np.tile(a2, ntime)
    keep = rng.permutation(np.flatnonzero(rng.uniform(size=a1.size) >= drop))
    time_index, a1, a2 = time_index[keep], a1[keep], a2[keep]
    return ant_uvw, time_index, a1, a2, ant_uvw[time_index, a2] - ant_uvw[time_index, a1]


def test_station_uvw_is_recovered_from_the_baselines():
    """Station UVW are found from baseline UVW up to an offset per time and connected set:
    their differences are the rows' UVW, with baselines missing and stations in two sets."""
    rng = np.random.default_rng(8)
    _, time_index, a1, a2, uvw = _baselines(rng, 4, 12, drop=0.6)
    apart = ~((a1 < 6) ^ (a2 < 6)) | (time_index != 1)  # time 1: stations 0-5 and 6-11 apart
    time_index, a1, a2, uvw = time_index[apart], a1[apart], a2[apart], uvw[apart]
    found = station_uvw(uvw, time_index, a1, a2)
    assert found is not None
    np.testing.assert_allclose(
        found[time_index, a2] - found[time_index, a1], uvw, rtol=0, atol=1e-9
    )
    bent = uvw.copy()
    bent[7] += [0.0, 2e-6, 0.0]  # one row off its stations' difference (a loop of baselines)
    assert station_uvw(bent, time_index, a1, a2) is None


def test_rows_predicted_per_station_or_per_baseline_match_the_slow_loop():
    """predict_rows factors per station when the UVW allow it, else sums per baseline: both
    give the direct sum."""
    rng = np.random.default_rng(9)
    _, time_index, a1, a2, uvw = _baselines(rng, 3, 8, drop=0.2)
    freqs = np.array([0.95e8, 1.1e8])
    lmn = _sources(rng, 4, spread=0.3)
    flux = rng.uniform(0.1, 10, (4, 2))
    exact = _slow(uvw, freqs, lmn, flux)
    fast = predict_rows(uvw, time_index, a1, a2, freqs, lmn, flux)
    np.testing.assert_allclose(fast, exact, rtol=0, atol=1e-10)
    uvw[3] += 0.01  # not a station difference any more: the per-baseline sum
    assert station_uvw(uvw, time_index, a1, a2) is None
    fallback = predict_rows(uvw, time_index, a1, a2, freqs, lmn, flux)
    np.testing.assert_allclose(fallback, _slow(uvw, freqs, lmn, flux), rtol=0, atol=1e-10)
    uvw[3] -= 0.01
    shape = np.zeros((4, 2, 3))
    shape[1] = rng.normal(0, 1e-3, (2, 3))  # one Gaussian component: summed per baseline
    np.testing.assert_allclose(
        predict_rows(uvw, time_index, a1, a2, freqs, lmn, flux, shape=shape),
        predict_point_sources(uvw, freqs, lmn, flux, shape=shape),
        rtol=0,
        atol=1e-10,
    )


def test_convention_agrees_with_ducc0_dirty2vis():
    """A point source on a pixel: ducc0 with uvw * (-1, -1, +1) gives the same visibilities."""
    rng = np.random.default_rng(4)
    npix, cell = 128, 2e-3
    ix, iy = 80, 41
    l_, m = (ix - npix / 2) * cell, (iy - npix / 2) * cell
    lmn = np.array([[l_, m, math.sqrt(1 - l_ * l_ - m * m)]])
    uvw = rng.normal(0, 300, (200, 3))
    freqs = np.array([1e8])
    ours = predict_point_sources(uvw, freqs, lmn, np.array([[2.5]]))
    image = np.zeros((npix, npix))
    image[ix, iy] = 2.5
    ref = ducc0.wgridder.experimental.dirty2vis(
        uvw=uvw * np.array([-1.0, -1.0, 1.0]),
        freq=freqs,
        dirty=image,
        pixsize_x=cell,
        pixsize_y=cell,
        epsilon=1e-12,
        do_wgridding=True,
        divide_by_n=False,
    )
    np.testing.assert_allclose(ours, ref, atol=1e-8)


def test_corrupt_uses_gp_conj_gq():
    rng = np.random.default_rng(5)
    gains = random_gains(rng, 2, 3, phase_error=1.0, amplitude_error=0.1)
    vis = np.ones((3, 1), dtype=complex)
    a1, a2, t = np.array([0, 0, 1]), np.array([1, 2, 2]), np.array([1, 1, 0])
    out = corrupt(vis, gains, a1, a2, t)
    np.testing.assert_allclose(out[:, 0], gains[t, a1] * np.conj(gains[t, a2]))
    assert np.std(np.angle(random_gains(rng, 200, 50, phase_error=1.0))) > 0.9


def test_radiometer_noise_level():
    sigma = radiometer_sigma(20.0, 1e6, 10.0)
    area = math.pi * 19.0**2
    expected = math.sqrt(2) * 1.380649e-23 * 20.0 / (area * 0.78 * math.sqrt(1e7)) * 1e26
    assert float(sigma) == pytest.approx(expected, rel=1e-12)
    noisy = add_noise(np.zeros((200_000, 1), complex), sigma, np.random.default_rng(0))
    assert abs(np.std(noisy.real) / sigma - 1) < 0.01 and abs(np.std(noisy.imag) / sigma - 1) < 0.01
