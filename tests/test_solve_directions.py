"""Gains per direction (DDECal's directional iteration) against phases injected per direction,
and the clustering of components into directions and facets."""

from __future__ import annotations

import numpy as np
import pytest

from sdpbatch.science.directions import cluster_directions, facet_labels
from sdpbatch.science.solve_cells import SolverOptions
from sdpbatch.science.solve_directions import (
    combine_direction_sums,
    compress_directions,
    residual_sums,
    solve_directions,
)
from sdpbatch.science.solve_sums import compress

C = 299_792_458.0
OPTIONS = SolverOptions(min_snr=0.0, outlier_sigma=np.inf, tolerance=1e-10)
SOURCES = np.array([[0.0, 0.0, 10.0], [0.03, 0.01, 6.0], [-0.02, 0.035, 5.0], [0.01, -0.04, 4.0]])
"""(l, m, flux Jy): four bright point sources, one per direction."""


def observation(nant=20, ntimes=3, nchan=3, seed=5):
    """Rows of a random array of ``nant`` stations within 1 km at ``ntimes`` snapshots."""
    rng = np.random.default_rng(seed)
    xyz = rng.uniform(-500, 500, (nant, 3)) * (1, 1, 0.01)
    a1, a2 = np.triu_indices(nant, 1)
    rows = []
    for h in np.linspace(-0.4, 0.4, ntimes):
        rot = np.array([[np.cos(h), -np.sin(h), 0], [np.sin(h), np.cos(h), 0], [0, 0, 1]])
        rows.append((xyz[a2] - xyz[a1]) @ rot.T)
    return dict(
        uvw=np.concatenate(rows), nant=nant, ntimes=ntimes,
        a1=np.tile(a1, ntimes), a2=np.tile(a2, ntimes),
        time=np.repeat(np.arange(ntimes), a1.size),
        freq=np.linspace(0.95e8, 1.05e8, nchan),
    )  # fmt: skip


def point_vis(obs, l, m, flux):  # noqa: E741
    """(nrow, nchan) visibilities of one point source by direct sum (MeasurementSet sign)."""
    n = np.sqrt(1 - l * l - m * m)
    u, v, w = obs["uvw"].T
    phase = 2j * np.pi * obs["freq"][None, :] / C * (u * l + v * m + w * (n - 1))[:, None]
    return flux * np.exp(phase)


def true_phases(obs, ndir, seed=7):
    """(ndir, ntimes, nant) smooth random phases (rad): a slow drift plus an offset per station."""
    rng = np.random.default_rng(seed)
    offset = rng.normal(0, 1.0, (ndir, 1, obs["nant"]))
    drift = rng.normal(0, 0.2, (ndir, 1, obs["nant"])) * np.arange(obs["ntimes"])[None, :, None]
    return offset + drift


def direction_data(obs, phases):
    """(vis, models): ``V = sum_d g_dp conj(g_dq) M_d`` with ``g = exp(i phase)``."""
    models = np.stack([point_vis(obs, *s) for s in SOURCES[: phases.shape[0]]])
    g = np.exp(1j * phases)
    gp = g[:, obs["time"], obs["a1"]]
    gq = g[:, obs["time"], obs["a2"]]
    vis = np.sum((gp * np.conj(gq))[:, :, None] * models, axis=0)
    return vis, models


def solve(obs, vis, models, **kw):
    sums = compress_directions(
        vis, models, np.ones(vis.shape), antenna1=obs["a1"], antenna2=obs["a2"],
        interval=obs["time"],
    )  # fmt: skip
    initial = np.ones((len(models), obs["ntimes"], obs["nant"], 1), complex)
    return sums, solve_directions(sums, initial=initial, options=OPTIONS, **kw)


def phase_error(solved, phases):
    """(ndir, ntimes, nant) wrapped difference after referencing both to station 0."""
    true = phases - phases[:, :, :1]
    got = np.angle(solved[..., 0]) - np.angle(solved[:, :, :1, 0])
    return np.angle(np.exp(1j * (got - true)))


def test_recovers_phases_per_direction_noise_free():
    obs = observation()
    phases = true_phases(obs, 4)
    vis, models = direction_data(obs, phases)
    _, solution = solve(obs, vis, models)
    assert solution.converged
    assert np.max(np.abs(phase_error(solution.gains, phases))) < 1e-3
    assert not solution.flags.any()
    assert [s.term for s in solution.stats] == ["D"] * 4


