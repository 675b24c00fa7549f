"""Clean beam: fit an elliptical Gaussian to the PSF main lobe, and restore models with it.

Orientation (the ICAL contract): ``image[ix, iy]`` with ix growing east (increasing RA) and iy
growing north. The position angle ``bpa`` is that of the major axis measured from north through
east, as FITS BPA: a beam with ``bpa = +45 deg`` is elongated from south-west to north-east, i.e.
along ``ix = iy``. It is a property of the sky, so it does not change when a FITS image is shown
with RA increasing to the left.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from ducc0.fft import c2r, good_size, r2c
from scipy import ndimage
from scipy.optimize import least_squares

#: FWHM = FWHM_PER_SIGMA * sigma for a Gaussian.
FWHM_PER_SIGMA = 2.0 * np.sqrt(2.0 * np.log(2.0))
#: Pixels of the main lobe used by the fit: those above this fraction of the peak.
FIT_LEVEL = 0.35


@dataclass(frozen=True)
class CleanBeam:
    """Elliptical Gaussian restoring beam: FWHM axes and position angle, radians."""

    bmaj: float
    bmin: float
    bpa: float


def gaussian_kernel(shape: tuple[int, int], beam: CleanBeam, cellsize: float) -> np.ndarray:
    """The peak-1 Gaussian of ``beam`` sampled on ``shape`` pixels, centred on (nx//2, ny//2).

    ``cellsize`` is the pixel size in radians; ix grows east, iy north.
    """
    if cellsize <= 0:
        raise ValueError(f"cellsize must be > 0 radians, got {cellsize}")
    dx = (np.arange(shape[0]) - shape[0] // 2)[:, None] * cellsize
    dy = (np.arange(shape[1]) - shape[1] // 2)[None, :] * cellsize
    return _gaussian(dx, dy, beam.bmaj / FWHM_PER_SIGMA, beam.bmin / FWHM_PER_SIGMA, beam.bpa)


def _gaussian(dx, dy, sigma_major, sigma_minor, bpa):
    """Peak-1 Gaussian at east/north offsets (same units as the sigmas)."""
    along = dx * np.sin(bpa) + dy * np.cos(bpa)
    across = dx * np.cos(bpa) - dy * np.sin(bpa)
    return np.exp(-0.5 * ((along / sigma_major) ** 2 + (across / sigma_minor) ** 2))


def fit_clean_beam(psf: np.ndarray, cellsize: float) -> CleanBeam:
    """Fit an elliptical Gaussian (peak 1, centred on the PSF peak) to the PSF main lobe.

    Parameters
    ----------
    psf : (N, N) PSF, peak 1 at (N // 2, N // 2).
    cellsize : pixel size in radians.

    Returns the FWHM axes (radians, ``bmaj >= bmin``) and ``bpa`` in [-pi/2, pi/2).
    """
    psf = np.asarray(psf, dtype=float)
    if psf.ndim != 2 or psf.shape[0] != psf.shape[1]:
        raise ValueError(f"psf must be a square (N, N) image, got shape {psf.shape}")
    if cellsize <= 0:
        raise ValueError(f"cellsize must be > 0 radians, got {cellsize}")
    peak = psf.max()
    if not peak > 0:
        raise ValueError("psf has no positive peak")
    px, py = np.unravel_index(np.argmax(psf), psf.shape)
    labels, _ = ndimage.label(psf >= FIT_LEVEL * peak)
    lobe = labels == labels[px, py]
    ix, iy = np.nonzero(lobe)
    if ix.size < 4:
        raise ValueError(
            f"the PSF main lobe has only {ix.size} pixels above {FIT_LEVEL} of the peak: "
            "the cell size is too large to sample the beam"
        )
    dx, dy = ix - px, iy - py
    values = psf[ix, iy] / peak
    sigma0 = np.sqrt(max(np.mean(dx**2 + dy**2), 0.5))

    def misfit(p):
        return _gaussian(dx, dy, p[0], p[1], p[2]) - values

    fit = least_squares(misfit, x0=[sigma0 * 1.2, sigma0 * 0.8, 0.3], method="lm")
    sigma_a, sigma_b, angle = np.abs(fit.x[0]), np.abs(fit.x[1]), fit.x[2]
    if sigma_b > sigma_a:
        sigma_a, sigma_b, angle = sigma_b, sigma_a, angle + np.pi / 2
    bpa = (angle + np.pi / 2) % np.pi - np.pi / 2
    return CleanBeam(
        bmaj=float(sigma_a * FWHM_PER_SIGMA * cellsize),
        bmin=float(sigma_b * FWHM_PER_SIGMA * cellsize),
        bpa=float(bpa),
    )


def restore(model: np.ndarray, beam: CleanBeam, cellsize: float) -> np.ndarray:
    """Convolve a (N, N) Jy/pixel model with the peak-1 beam Gaussian: (N, N) Jy/beam.

    Linear (zero-padded) FFT convolution, so flux near one edge does not wrap to the other.
    One thread (:mod:`sdpbatch.science.parallel`).
    """
    model = np.asarray(model, dtype=float)
    if model.ndim != 2:
        raise ValueError(f"model must be an (N, N) image, got shape {model.shape}")
    reach = int(np.ceil(6.0 * beam.bmaj / FWHM_PER_SIGMA / cellsize)) + 1
    reach = min(reach, max(model.shape))
    kernel = gaussian_kernel((2 * reach + 1, 2 * reach + 1), beam, cellsize)
    size = [good_size(n + 2 * reach + 1, True) for n in model.shape]
    grid = np.zeros(size)
    grid[: model.shape[0], : model.shape[1]] = model
    kernel_grid = np.zeros(size)
    kernel_grid[: kernel.shape[0], : kernel.shape[1]] = kernel
    kernel_grid = np.roll(kernel_grid, (-reach, -reach), axis=(0, 1))
    spectrum = r2c(grid, axes=(0, 1)) * r2c(kernel_grid, axes=(0, 1))
    out = c2r(spectrum, axes=(0, 1), lastsize=size[1], forward=False, inorm=2)
    return out[: model.shape[0], : model.shape[1]]
