"""A minor cycle on the region that matters: the part of the image where anything can be cleaned.

Every outer step of :func:`sdpbatch.science.clean.msmfs_clean` convolves the whole residual
with each scale (FFTs of the whole padded image).  When the pixels that could be cleaned
(those of the term-0 residual above a fraction of the stopping level, and the scales' reach
around them) fill only part of the image, as in a wide field with a few sources, the cycle
runs on the smallest square window holding them, with the PSF cut to the same size, and the
model and residual are put back in place.  Components are found exactly as in the whole
image; the residual outside the window is left as it was (the next major cycle recomputes it
from the visibilities anyway).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from sdpbatch.science.clean import (
    CleanResult,
    msmfs_clean,
    scale_kernel,
)
from sdpbatch.science.clean_psf import stopping_level

REGION_FRACTION = 0.3
"""Pixels of the term-0 residual above this fraction of the stopping level can be cleaned."""

MARGIN = 8
"""Pixels added around them besides the largest scale's half width."""

MOST = 0.6
"""A window with more than this fraction of the image's pixels is not worth cutting out."""


def clean_window(
    residual0: np.ndarray, level: float, scales: Sequence[int], psf_support: int
) -> tuple[int, int, int] | None:
    """(x0, y0, size) of the square window holding every pixel that can be cleaned, or None
    when it would cover most of the image.  ``residual0`` (N, N), N and ``size`` even; the
    window holds the whole PSF patch (``2 psf_support + 2`` pixels at least), so components
    are subtracted as in the whole image."""
    npixel = residual0.shape[0]
    ix, iy = np.nonzero(np.abs(residual0) >= REGION_FRACTION * level)
    if ix.size == 0:
        return None
    reach = max(scale_kernel(int(s)).shape[0] // 2 for s in scales) + MARGIN
    lo = np.array([ix.min(), iy.min()]) - reach
    hi = np.array([ix.max(), iy.max()]) + reach + 1
    size = max(int(max(hi - lo)), 2 * int(psf_support) + 2)
    size += size % 2
    if size * size > MOST * npixel * npixel:
        return None
    start = np.clip((lo + hi) // 2 - size // 2, 0, npixel - size)
    return int(start[0]), int(start[1]), size


def msmfs_clean_region(
    residual_taylor: np.ndarray,
    psf_taylor: np.ndarray,
    *,
    scales: Sequence[int],
    gain: float,
    niter: int,
    threshold: float,
    fractional_threshold: float,
    psf_support: int,
    nthreads: int = 1,
) -> CleanResult:
    """:func:`~sdpbatch.science.clean.msmfs_clean` (same arguments and result) on the window
    of :func:`clean_window` when there is one, else on the whole image."""
    settings = dict(gain=gain, niter=niter, psf_support=psf_support, nthreads=nthreads)
    peak = float(np.abs(residual_taylor[0]).max())
    npixel = residual_taylor.shape[1]
    level, support = stopping_level(
        residual_taylor[0],
        psf_taylor[0],
        threshold=threshold,
        fractional_threshold=fractional_threshold,
        psf_support=psf_support,
    )
    window = clean_window(residual_taylor[0], level, scales, support)
    if window is None:
        return msmfs_clean(
            residual_taylor,
            psf_taylor,
            scales=scales,
            threshold=threshold,
            fractional_threshold=fractional_threshold,
            **settings,
        )
    x0, y0, size = window
    centre = npixel // 2 - size // 2
    part = msmfs_clean(
        residual_taylor[:, x0 : x0 + size, y0 : y0 + size],
        psf_taylor[:, centre : centre + size, centre : centre + size],
        scales=scales,
        threshold=level,  # the whole image's level, not the window's
        fractional_threshold=0.0,
        **settings,
    )
    model = np.zeros_like(residual_taylor, dtype=np.float64)
    model[:, x0 : x0 + size, y0 : y0 + size] = part.model_taylor
    residual = np.array(residual_taylor, dtype=np.float64)
    residual[:, x0 : x0 + size, y0 : y0 + size] = part.residual_taylor
    return CleanResult(
        model_taylor=model,
        residual_taylor=residual,
        components=part.components,
        peak_start=peak,
        peak_end=float(np.abs(residual[0]).max()),
        stop_reason=part.stop_reason,
    )
