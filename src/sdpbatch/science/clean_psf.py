"""The PSF a minor cycle may use, and what it allows: the patch of it held (the whole PSF when
its far sidelobes are high), the level a minor cycle stops at, and a model found apart (sub-image
by sub-image) subtracted from the residual with that patch.

Conventions as :mod:`sdpbatch.science.clean`: images ``image[ix, iy]``, the PSF's peak 1 at
``(N // 2, N // 2)``, residuals Jy/beam, models Jy/pixel, Taylor terms first.
"""

from __future__ import annotations

import numpy as np
from ducc0.fft import c2r, good_size, r2c

from sdpbatch.science.parallel import side_by_side


def stopping_level(
    residual0: np.ndarray,
    psf0: np.ndarray,
    *,
    threshold: float,
    fractional_threshold: float,
    psf_support: int,
) -> tuple[float, int]:
    """(level Jy/beam, PSF patch half-width px) of a minor cycle on the term-0 residual
    ``residual0`` (N, N) with the term-0 PSF ``psf0`` (N, N): the highest of the absolute,
    fractional and far-sidelobe levels (see :mod:`sdpbatch.science.clean`), and
    :func:`patch_support`."""
    support = patch_support(psf0, psf_support)
    peak = float(np.abs(residual0).max())
    level = max(threshold, fractional_threshold * peak, far_sidelobe(psf0, support) * peak)
    return level, support


def subtract_model(
    residual_taylor: np.ndarray,
    psf_taylor: np.ndarray,
    model_taylor: np.ndarray,
    *,
    support: int,
    nthreads: int = 1,
) -> np.ndarray:
    """``R_k - sum_q P_(k+q) * M_q`` (``*``: convolution with the PSF cut to ``±support``
    pixels, by FFTs in single precision as each outer step of a minor cycle; the
    difference in double): the residual (nmoment, N, N) Jy/beam after a model
    ``model_taylor`` (nmoment, N, N) Jy/pixel found apart from it (e.g. sub-image by
    sub-image).  ``psf_taylor`` (2 nmoment - 1, N, N), peak at ``(N // 2, N // 2)``.  The FFTs
    run side by side on ``nthreads`` threads, one each."""
    nmoment, npixel, _ = residual_taylor.shape
    size = good_size(npixel + support + 1, True)  # no wrap-around into [:N, :N]
    window = slice(npixel // 2 - support, npixel // 2 + support + 1)

    def spectrum(image: np.ndarray, centre: int = 0) -> np.ndarray:
        grid = np.zeros((size, size), dtype=np.float32)
        grid[: image.shape[0], : image.shape[1]] = image
        if centre:  # a kernel: its centre on pixel (0, 0)
            grid = np.roll(grid, (-centre, -centre), axis=(0, 1))
        return r2c(grid, axes=(0, 1))

    psf_hat = side_by_side(lambda p: spectrum(p[window, window], support), psf_taylor, nthreads)
    model_hat = side_by_side(spectrum, model_taylor, nthreads)
    residual = np.array(residual_taylor, dtype=float)

    def subtract(k: int) -> None:
        total = sum(psf_hat[k + q] * model_hat[q] for q in range(nmoment))
        image = c2r(total, axes=(0, 1), lastsize=size, forward=False, inorm=2)
        residual[k] -= image[:npixel, :npixel]

    side_by_side(subtract, range(nmoment), nthreads)
    return residual


FAR_SIDELOBE_LIMIT = 0.02
"""A PSF patch whose outside holds sidelobes above this fraction of the peak is too small: the
minor cycles then use the whole PSF (a snapshot's sidelobes stay high far out, and subtracting
components with a cut PSF makes deep minor cycles diverge)."""


def patch_support(psf: np.ndarray, psf_support: int) -> int:
    """The half-width of the PSF patch the minor cycles use: ``psf_support`` (clipped to the
    image), or the whole PSF when the sidelobes outside that patch exceed
    :data:`FAR_SIDELOBE_LIMIT`.  ``psf`` (N, N), peak 1 at the centre."""
    largest = psf.shape[0] // 2 - 1
    support = max(1, min(int(psf_support), largest))
    return largest if far_sidelobe(psf, support) > FAR_SIDELOBE_LIMIT else support


def far_sidelobe(psf: np.ndarray, support: int) -> float:
    """The largest |psf| outside the central ``(2 support + 1)^2`` patch (0 if none): the
    relative error of subtracting a component with the patch only.  ``psf`` (N, N), peak 1 at
    (N // 2, N // 2)."""
    centre = psf.shape[0] // 2
    inner = slice(max(0, centre - support), centre + support + 1)
    outside = np.abs(np.asarray(psf, dtype=np.float64))
    outside[inner, inner] = 0.0
    return float(outside.max()) if outside.size else 0.0
