"""StEFCal gain solutions against injected gains (the convention pinned by injected screens)."""

from __future__ import annotations

import copy

import numpy as np
import pytest

from sdpbatch.science.anchor import anchor_phase_gradient, keep_amplitude_scale
from sdpbatch.science.assess import gain_phase_error
from sdpbatch.science.solve import (
    SolverOptions,
    SolveSums,
    accumulate,
    baseline_gains,
    combine_sums,
    compress,
    correct,
    interval_index,
    solution_intervals,
    solve_term,
)

C = 299_792_458.0
WITHOUT_CHECKS = SolverOptions(min_snr=0.0, outlier_sigma=np.inf)
"""The solver alone: no signal-to-noise or outlier flags (solutions without data keep the
initial gains)."""


def small_array(nant=30, ntimes=3, nchan=4, seed=3):
    """A realistic small snapshot array: stations within 300 m, hour angles -30..30 deg."""
    rng = np.random.default_rng(seed)
    r = 300 * np.sqrt(rng.uniform(0, 1, nant))
    phi = rng.uniform(0, 2 * np.pi, nant)
    enu = np.column_stack([r * np.cos(phi), r * np.sin(phi), rng.normal(0, 1, nant)])
    lat, dec = np.radians(-26.8), np.radians(-30.0)
    # local equatorial xyz of east/north/up, then uvw per hour angle (TMS eq. 4.1)
    e, n, u = enu.T
    x, y, z = -n * np.sin(lat) + u * np.cos(lat), e, n * np.cos(lat) + u * np.sin(lat)
    a1, a2 = np.triu_indices(nant, 1)
    rows = []
    for h in np.radians(np.linspace(-30, 30, ntimes)):
        bx, by, bz = x[a2] - x[a1], y[a2] - y[a1], z[a2] - z[a1]
        uu = bx * np.sin(h) + by * np.cos(h)
        vv = -bx * np.sin(dec) * np.cos(h) + by * np.sin(dec) * np.sin(h) + bz * np.cos(dec)
        ww = bx * np.cos(dec) * np.cos(h) - by * np.cos(dec) * np.sin(h) + bz * np.sin(dec)
        rows.append(np.column_stack([uu, vv, ww]))
    uvw = np.concatenate(rows)
    time = np.repeat(np.arange(ntimes) * 3600.0, a1.size)
    freq = np.linspace(0.9e8, 1.1e8, nchan)
    return dict(
        enu=enu,
        uvw=uvw,
        time=time,
        a1=np.tile(a1, ntimes),
        a2=np.tile(a2, ntimes),
        freq=freq,
        nant=nant,
        ntimes=ntimes,
    )


def point_sources(uvw, freq, sources):
    """MeasurementSet-convention visibilities of (flux, l, m) point sources by direct sum."""
    vis = np.zeros((uvw.shape[0], freq.size), complex)
    for flux, l, m in sources:
        n = np.sqrt(1 - l * l - m * m)
        path = uvw[:, 0] * l + uvw[:, 1] * m + uvw[:, 2] * (n - 1)
        vis += flux * np.exp(2j * np.pi * path[:, None] * freq[None, :] / C)
    return vis


SOURCES = [(5.0, 0.02, -0.01), (2.0, -0.05, 0.03), (1.0, 0.1, 0.08)]


@pytest.fixture(scope="module")
def array():
    arr = small_array()
    arr["model"] = point_sources(arr["uvw"], arr["freq"], SOURCES)
    return arr


def t_intervals(arr):
    bounds, _ = solution_intervals(arr["time"], 0)
    return interval_index(arr["time"], bounds)


def corrupt(arr, gains, interval, channel, *, wrong_sign=False):
    gpq = baseline_gains(
        gains, interval=interval, antenna1=arr["a1"], antenna2=arr["a2"], channel=channel
    )
    return (np.conj(gpq) if wrong_sign else gpq) * arr["model"]


def solve(arr, data, term, interval, nint, nfreq, channel=None, initial=None):
    weight = np.ones(data.shape)
    sums = compress(
        data,
        arr["model"],
        weight,
        antenna1=arr["a1"],
        antenna2=arr["a2"],
        interval=interval,
        channel=channel,
    )
    if initial is None:
        initial = np.ones((nint, arr["nant"], nfreq), complex)
    return solve_term(
        sums, term=term, initial=initial, normalise=False, options=WITHOUT_CHECKS
    ).gains


def random_phases(rng, shape, sigma=1.0):
    return np.exp(1j * rng.normal(0, sigma, shape))


