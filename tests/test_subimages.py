"""A minor cycle as sub-images cleaned apart gives the whole image's clean."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.signal import fftconvolve

from sdpbatch.science.clean import msmfs_clean
from sdpbatch.science.subimages import margin, owners, plan, reach, split, tiled_clean
from test_clean_window import _psf_terms

NPIXEL = 256
#: (x, y, flux Jy, spectral slope): on the corner of four tiles, on a seam (two touching),
#: beside a seam, inside tiles
POINTS = [
    (128, 128, 5.0, -0.5),
    (127, 60, 3.0, -0.5),
    (128, 61, 2.0, 0.2),
    (64, 200, 4.0, -0.7),
    (200, 128, 1.5, 0.0),
    (40, 40, 2.5, -0.5),
    (190, 210, 1.0, 0.3),
]
GAUSSIAN = (128, 190, 3.0, 3.0)  # x, y, flux Jy, sigma px: across the seam x = 128
SETTINGS = dict(
    scales=[0, 3, 10],
    gain=0.2,
    niter=2000,
    threshold=0.01,
    fractional_threshold=0.01,
    psf_support=32,
)


def _field() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(sky (2, N, N) Jy/pixel, Taylor residual (2, N, N), Taylor PSFs (3, N, N)); the PSF
    without its first row and column is odd, centred on its peak, as ``mode="same"`` needs."""
    psf = _psf_terms(NPIXEL)
    sky = np.zeros((2, NPIXEL, NPIXEL))
    for x, y, flux, slope in POINTS:
        sky[:, x, y] += flux, flux * slope
    ix, iy = np.indices(sky.shape[1:])
    x, y, flux, sigma = GAUSSIAN
    blob = np.exp(-0.5 * ((ix - x) ** 2 + (iy - y) ** 2) / sigma**2)
    sky[0] += flux * blob / blob.sum()
    sky[1] += 0.3 * flux * blob / blob.sum()
    residual = np.zeros_like(sky)
    for k in range(2):
        for q in range(2):
            residual[k] += fftconvolve(sky[q], psf[k + q, 1:, 1:], mode="same")
    return sky, residual, psf


def _box(x: int, y: int, half: int = 8):
    return slice(None), slice(x - half, x + half + 1), slice(y - half, y + half + 1)


def test_tiles_clean_sources_on_seams_and_corners_as_the_whole_image():
    """Four tiles of 128 px over 256: every source's model flux (both Taylor terms) is the
    whole-image clean's within 1e-4 of its flux (float32 rounding of a different FFT size;
    the clean's own error against the sky, ~1-10 %, is far larger), the sources on the seams
    and the corner are there once (not twice, not missed), nothing is left above the level."""
    sky, residual, psf = _field()
    whole = msmfs_clean(residual, psf, **SETTINGS)
    tiled = tiled_clean(residual, psf, size=128, **SETTINGS)
    planned = plan(residual, psf, size=128, scales=[0, 3, 10], threshold=0.01,
                   fractional_threshold=0.01, psf_support=32)  # fmt: skip
    assert planned is not None and len(planned.tiles) == 4
    assert planned.tiles[0].size < NPIXEL
    for x, y, flux, _ in [*POINTS, GAUSSIAN]:
        box = _box(x, y)
        assert tiled.model_taylor[box].sum(axis=(1, 2)) == pytest.approx(
            whole.model_taylor[box].sum(axis=(1, 2)), abs=1e-4 * flux
        )
    # the two touching sources on the seam: their true total once, not twice
    assert tiled.model_taylor[_box(128, 60)][0].sum() == pytest.approx(5.0, rel=0.02)
    assert tiled.model_taylor[_box(128, 128)][0].sum() == pytest.approx(5.0, rel=0.02)
    assert np.abs(tiled.model_taylor - whole.model_taylor).max() < 1e-5 * 5.0
    assert tiled.components == whole.components  # the margins' are dropped, none twice
    # the residual: the dirty image minus the model convolved with the PSF patch (float32
    # rounding), and below the level everywhere
    assert tiled.peak_end <= planned.level * 1.001
    assert tiled.peak_end == pytest.approx(whole.peak_end, rel=1e-3)
    patch = np.zeros_like(psf)
    centre = slice(NPIXEL // 2 - 32, NPIXEL // 2 + 33)
    patch[:, centre, centre] = psf[:, centre, centre]
    model_psf = sum(
        fftconvolve(tiled.model_taylor[q], patch[q, 1:, 1:], mode="same") for q in (0, 1)
    )  # an odd kernel centred on the PSF's peak: "same" keeps the positions
    assert np.abs(tiled.residual_taylor[0] - (residual[0] - model_psf)).max() < 1e-6 * 5.0


def test_straight_cores_cover_every_pixel_once_and_fit_their_sub_images():
    """Cores of at most ``size`` px tile the image exactly once, for sizes that do and do not
    divide it; every sub-image is one square inside the image holding its core and margin."""
    for npixel, size, overlap in [(256, 128, 20), (1000, 300, 37), (4096, 1024, 140), (64, 64, 8)]:
        tiles = split(npixel, size, overlap)
        covered = np.zeros((npixel, npixel), dtype=int)
        for t in tiles:
            assert 0 < t.x1 - t.x0 <= size and 0 < t.y1 - t.y0 <= size
            covered[t.x0 : t.x1, t.y0 : t.y1] += 1
            assert t.size == tiles[0].size and t.size % 2 == 0 or t.size == npixel
            assert 0 <= t.ox and t.ox + t.size <= npixel and 0 <= t.oy and t.oy + t.size <= npixel
            assert t.ox <= max(0, t.x0 - overlap) and t.x1 + overlap <= t.ox + t.size or (
                t.ox + t.size == npixel
            )
            assert t.oy <= max(0, t.y0 - overlap) and min(npixel, t.y1 + overlap) <= t.oy + t.size
        assert (covered == 1).all()
        assert [t.number for t in tiles] == list(range(len(tiles)))


def test_seams_avoid_sources_and_cores_stay_inside_their_margins():
    """The seams bend around the sources near them: each source's main lobe has one owner;
    every pixel has one owner, and a tile's pixels lie inside its sub-image, at least the
    largest scale's and the PSF patch's width from an edge that is not the image's."""
    _, residual, _ = _field()
    scales = [0, 3, 10]
    tiles = split(NPIXEL, 128, margin(scales, 32))
    owner = owners(residual[0], tiles, scales)
    assert sorted(np.unique(owner)) == [t.number for t in tiles]
    for x, y, _, _ in POINTS:
        assert np.unique(owner[x - 2 : x + 3, y - 2 : y + 3]).size == 1, (x, y)
    inner = reach(scales) + 32
    for t in tiles:
        ix, iy = np.nonzero(owner == t.number)
        for lo, hi, origin in ((ix.min(), ix.max(), t.ox), (iy.min(), iy.max(), t.oy)):
            assert lo >= origin + inner or origin == 0
            assert hi < origin + t.size - inner or origin + t.size == NPIXEL


def test_a_psf_with_high_far_sidelobes_is_not_tiled():
    """When the PSF patch must be the whole PSF, a sub-image would be the whole image."""
    _, residual, psf = _field()
    flat = psf.copy()
    flat[:, 5, 5] = 0.1  # a far sidelobe above 2 % of the peak
    assert plan(residual, flat, size=128, scales=[0], threshold=0.01,
                fractional_threshold=0.01, psf_support=32) is None  # fmt: skip
