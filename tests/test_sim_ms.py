"""A simulated MeasurementSet: its tables, its conventions, and where its sources image."""

from __future__ import annotations

import math

import ducc0
import numpy as np
import pytest
from casacore import tables

from sdpbatch.execution.simulate import prepare_simulation, simulate
from sdpbatch.io.truth import read_truth
from sdpbatch.parameters import Parameters
from sdpbatch.science.predict import predict_point_sources
from sdpbatch.science.skymodel import lmn

PARAMS = Parameters(rmax=400.0, ntimes=3, nfreqwin=2, phase_error=0.0, n_workers=1)


@pytest.fixture(scope="module")
def simulated(tmp_path_factory):
    out = tmp_path_factory.mktemp("sim")
    products = simulate(PARAMS, out)
    return products, prepare_simulation(PARAMS)


def _open(path, sub=""):
    return tables.table(f"{path}/{sub}" if sub else str(path), ack=False)


def test_tables_and_shapes(simulated):
    products, setup = simulated
    path = products.ms_paths[1]
    nbl = products.nbaselines
    assert nbl == products.nstations * (products.nstations - 1) // 2
    with _open(path) as t:
        assert t.nrows() == PARAMS.ntimes * nbl
        assert t.getkeyword("MS_VERSION") == 2.0
        assert t.getcolkeyword("UVW", "MEASINFO")["Ref"] == "J2000"
        data = t.getcol("DATA")
        assert data.shape == (t.nrows(), 1, 2)
        np.testing.assert_array_equal(data[..., 0], data[..., 1])
        a1, a2 = t.getcol("ANTENNA1"), t.getcol("ANTENNA2")
        assert np.all(a1 < a2)
        time = t.getcol("TIME")
        assert np.unique(time).size == PARAMS.ntimes
        np.testing.assert_allclose(t.getcol("INTERVAL"), setup.interval)
        np.testing.assert_allclose(np.diff(np.unique(time)), setup.interval, rtol=1e-9)
        uvw = t.getcol("UVW")
        k = 5 * nbl // 3
        ti = k // nbl
        np.testing.assert_allclose(
            uvw[k], setup.ant_uvw[ti, a2[k]] - setup.ant_uvw[ti, a1[k]], atol=1e-9
        )
        assert not t.getcol("FLAG").any()
        np.testing.assert_allclose(t.getcol("WEIGHT"), 1.0)
    with _open(path, "ANTENNA") as t:
        assert t.nrows() == products.nstations
        np.testing.assert_allclose(t.getcol("POSITION"), setup.itrf)
        assert set(t.getcol("DISH_DIAMETER")) == {38.0}
    with _open(path, "FIELD") as t:
        np.testing.assert_allclose(t.getcol("PHASE_DIR")[0, 0], [0.0, math.radians(-30.0)])
    with _open(path, "SPECTRAL_WINDOW") as t:
        np.testing.assert_allclose(t.getcol("CHAN_FREQ")[0], [1.1e8])
        np.testing.assert_allclose(t.getcol("CHAN_WIDTH")[0], [2e7])
    with _open(path, "POLARIZATION") as t:
        assert list(t.getcol("CORR_TYPE")[0]) == [9, 12]
    with _open(path, "OBSERVATION") as t:
        assert list(t.getcol("TELESCOPE_NAME")) == ["SKA1-Low"]


def test_data_are_the_truth_sky_model(simulated):
    products, _ = simulated
    truth = read_truth(products.truth_dir)
    for window, path in enumerate(products.ms_paths):
        with _open(path) as t:
            uvw, data = t.getcol("UVW"), t.getcol("DATA")[:, :, 0]
        freq = np.array([truth.summary["frequencies_hz"][window]])
        model = predict_point_sources(
            uvw,
            freq,
            lmn(truth.sky.ra, truth.sky.dec, (0.0, math.radians(-30.0))),
            truth.sky.flux_at(freq),
        )
        scale = np.abs(model).max()
        assert np.abs(data - model).max() < 1e-6 * scale  # complex64 storage


def _subpixel_peak(image: np.ndarray, ix: int, iy: int) -> tuple[float, float]:
    """Peak near (ix, iy) refined by a parabola through 3 points along each axis."""
    win = image[ix - 2 : ix + 3, iy - 2 : iy + 3]
    dx, dy = np.unravel_index(np.argmax(win), win.shape)
    px, py = ix - 2 + dx, iy - 2 + dy
    fx = image[px - 1 : px + 2, py]
    fy = image[px, py - 1 : py + 2]
    ox = 0.5 * (fx[0] - fx[2]) / (fx[0] - 2 * fx[1] + fx[2])
    oy = 0.5 * (fy[0] - fy[2]) / (fy[0] - 2 * fy[1] + fy[2])
    return px + ox, py + oy


def test_brightest_sources_image_at_their_true_positions(simulated):
    """ducc0 dirty image (uvw * (-1, -1, +1), the MS convention) puts sources where they are."""
    products, _ = simulated
    truth = read_truth(products.truth_dir)
    path = products.ms_paths[0]
    with _open(path) as t:
        uvw, data = t.getcol("UVW"), t.getcol("DATA")[:, :, 0].astype(np.complex128)
    with _open(path, "SPECTRAL_WINDOW") as t:
        freq = t.getcol("CHAN_FREQ")[0]
    npix, cell = 512, 5e-4
    dirty = (
        ducc0.wgridder.experimental.vis2dirty(
            uvw=uvw * np.array([-1.0, -1.0, 1.0]),
            freq=freq,
            vis=data,
            npix_x=npix,
            npix_y=npix,
            pixsize_x=cell,
            pixsize_y=cell,
            epsilon=1e-7,
            do_wgridding=True,
        )
        / data.shape[0]
    )
    pos = lmn(truth.sky.ra, truth.sky.dec, (0.0, math.radians(-30.0)))
    flux = truth.sky.flux_at(freq)[:, 0]
    inside = np.all(np.abs(pos[:, :2] / cell) < npix / 2 - 10, axis=1)
    brightest = [k for k in np.argsort(-flux) if inside[k]][:3]
    assert len(brightest) == 3
    for k in brightest:
        x_true = pos[k, 0] / cell + npix / 2
        y_true = pos[k, 1] / cell + npix / 2
        x, y = _subpixel_peak(dirty, round(x_true), round(y_true))
        assert math.hypot(x - x_true, y - y_true) < 0.2, (k, x - x_true, y - y_true)
        assert dirty[round(x), round(y)] == pytest.approx(flux[k], rel=0.15)