def test_phase_only_per_integration_noise_free(array):
    rng = np.random.default_rng(1)
    true = random_phases(rng, (array["ntimes"], array["nant"], 1))
    interval = t_intervals(array)
    zero = np.zeros(array["freq"].size, int)
    data = corrupt(array, true, interval, zero)
    solved = solve(array, data, "T", interval, array["ntimes"], 1)
    assert np.allclose(np.abs(solved), 1.0)
    err = gain_phase_error(solved[..., 0], true[..., 0], array["enu"], remove_gradient=False)
    assert err < 1e-7
    # correcting with the solution gives back the model
    gpq = baseline_gains(
        solved, interval=interval, antenna1=array["a1"], antenna2=array["a2"], channel=zero
    )
    assert np.allclose(correct(data, gpq), array["model"], atol=1e-8)
    # and the phase-only correction is data * conj(g_p) * g_q
    assert np.allclose(data * np.conj(gpq), array["model"], atol=1e-8)


def test_conjugation_error_is_caught(array):
    """With the opposite gain convention in the data, the solution does not match the truth."""
    rng = np.random.default_rng(2)
    true = random_phases(rng, (array["ntimes"], array["nant"], 1))
    interval = t_intervals(array)
    zero = np.zeros(array["freq"].size, int)
    data = corrupt(array, true, interval, zero, wrong_sign=True)
    solved = solve(array, data, "T", interval, array["ntimes"], 1)
    assert gain_phase_error(solved[..., 0], true[..., 0], array["enu"]) > 0.5


def test_amplitude_and_phase_whole_observation_from_previous(array):
    rng = np.random.default_rng(4)
    nant = array["nant"]
    true = (1 + 0.1 * rng.normal(size=(1, nant, 1))) * random_phases(rng, (1, nant, 1))
    interval = np.zeros(array["time"].size, int)
    zero = np.zeros(array["freq"].size, int)
    data = corrupt(array, true, interval, zero)
    solved = solve(array, data, "G", interval, 1, 1)
    ref = true * np.conj(true[:, :1]) / np.abs(true[:, :1])
    assert np.allclose(solved, ref, atol=1e-8)
    # starting from the solution converges at once to the same answer
    again = solve(array, data, "G", interval, 1, 1, initial=solved)
    assert np.allclose(again, ref, atol=1e-8)


def test_bandpass_per_channel(array):
    rng = np.random.default_rng(5)
    nant, nchan = array["nant"], array["freq"].size
    true = (1 + 0.1 * rng.normal(size=(1, nant, nchan))) * random_phases(rng, (1, nant, nchan))
    interval = np.zeros(array["time"].size, int)
    channel = np.arange(nchan)
    data = corrupt(array, true, interval, channel)
    solved = solve(array, data, "B", interval, 1, nchan, channel=channel)
    ref = true * np.conj(true[:, :1]) / np.abs(true[:, :1])
    assert np.allclose(solved, ref, atol=1e-8)


def test_sums_add_across_windows(array):
    """Sums of two channel halves combine to the sums of all channels."""
    interval = t_intervals(array)
    rng = np.random.default_rng(6)
    data = array["model"] * random_phases(rng, array["model"].shape, 0.3)
    weight = rng.uniform(0.5, 1.5, data.shape)
    kw = dict(antenna1=array["a1"], antenna2=array["a2"], interval=interval)
    whole = compress(data, array["model"], weight, **kw)
    halves = [
        compress(data[:, s], array["model"][:, s], weight[:, s], **kw)
        for s in (slice(0, 2), slice(2, None))
    ]
    both = combine_sums(halves)
    assert np.allclose(both.a, whole.a) and np.allclose(both.b, whole.b)
    assert np.array_equal(both.antenna1, whole.antenna1)


def test_sums_of_row_slices_are_the_sums_of_the_block(array):
    """Reduced a few rows at a time (bounded temporaries), the sums are the same entries with
    the same values as in one go, per channel and over channels."""
    interval = t_intervals(array)
    rng = np.random.default_rng(11)
    data = array["model"] * random_phases(rng, array["model"].shape, 0.3)
    weight = rng.uniform(0.5, 1.5, data.shape)
    flag = rng.uniform(size=data.shape) < 0.1
    nchan = data.shape[1]
    kw = dict(antenna1=array["a1"], antenna2=array["a2"], interval=interval, flag=flag)
    for channel in (None, np.arange(nchan)):
        whole = compress(data, array["model"], weight, channel=channel, **kw)
        sliced = compress(
            data, array["model"], weight, channel=channel, slice_visibilities=7 * nchan, **kw
        )
        for key in ("interval", "antenna1", "antenna2", "channel"):
            assert np.array_equal(getattr(sliced, key), getattr(whole, key))
        for key in ("a", "b", "c", "n"):
            assert np.allclose(getattr(sliced, key), getattr(whole, key), rtol=1e-12, atol=0)


