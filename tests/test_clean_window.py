"""A minor cycle on the region that matters gives the whole image's components."""

from __future__ import annotations

import numpy as np
import pytest

from sdpbatch.science.clean import msmfs_clean
from sdpbatch.science.clean_window import clean_window, msmfs_clean_region


def _psf_terms(npixel: int, width: float = 2.5) -> np.ndarray:
    """A Gaussian PSF with sidelobes, and its spectral terms (a 1 % spread per term)."""
    ix, iy = np.indices((npixel, npixel)) - npixel // 2
    r2 = (ix**2 + iy**2) / width**2
    main = np.exp(-0.5 * r2) + 0.05 * np.cos(0.7 * np.sqrt(r2)) * np.exp(-0.002 * r2 * width**2)
    main /= main[npixel // 2, npixel // 2]
    return np.stack([main, 0.01 * main, 0.02 * main])


def _residual(psf: np.ndarray, sources: list[tuple[int, int, float, float]]) -> np.ndarray:
    """Taylor residuals of point sources (x, y, flux, spectral slope): PSF shifted and summed."""
    n = psf.shape[1]
    out = np.zeros((2, n, n))
    for x, y, flux, slope in sources:
        for k, a in enumerate((flux, flux * slope)):
            for q in range(2):
                out[k] += a * np.roll(psf[k + q], (x - n // 2, y - n // 2), axis=(0, 1))
    return out


SETTINGS = dict(scales=[0, 3], gain=0.2, niter=300, threshold=0.01, fractional_threshold=0.05)


def test_few_sources_in_a_wide_field_are_cleaned_in_a_window():
    """Two sources in one corner of a 512-pixel image: the window is a fraction of the image
    and the model equals the whole-image clean's (float32 rounding aside)."""
    psf = _psf_terms(512)
    residual = _residual(psf, [(100, 120, 5.0, -0.7), (130, 90, 2.0, 0.3)])
    level = SETTINGS["fractional_threshold"] * np.abs(residual[0]).max()
    window = clean_window(residual[0], level, SETTINGS["scales"], psf_support=32)
    assert window is not None
    x0, y0, size = window
    assert size < 300 and x0 <= 100 < x0 + size and y0 <= 90 and 120 < y0 + size
    whole = msmfs_clean(residual, psf, psf_support=32, **SETTINGS)
    region = msmfs_clean_region(residual, psf, psf_support=32, **SETTINGS)
    assert region.components == whole.components > 10
    assert np.abs(region.model_taylor - whole.model_taylor).max() < 1e-5 * 5.0
    inside = (slice(None), slice(x0, x0 + size), slice(y0, y0 + size))
    assert np.abs(region.residual_taylor[inside] - whole.residual_taylor[inside]).max() < 1e-4
    assert region.peak_end == pytest.approx(whole.peak_end, rel=1e-3)


def test_sources_all_over_the_image_use_the_whole_image():
    psf = _psf_terms(256)
    residual = _residual(psf, [(20, 20, 3.0, 0.0), (230, 240, 3.0, 0.0)])
    assert clean_window(residual[0], 0.3, [0, 3], psf_support=32) is None
