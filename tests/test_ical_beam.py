"""Clean beam fit and restoration, with the position-angle convention pinned down."""

from __future__ import annotations

import numpy as np
import pytest
from ducc0.wgridder.experimental import vis2dirty

from sdpbatch.science.beam import CleanBeam, fit_clean_beam, gaussian_kernel, restore

CELL = 1e-4  # radians
NPIXEL = 128


def elliptical_gaussian(npixel, bmaj_px, bmin_px, bpa):
    """Peak-1 Gaussian written out directly: ix east, iy north, bpa from north through east."""
    ix, iy = np.indices((npixel, npixel)) - npixel // 2
    east, north = ix.astype(float), iy.astype(float)
    major_axis = np.array([np.sin(bpa), np.cos(bpa)])  # (east, north) unit vector
    along = east * major_axis[0] + north * major_axis[1]
    across = east * major_axis[1] - north * major_axis[0]
    return np.exp(-4 * np.log(2) * ((along / bmaj_px) ** 2 + (across / bmin_px) ** 2))


@pytest.mark.parametrize("bpa_deg", [0.0, 30.0, -60.0, 89.0])
def test_fit_recovers_a_known_elliptical_gaussian(bpa_deg):
    psf = elliptical_gaussian(NPIXEL, 9.0, 4.5, np.radians(bpa_deg))
    beam = fit_clean_beam(psf, CELL)
    assert beam.bmaj == pytest.approx(9.0 * CELL, rel=1e-2)
    assert beam.bmin == pytest.approx(4.5 * CELL, rel=1e-2)
    assert np.degrees(beam.bpa) == pytest.approx(bpa_deg, abs=0.5)


def test_position_angle_sign_on_the_sky():
    """A beam with bpa = +45 deg is long towards north-east (+ix, +iy), short towards north-west."""
    root2 = np.sqrt(2.0)
    beam = CleanBeam(bmaj=10 * root2 * CELL, bmin=4 * root2 * CELL, bpa=np.radians(45.0))
    kernel = gaussian_kernel((NPIXEL, NPIXEL), beam, CELL)
    c = NPIXEL // 2
    assert kernel[c, c] == pytest.approx(1.0)
    # half maximum at bmaj / 2 towards north-east and south-west, at bmin / 2 towards north-west
    assert kernel[c + 5, c + 5] == pytest.approx(0.5) and kernel[c - 5, c - 5] == pytest.approx(0.5)
    assert kernel[c - 2, c + 2] == pytest.approx(0.5) and kernel[c + 2, c - 2] == pytest.approx(0.5)
    fitted = fit_clean_beam(kernel, CELL)
    assert np.degrees(fitted.bpa) == pytest.approx(45.0, abs=0.1)


def test_fit_of_a_ducc0_psf_follows_the_uv_coverage():
    """uv tracks along u = v (north-east) give a beam narrow along NE, so long along NW: -45 deg."""
    rng = np.random.default_rng(3)
    along = rng.normal(0.0, 400.0, 4000)
    across = rng.normal(0.0, 100.0, 4000)
    u = (along - across) / np.sqrt(2)
    v = (along + across) / np.sqrt(2)
    uvw = np.stack([u, v, np.zeros_like(u)], axis=1) * np.array([-1, -1, 1])  # MS convention
    frequency = 299792458.0  # 1 m wavelength
    psf = vis2dirty(
        uvw=uvw,
        freq=np.array([frequency]),
        vis=np.ones((len(u), 1), complex),
        npix_x=NPIXEL,
        npix_y=NPIXEL,
        pixsize_x=2e-4,
        pixsize_y=2e-4,
        epsilon=1e-7,
        do_wgridding=False,
    )
    beam = fit_clean_beam(psf / psf.max(), 2e-4)
    assert np.degrees(beam.bpa) == pytest.approx(-45.0, abs=3.0)
    assert beam.bmaj / beam.bmin == pytest.approx(4.0, rel=0.15)


def test_restore_of_a_delta_gives_the_beam_and_keeps_flux():
    beam = CleanBeam(bmaj=7 * CELL, bmin=3 * CELL, bpa=np.radians(20.0))
    model = np.zeros((NPIXEL, NPIXEL))
    model[70, 50] = 2.0
    restored = restore(model, beam, CELL)
    expected = 2.0 * np.roll(elliptical_gaussian(NPIXEL, 7, 3, np.radians(20)), (6, -14), (0, 1))
    np.testing.assert_allclose(restored, expected, atol=1e-7)
    area_px = np.pi * 7 * 3 / (4 * np.log(2))
    assert restored.sum() == pytest.approx(2.0 * area_px, rel=1e-6)


def test_restore_does_not_wrap_around_the_edges():
    beam = CleanBeam(bmaj=6 * CELL, bmin=6 * CELL, bpa=0.0)
    model = np.zeros((NPIXEL, NPIXEL))
    model[0, 0] = 1.0
    restored = restore(model, beam, CELL)
    assert restored[0, 0] == pytest.approx(1.0)
    assert np.abs(restored[-8:, :]).max() < 1e-9 and np.abs(restored[:, -8:]).max() < 1e-9


def test_bad_input_is_rejected():
    with pytest.raises(ValueError, match="cellsize"):
        fit_clean_beam(elliptical_gaussian(32, 4, 3, 0.0), 0.0)
    with pytest.raises(ValueError, match="square"):
        fit_clean_beam(np.ones((4, 5)), CELL)
    with pytest.raises(ValueError, match="main lobe"):
        delta = np.zeros((32, 32))
        delta[16, 16] = 1.0
        fit_clean_beam(delta, CELL)
