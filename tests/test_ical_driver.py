"""ICAL end to end on small simulated MeasurementSets: in-process and on a Dask LocalCluster."""

from __future__ import annotations

import logging

import numpy as np
import pytest

from sdpbatch.execution.cluster import dask_client
from sdpbatch.execution.ical import IcalResult, run_ical
from sdpbatch.execution.simulate import simulate
from sdpbatch.io.truth import read_truth
from sdpbatch.parameters import Parameters
from sdpbatch.science.assess import measure_source, sky_to_pixel
from sdpbatch.science.solve import phase_errors

SMALL = dict(
    rmax=300.0,
    ntimes=3,
    nfreqwin=3,
    npixel=256,
    cellsize=0.002,  # the seed's 29 deg field, ~2 pixels per resolution element
    n_workers=2,
    threads_per_worker=1,
)


@pytest.fixture(scope="module")
def observation(tmp_path_factory):
    """Three single-channel windows with 1 rad station phase errors, no noise."""
    params = Parameters(**SMALL)
    products = simulate(params, tmp_path_factory.mktemp("vis"))
    return params, products.ms_paths, read_truth(products.truth_dir)


@pytest.fixture(scope="module")
def selfcal(observation):
    params, paths, _ = observation
    return run_ical(paths, params)


def dynamic_range(result: IcalResult) -> float:
    return float(result.restored.max() / result.residual_taylor[0].std())


def test_selfcal_recovers_the_station_phases(observation, selfcal):
    _, _, truth = observation
    solved = selfcal.solutions["T"].gains
    assert solved.shape == (3, len(truth.gains.antenna_names), 1)
    assert np.allclose(np.abs(solved), 1.0)
    err = phase_errors(
        solved[:, :, 0], truth.gains.gains[:, :, 0], truth.gains.antenna_positions
    )
    assert np.sqrt(np.mean(err**2)) < 0.01
    # the comparison can fail: unit gains are ~1 rad off
    unit = phase_errors(
        np.ones_like(solved[:, :, 0]), truth.gains.gains[:, :, 0], truth.gains.antenna_positions
    )
    assert np.sqrt(np.mean(unit**2)) > 0.5
    # the solution times are the integrations
    assert np.allclose(selfcal.solutions["T"].times, truth.gains.times, atol=1e-3)


def test_result_shapes_and_conventions(observation, selfcal):
    params, paths, _ = observation
    r = selfcal
    n = params.npixel
    assert r.model_taylor.shape == r.residual_taylor.shape == (params.nmoment, n, n)
    assert r.model_cube.shape == r.residual_cube.shape == r.restored_cube.shape == (3, n, n)
    assert r.psf.shape == (n, n) and r.psf[n // 2, n // 2] == pytest.approx(1.0)
    assert r.psf.max() == pytest.approx(1.0)
    assert np.allclose(r.frequencies, [0.9e8, 1.0e8, 1.1e8])
    assert r.reference_frequency == pytest.approx(1.0e8)
    assert np.allclose(r.bandwidths, 1.0e7)
    assert r.clean_beam.bmaj >= r.clean_beam.bmin > 0
    assert [c["cycle"] for c in r.cycles] == [0, 1, 2, 3, 4, 5, "final"]
    assert r.cycles[1]["solved"] == ["T"] and r.cycles[0]["solved"] == []
    assert set(r.timings) >= {"read", "grid", "degrid", "clean", "solve", "total"}
    # the middle window's cube plane is the model at its frequency (t = 0): model_taylor[0]
    assert np.allclose(r.model_cube[1], r.model_taylor[0])
    # the MFS residual is the weighted mean of the window residuals (equal weights here)
    assert np.allclose(r.residual_taylor[0], r.residual_cube.mean(axis=0), atol=1e-9)


def test_bright_sources_are_restored_in_place(observation, selfcal):
    params, _, truth = observation
    r = selfcal
    flux = truth.sky.flux_at(r.reference_frequency)[:, 0]
    ix, iy = sky_to_pixel(truth.sky.ra, truth.sky.dec, r.phase_centre, r.cellsize, r.npixel)
    inside = (np.abs(ix - r.npixel / 2) < r.npixel / 2 - 8) & (
        np.abs(iy - r.npixel / 2) < r.npixel / 2 - 8
    )
    brightest = [i for i in np.argsort(-flux) if inside[i]][:3]
    assert len(brightest) == 3
    for i in brightest:
        measured, x, y = measure_source(r.restored, ix[i], iy[i])
        assert measured == pytest.approx(flux[i], rel=0.03)
        assert abs(x - ix[i]) < 0.2 and abs(y - iy[i]) < 0.2


def test_without_selfcal_dynamic_range_is_much_lower(observation, selfcal):
    params, paths, _ = observation
    plain = run_ical(paths, params.replace(selfcal=False))
    assert plain.solutions == {}
    assert dynamic_range(selfcal) > 10 * dynamic_range(plain)


def test_cluster_equals_in_process(observation, selfcal, caplog, capsys):
    params, paths, _ = observation
    with dask_client(2, threads_per_worker=1) as client, caplog.at_level(logging.INFO):
        on_cluster = run_ical(paths, params, client=client, progress=True)
    scale = np.abs(selfcal.restored).max()
    for name in ("restored", "residual_taylor", "model_taylor", "restored_cube", "psf"):
        a, b = getattr(selfcal, name), getattr(on_cluster, name)
        assert np.abs(a - b).max() < 1e-6 * scale, name
    assert np.allclose(on_cluster.solutions["T"].gains, selfcal.solutions["T"].gains, atol=1e-9)
    assert "ICAL cycle 5" in caplog.text
    assert "ICAL [" in capsys.readouterr().err