def test_accumulated_sums_equal_combined_sums(array):
    """A running total (in place where the cells are already there, appended after them,
    else merged) gives the sums of all parts in any order: the channel halves of two time
    halves, and two parts of the rows cut within an integration."""
    interval = t_intervals(array)
    rng = np.random.default_rng(12)
    data = array["model"] * random_phases(rng, array["model"].shape, 0.3)
    weight = rng.uniform(0.5, 1.5, data.shape)
    times = np.unique(interval)
    early = interval <= times[times.size // 2]
    parts = []
    for rows in (early, ~early):
        for chans in (slice(0, 2), slice(2, None)):
            parts.append(
                compress(
                    data[rows][:, chans],
                    array["model"][rows][:, chans],
                    weight[rows][:, chans],
                    antenna1=array["a1"][rows],
                    antenna2=array["a2"][rows],
                    interval=interval[rows],
                )
            )
    cut = data.shape[0] // 3 + 1  # within an integration: its baselines in both parts
    for rows in (slice(0, cut), slice(cut, None)):
        parts.append(
            compress(
                data[rows],
                array["model"][rows],
                weight[rows],
                antenna1=array["a1"][rows],
                antenna2=array["a2"][rows],
                interval=interval[rows],
            )
        )
    # every sample is in two parts (channel and time quarters; row thirds): twice the whole
    whole = compress(
        data,
        array["model"],
        weight,
        antenna1=array["a1"],
        antenna2=array["a2"],
        interval=interval,
    )
    expected = SolveSums(
        **{k: getattr(whole, k) for k in ("interval", "antenna1", "antenna2", "channel")},
        **{k: 2 * getattr(whole, k) for k in ("a", "b", "c", "n")},
    )
    for order in (
        [0, 1, 2, 3, 4, 5],
        [0, 2, 1, 3, 4, 5],
        [3, 0, 2, 1, 5, 4],
        [4, 5, 0, 1, 2, 3],
        [4, 0, 1, 5, 2, 3],
    ):
        total = None
        for i in order:
            total = accumulate(total, copy.deepcopy(parts[i]))
        for key in ("interval", "antenna1", "antenna2", "channel"):
            assert np.array_equal(getattr(total, key), getattr(expected, key))
        for key in ("a", "b", "c", "n"):
            assert np.allclose(getattr(total, key), getattr(expected, key), rtol=1e-12, atol=0)
    kept = copy.deepcopy(parts[0])  # not in place: the parts stay as they were
    accumulate(accumulate(parts[0], parts[1], in_place=False), parts[4], in_place=False)
    assert all(np.array_equal(getattr(parts[0], k), getattr(kept, k)) for k in ("a", "n"))


def test_swapped_baselines_are_handled(array):
    """Rows stored with antenna1 > antenna2 (conjugated data) give the same solution."""
    rng = np.random.default_rng(7)
    true = random_phases(rng, (array["ntimes"], array["nant"], 1))
    interval = t_intervals(array)
    zero = np.zeros(array["freq"].size, int)
    data = corrupt(array, true, interval, zero)
    swapped = dict(array, a1=array["a2"], a2=array["a1"], model=np.conj(array["model"]))
    solved = solve(swapped, np.conj(data), "T", interval, array["ntimes"], 1)
    err = gain_phase_error(solved[..., 0], true[..., 0], array["enu"], remove_gradient=False)
    assert err < 1e-7


def test_noisy_data_reaches_expected_precision(array):
    """Phase error ~ sigma / (S sqrt(N_samples per station)) for a dominant point source."""
    rng = np.random.default_rng(8)
    nant = array["nant"]
    true = random_phases(rng, (array["ntimes"], nant, 1))
    interval = t_intervals(array)
    zero = np.zeros(array["freq"].size, int)
    sigma = 2.0  # Jy per real/imaginary part
    data = corrupt(array, true, interval, zero)
    data = data + sigma * (rng.normal(size=data.shape) + 1j * rng.normal(size=data.shape))
    solved = solve(array, data, "T", interval, array["ntimes"], 1)
    rms = gain_phase_error(solved[..., 0], true[..., 0], array["enu"], remove_gradient=False)
    rms *= np.sqrt(nant / (nant - 1))  # the reference station's zero is not a sample
    # per station: (nant - 1) baselines x nchan samples; model amplitude ~ total flux
    flux = np.sqrt(np.mean(np.abs(array["model"]) ** 2))
    expected = sigma / (flux * np.sqrt((nant - 1) * array["freq"].size))
    # referencing to a noisy station adds its error to every other one: sqrt(2)
    assert 0.5 * expected < rms < 2.5 * expected


def test_gradient_removal():
    """A pure linear phase gradient across the stations is not counted as an error."""
    rng = np.random.default_rng(9)
    pos = np.column_stack([rng.normal(0, 200, (20, 2)), rng.normal(0, 1, 20)])  # east, north, up
    true = np.exp(1j * rng.normal(0, 1, (2, 20)))
    solved = true * np.exp(1j * (pos[:, :2] @ np.array([1e-3, -2e-3]) + 0.3))
    assert gain_phase_error(solved, true, pos) < 1e-10
    assert gain_phase_error(solved, true, pos, remove_gradient=False) > 0.1


def test_anchor_phase_gradient_keeps_the_anchor_gradient():
    """Only the plane across the stations moves: the rest of the solution is kept."""
    rng = np.random.default_rng(12)
    pos = np.array([-2.5e6, 5.1e6, -2.8e6]) + rng.normal(0, 300, (30, 3))  # ITRF-like
    anchor = np.exp(1j * rng.normal(0, 1, (4, 30, 2)))
    detail = rng.normal(0, 0.05, (4, 30, 2))  # what self-calibration may still refine
    gradient = np.stack([pos @ rng.normal(0, 1e-3, 3) for _ in range(8)], -1).reshape(30, 4, 2)
    solved = anchor * np.exp(1j * (detail + 0.4 + gradient.transpose(1, 0, 2)))
    kept = anchor_phase_gradient(solved, anchor, pos)
    assert np.allclose(np.abs(kept), np.abs(solved))
    left = np.angle(kept * np.conj(anchor))  # detail + constant, minus detail's own plane
    rel = pos - pos.mean(axis=0)
    design = np.column_stack([np.ones(30), rel])
    for t in range(4):
        for f in range(2):
            coef = np.linalg.lstsq(design, left[t, :, f], rcond=None)[0]
            assert np.abs(coef[1:]).max() < 1e-12  # no gradient left
            residual = left[t, :, f] - design @ coef
            expected = detail[t, :, f] - design @ np.linalg.lstsq(design, detail[t, :, f])[0]
            assert np.allclose(residual, expected, atol=1e-9)  # the detail is untouched
    # without an anchor gradient to keep, the solution's own gradient would have stayed
    assert np.abs(np.angle(solved * np.conj(kept))).max() > 0.5
    # a unit anchor (a later term, e.g. G, near unity) keeps no gradient at all
    flat = anchor_phase_gradient(solved * np.conj(anchor), 1.0, pos)
    for t in range(4):
        coef = np.linalg.lstsq(design, np.angle(flat[t, :, 0]), rcond=None)[0]
        assert np.abs(coef[1:]).max() < 1e-6


def test_solution_intervals():
    t = np.array([0.0, 0.0, 10.0, 20.0, 30.0, 30.0])
    b, c = solution_intervals(t, 0)
    assert np.array_equal(interval_index(t, b), [0, 0, 1, 2, 3, 3])
    assert np.array_equal(c, [0, 10, 20, 30])
    b, c = solution_intervals(t, None)
    assert np.array_equal(interval_index(t, b), np.zeros(6))
    b, c = solution_intervals(t, 15.0)
    assert np.array_equal(interval_index(t, b), [0, 0, 0, 1, 2, 2])
    assert np.allclose(c, [5.0, 20.0, 30.0])


def test_self_calibration_keeps_the_catalogue_flux_scale():
    """Normalised self-calibration amplitudes rescaled per solution (interval, channel) to
    the catalogue solution's mean amplitude over the unflagged stations; the stations'
    relative amplitudes and phases untouched, flagged stations ignored."""
    rng = np.random.default_rng(8)
    shape = (3, 20, 4)
    solved = rng.uniform(0.5, 1.5, shape) * np.exp(1j * rng.normal(0, 1, shape))
    anchor = rng.uniform(1.0, 2.0, shape) * np.exp(1j * rng.normal(0, 1, shape))
    flags = np.zeros(shape, bool)
    flags[:, 3] = True
    solved[:, 3] = 1e3  # a flagged outlier must not pull the scale
    kept = keep_amplitude_scale(solved, anchor, flags)
    used = ~flags
    for t in range(3):
        for f in range(4):
            u = used[t, :, f]
            assert np.abs(kept[t, u, f]).mean() == pytest.approx(np.abs(anchor[t, u, f]).mean())
    ratio = kept / solved
    assert np.allclose(np.angle(ratio), 0) and np.allclose(ratio, ratio[:, :1, :])
