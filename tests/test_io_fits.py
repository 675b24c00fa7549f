"""FITS images: orientation checked independently with astropy.wcs, headers, atomic writes."""

from __future__ import annotations

import numpy as np
import pytest
from astropy.io import fits
from astropy.wcs import WCS

from sdpbatch.io.fits_image import read_fits_image, write_fits_image

N = 64
CELL = 0.001
CENTRE = (np.deg2rad(30.0), np.deg2rad(-30.0))


def lm_to_radec(l: float, m: float, ra0: float, dec0: float) -> tuple[float, float]:
    """Inverse SIN projection (textbook), radians."""
    n = np.sqrt(1 - l * l - m * m)
    dec = np.arcsin(m * np.cos(dec0) + n * np.sin(dec0))
    ra = ra0 + np.arctan2(l, n * np.cos(dec0) - m * np.sin(dec0))
    return float(ra), float(dec)


def _write(path, image, **kw):
    args = dict(
        phase_centre=CENTRE,
        cellsize=CELL,
        frequencies=[1.0e8],
        bandwidths=[2e7],
        bunit="Jy/beam",
        beam=(np.deg2rad(0.2), np.deg2rad(0.1), np.deg2rad(30.0)),
        obs_start=58849.0 * 86400.0 + 0.25,
        telescope="SKA1-Low",
        history=["made by a test"],
    )
    args.update(kw)
    return write_fits_image(path, image, **args)


@pytest.mark.parametrize("ix,iy", [(N // 2, N // 2), (40, 20), (5, 50)])
def test_wcs_maps_source_to_its_sky_position(tmp_path, ix, iy):
    image = np.zeros((N, N))
    image[ix, iy] = 1.0  # science orientation: l = (ix - N/2) cell east, m north
    _write(tmp_path / "a.fits", image)
    with fits.open(tmp_path / "a.fits") as hdul:
        data = hdul[0].data
        wcs = WCS(hdul[0].header)
    assert data.shape == (1, 1, N, N)
    py, px = np.unravel_index(np.argmax(data[0, 0]), (N, N))  # where the viewer shows it
    ra, dec = lm_to_radec((ix - N / 2) * CELL, (iy - N / 2) * CELL, *CENTRE)
    x, y, _, _ = wcs.all_world2pix([[np.degrees(ra), np.degrees(dec), 1e8, 1]], 0)[0]
    assert x == pytest.approx(px, abs=1e-3)
    assert y == pytest.approx(py, abs=1e-3)
    # and back: the pixel's world coordinates are the source's
    world = wcs.all_pix2world([[px, py, 0, 0]], 0)[0]
    assert world[0] == pytest.approx(np.degrees(ra) % 360, abs=1e-6)
    assert world[1] == pytest.approx(np.degrees(dec), abs=1e-6)


def test_east_is_left(tmp_path):
    image = np.zeros((N, N))
    image[N // 2 + 10, N // 2] = 1.0  # 10 pixels east
    _write(tmp_path / "e.fits", image)
    data = fits.getdata(tmp_path / "e.fits")[0, 0]
    py, px = np.unravel_index(np.argmax(data), (N, N))
    assert px < N // 2 and py == N // 2


def test_header_keywords(tmp_path):
    _write(tmp_path / "h.fits", np.zeros((N, N)))
    h = fits.getheader(tmp_path / "h.fits")
    assert [h[f"CTYPE{k}"] for k in range(1, 5)] == ["RA---SIN", "DEC--SIN", "FREQ", "STOKES"]
    assert h["NAXIS"] == 4 and h["NAXIS4"] == 1 and h["CRVAL4"] == 1.0
    assert h["CDELT1"] == pytest.approx(-np.degrees(CELL))
    assert h["CDELT2"] == pytest.approx(np.degrees(CELL))
    assert h["CRVAL1"] == pytest.approx(30.0) and h["CRVAL2"] == pytest.approx(-30.0)
    assert h["CRVAL3"] == 1e8 and h["CDELT3"] == 2e7
    assert h["BMAJ"] == pytest.approx(0.2) and h["BMIN"] == pytest.approx(0.1)
    assert h["BPA"] == pytest.approx(30.0)
    assert h["RADESYS"] == "FK5" and h["EQUINOX"] == 2000.0
    assert h["BUNIT"] == "Jy/beam" and h["TELESCOP"] == "SKA1-Low"
    assert h["DATE-OBS"] == "2020-01-01T00:00:00.250" and h["ORIGIN"] == "sdpbatch"
    assert h["MJD-OBS"] == pytest.approx(58849.0 + 0.25 / 86400, abs=1e-9) and h["TIMESYS"] == "UTC"
    assert "made by a test" in str(h["HISTORY"])


def test_cube_round_trip(tmp_path):
    rng = np.random.default_rng(1)
    cube = rng.normal(size=(3, N, N)).astype(np.float32)
    freqs = [0.9e8, 1.0e8, 1.1e8]
    _write(tmp_path / "c.fits", cube, frequencies=freqs, bandwidths=None, beam=None)
    back, header = read_fits_image(tmp_path / "c.fits")
    np.testing.assert_array_equal(back, cube)
    assert header["NAXIS3"] == 3 and header["CDELT3"] == pytest.approx(1e7)
    assert "BMAJ" not in header
    wcs = WCS(header)
    assert wcs.all_pix2world([[0, 0, 2, 0]], 0)[0][2] == pytest.approx(1.1e8)


def test_uneven_frequencies_rejected(tmp_path):
    with pytest.raises(ValueError, match="evenly spaced"):
        _write(tmp_path / "u.fits", np.zeros((3, N, N)), frequencies=[1e8, 1.1e8, 1.3e8])


def test_interrupted_write_keeps_older_file(tmp_path, monkeypatch):
    target = tmp_path / "r.fits"
    _write(target, np.ones((N, N)))

    def boom(self, *args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(fits.PrimaryHDU, "writeto", boom)
    with pytest.raises(OSError, match="disk full"):
        _write(target, np.zeros((N, N)))
    with pytest.raises(OSError):
        _write(tmp_path / "new.fits", np.zeros((N, N)))
    monkeypatch.undo()
    assert not (tmp_path / "new.fits").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.fits"]
    back, _ = read_fits_image(target)
    assert np.all(back == 1.0)