def test_noise_error_follows_the_snr():
    """With complex noise sigma per visibility, a station's phase error per direction of flux
    S is sigma / (S sqrt(2 (nant - 1) nchan)); referenced to station 0 (whose error adds), sqrt(2)
    times that: within 30 % of it."""
    obs = observation(nant=20, ntimes=2, nchan=4)
    phases = true_phases(obs, 3)
    vis, models = direction_data(obs, phases)
    sigma = 2.0
    rng = np.random.default_rng(11)
    vis = vis + sigma / np.sqrt(2) * (rng.normal(size=vis.shape) + 1j * rng.normal(size=vis.shape))
    _, solution = solve(obs, vis, models)
    error = phase_error(solution.gains, phases)
    for d in range(3):
        samples = (obs["nant"] - 1) * obs["freq"].size
        expected = np.sqrt(2) * sigma / (SOURCES[d, 2] * np.sqrt(2 * samples))
        rms = np.sqrt(np.mean(error[d, :, 1:] ** 2))
        assert 0.7 * expected < rms < 1.3 * expected, (d, rms, expected)


def test_residual_sums_equal_those_of_the_formed_residual():
    """The sums of ``V - sum_{e != d} g_e M_e g_e^H`` against ``M_d`` made directly."""
    obs = observation(nant=8, ntimes=2, nchan=2)
    phases = true_phases(obs, 3)
    vis, models = direction_data(obs, phases)
    cells = dict(antenna1=obs["a1"], antenna2=obs["a2"], interval=obs["time"])
    halves = [slice(0, 30), slice(30, None)]
    parts = [
        compress_directions(vis[h], models[:, h], np.ones(vis[h].shape),
                            antenna1=obs["a1"][h], antenna2=obs["a2"][h],
                            interval=obs["time"][h])
        for h in halves
    ]  # fmt: skip
    sums = combine_direction_sums(parts)
    guess = np.exp(1j * np.random.default_rng(1).normal(size=(3, 2, 8, 1)))
    gg = guess[:, obs["time"], obs["a1"], 0] * np.conj(guess[:, obs["time"], obs["a2"], 0])
    for d in range(3):
        residual = vis - sum(gg[e][:, None] * models[e] for e in range(3) if e != d)
        direct = compress(residual, models[d], np.ones(vis.shape), **cells)
        got = residual_sums(sums, guess, d)
        for name in ("a", "b", "c", "n"):
            np.testing.assert_allclose(getattr(got, name), getattr(direct, name), atol=1e-9)


def test_a_step_out_of_range_is_refused():
    obs = observation(nant=5, ntimes=1, nchan=1)
    vis, models = direction_data(obs, true_phases(obs, 2))
    with pytest.raises(ValueError, match="step"):
        solve(obs, vis, models, step=0.0)
    with pytest.raises(ValueError, match="max_iterations"):
        solve(obs, vis, models, max_iterations=0)


def test_clusters_take_the_bright_sources_as_centres():
    rng = np.random.default_rng(3)
    bright = SOURCES[:, :2]
    faint = rng.uniform(-0.06, 0.06, (40, 2))
    l, m = np.concatenate([bright, faint]).T  # noqa: E741
    flux = np.concatenate([SOURCES[:, 2] * 10, np.full(40, 0.05)])
    centres, labels = cluster_directions(l, m, flux, 4)
    assert centres.shape == (4, 2)
    nearest = facet_labels(bright[:, 0], bright[:, 1], centres)
    np.testing.assert_array_equal(nearest, np.arange(4))  # brightest cluster first
    np.testing.assert_allclose(centres, bright, atol=0.01)
    np.testing.assert_array_equal(labels, facet_labels(l, m, centres))
    again = cluster_directions(l, m, flux, 4)
    np.testing.assert_array_equal(again[0], centres)


def test_fewer_positions_than_directions_give_fewer_directions():
    centres, labels = cluster_directions(np.array([0.0, 0.0, 0.1]), np.zeros(3),
                                         np.array([1.0, 2.0, 3.0]), 8)  # fmt: skip
    assert centres.shape == (2, 2)
    np.testing.assert_array_equal(labels, [1, 1, 0])
    apart, _ = cluster_directions(np.array([0.0, 0.001, 0.1]), np.zeros(3),
                                  np.array([3.0, 2.0, 1.0]), 8, min_separation=0.01)  # fmt: skip
    np.testing.assert_allclose(apart, [[0.0004, 0.0], [0.1, 0.0]])
    with pytest.raises(ValueError, match="ndirections"):
        cluster_directions(np.zeros(1), np.zeros(1), np.ones(1), 0)


def test_facets_are_nearest_centres():
    centres = np.array([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    labels = facet_labels(np.array([0.1, 0.9, 0.2, 0.6]), np.array([0.1, 0.2, 0.7, 0.0]), centres)
    np.testing.assert_array_equal(labels, [0, 1, 2, 1])


def test_radec_of_inverts_lmn():
    from sdpbatch.science.directions import radec_of
    from sdpbatch.science.skymodel import lmn

    centre = (np.radians(10.0), np.radians(-30.0))
    ra = centre[0] + np.radians([0.0, 3.0, -5.0, 8.0])
    dec = centre[1] + np.radians([0.0, 2.0, -4.0, 6.0])
    l, m, _ = lmn(ra, dec, centre).T  # noqa: E741
    np.testing.assert_allclose(radec_of(l, m, centre), np.column_stack([ra, dec]), atol=1e-12)
