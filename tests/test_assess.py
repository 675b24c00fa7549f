"""Quality measures against constructed cases with known answers."""

from __future__ import annotations

import numpy as np
import pytest

from sdpbatch.science.assess import (
    gain_phase_error,
    image_statistics,
    local_east_north,
    measure_source,
    sky_to_pixel,
)


def gaussian_image(n, sources, fwhm_major, fwhm_minor, pa):
    """Sum of elliptical Gaussians (peak = flux) at fractional pixels (x, y); pa from +y to +x."""
    x, y = np.meshgrid(np.arange(n), np.arange(n), indexing="ij")
    s_maj, s_min = fwhm_major / 2.3548, fwhm_minor / 2.3548
    image = np.zeros((n, n))
    for flux, x0, y0 in sources:
        dx, dy = x - x0, y - y0
        along = dx * np.sin(pa) + dy * np.cos(pa)  # major axis direction
        across = dx * np.cos(pa) - dy * np.sin(pa)
        image += flux * np.exp(-0.5 * ((along / s_maj) ** 2 + (across / s_min) ** 2))
    return image


def test_measure_source_interpolates_gaussian_peak():
    sources = [(3.0, 40.3, 21.7), (1.5, 90.62, 100.45), (0.8, 20.5, 99.5)]
    image = gaussian_image(128, sources, 5.0, 3.2, np.deg2rad(35.0))
    for flux, x0, y0 in sources:
        f, x, y = measure_source(image, x0 + 0.4, y0 - 0.4)  # a guess is enough
        assert f == pytest.approx(flux, rel=1e-3)
        assert x == pytest.approx(x0, abs=0.02) and y == pytest.approx(y0, abs=0.02)
        nearest = image[int(round(x0)), int(round(y0))]
        assert abs(nearest - flux) / flux > 0.01  # the nearest pixel would fail the 1% test


def test_measure_source_with_noise():
    rng = np.random.default_rng(2)
    image = gaussian_image(96, [(10.0, 47.3, 50.8)], 6.0, 6.0, 0.0)
    image += rng.normal(0, 0.01, image.shape)
    f, x, y = measure_source(image, 47.3, 50.8)
    assert f == pytest.approx(10.0, rel=0.005)
    assert abs(x - 47.3) < 0.05 and abs(y - 50.8) < 0.05


def test_image_statistics_robust_rms():
    rng = np.random.default_rng(3)
    noise = rng.normal(0, 0.1, (256, 256))
    image = noise + gaussian_image(256, [(50.0, 100.0, 120.0), (20.0, 30, 30)], 4, 4, 0)
    stats = image_statistics(image)
    assert stats["rms"] == pytest.approx(0.1, rel=0.05)
    assert stats["std"] > 0.3  # the plain std is dominated by the sources
    assert stats["peak"] == pytest.approx(50.0, abs=0.5)
    assert stats["dynamic_range"] == pytest.approx(500.0, rel=0.06)
    with_residual = image_statistics(image, noise_image=0.5 * noise)
    assert with_residual["rms"] == pytest.approx(0.05, rel=0.05)


def test_sky_to_pixel_inverts_sin_projection():
    ra0, dec0 = np.deg2rad(10.0), np.deg2rad(-30.0)
    n, cell = 1024, 0.0005
    for l, m in [(0.0, 0.0), (0.1, -0.05), (-0.2, 0.15)]:
        nn = np.sqrt(1 - l * l - m * m)
        dec = np.arcsin(m * np.cos(dec0) + nn * np.sin(dec0))
        ra = ra0 + np.arctan2(l, nn * np.cos(dec0) - m * np.sin(dec0))
        ix, iy = sky_to_pixel(ra, dec, (ra0, dec0), cell, n)
        assert ix == pytest.approx(n / 2 + l / cell, abs=1e-6)
        assert iy == pytest.approx(n / 2 + m / cell, abs=1e-6)
    ix, _ = sky_to_pixel(ra0 + 0.01, dec0, (ra0, dec0), cell, n)
    assert ix > n / 2  # east (larger RA) is larger ix


def _itrf(enu):
    lon, lat = np.deg2rad(116.76), np.deg2rad(-26.82)
    e, nn, u = enu.T
    sl, cl, sp, cp = np.sin(lon), np.cos(lon), np.sin(lat), np.cos(lat)
    c = 6378e3 * np.array([cp * cl, cp * sl, sp])
    return c + np.stack(
        [
            -sl * e - sp * cl * nn + cp * cl * u,
            cl * e - sp * sl * nn + cp * sl * u,
            cp * nn + sp * u,
        ],
        axis=1,
    )


def test_local_east_north_from_itrf():
    rng = np.random.default_rng(4)
    enu = np.column_stack([rng.uniform(-800, 800, (30, 2)), np.zeros(30)])
    en = local_east_north(_itrf(enu))
    np.testing.assert_allclose(en, enu[:, :2] - enu[:, :2].mean(axis=0), atol=0.5)


def test_gain_phase_error_removes_reference_and_gradient():
    rng = np.random.default_rng(5)
    ntime, nant = 4, 40
    enu = np.column_stack([rng.uniform(-700, 700, (nant, 2)), rng.normal(0, 1, nant)])
    true_phase = rng.normal(0, 1.0, (ntime, nant))
    true = np.exp(1j * true_phase)
    offset = rng.uniform(-3, 3, (ntime, 1))  # arbitrary reference phase per time
    gradient = rng.normal(0, 1e-3, (ntime, 2)) @ enu[:, :2].T  # a linear phase gradient
    small = rng.normal(0, 0.003, (ntime, nant))
    solved = np.exp(1j * (true_phase + offset + gradient + small))
    err = gain_phase_error(solved, true, enu)
    assert 0.002 < err < 0.0035
    assert gain_phase_error(solved, true, _itrf(enu)) == pytest.approx(err, rel=0.02)
    # a convention slip (conjugated solutions) is caught
    assert gain_phase_error(np.conj(solved), true, enu) > 1.0
    # per-frequency solutions broadcast against a frequency-independent truth
    cube = np.repeat(solved[..., None], 3, axis=-1)
    assert gain_phase_error(cube, true, enu) == pytest.approx(err)
