"""Small tasks that combine the groups' results: sums, the minor cycle, the final images."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

from sdpbatch.execution.ical.group import trim_memory, trimmed
from sdpbatch.execution.ical.settings import CleanSettings
from sdpbatch.execution.ical.tasks import WindowImages, ensure_ducc_threads
from sdpbatch.science.beam import CleanBeam, fit_clean_beam, restore
from sdpbatch.science.clean import CleanResult, msmfs_clean

Normalised = tuple[np.ndarray, float]
"""Images divided by their total weight, and that weight."""


def sum_images(*parts: tuple[np.ndarray, float]) -> Normalised:
    """Sum of unnormalised images of the groups, normalised by the total weight."""
    total = sum(p[1] for p in parts)
    if total <= 0:
        raise ValueError("no unflagged visibilities with positive weight to image")
    images = parts[0][0].copy()
    for p in parts[1:]:
        images += p[0]
    return images / total, total


def sum_arrays(*arrays: np.ndarray) -> np.ndarray:
    return sum(arrays[1:], arrays[0].copy())


@trimmed
def psf_beam(psf: Normalised, cellsize: float) -> CleanBeam:
    """The clean beam fitted to the PSF (raises if the cell size does not sample the beam)."""
    return fit_clean_beam(psf[0][0], cellsize)


def clean_cycle(residual: Normalised, psf: Normalised, clean: CleanSettings) -> CleanResult:
    """One minor cycle (multi-scale multi-frequency clean) on the summed residual."""
    ensure_ducc_threads(clean.nthreads)
    return msmfs_clean(
        residual[0],
        psf[0],
        scales=clean.scales,
        gain=clean.gain,
        niter=clean.niter,
        threshold=clean.threshold,
        fractional_threshold=clean.fractional_threshold,
        psf_support=clean.psf_support,
        nthreads=clean.nthreads,
    )


def increment_of(result: CleanResult) -> np.ndarray:
    """The model increment (nmoment, N, N) Jy/pixel found by a minor cycle."""
    return result.model_taylor


def add_model(model: np.ndarray | None, result: CleanResult) -> np.ndarray:
    """The model after a minor cycle (its increment added)."""
    return result.model_taylor.copy() if model is None else model + result.model_taylor


@dataclass(frozen=True)
class CleanStats:
    """Small statistics of a minor cycle for the client."""

    peak: float
    peak_end: float
    rms: float
    components: int
    stop_reason: str


def clean_stats(result: CleanResult) -> CleanStats:
    return CleanStats(
        peak=result.peak_start,
        peak_end=result.peak_end,
        rms=float(np.sqrt(np.mean(result.residual_taylor[0] ** 2))),
        components=result.components,
        stop_reason=result.stop_reason,
    )


@dataclass
class FinalImages:
    """The final residuals, cubes and restored images (see :class:`IcalResult`)."""

    residual_taylor: np.ndarray
    residual_cube: np.ndarray
    model_cube: np.ndarray
    restored: np.ndarray
    restored_cube: np.ndarray


def _window_sums(windows: Iterable[WindowImages], nwin: int, npixel: int):
    """Unnormalised residual per window, its weight and Taylor factor, over the groups."""
    cube, weights, taylor = np.zeros((nwin, npixel, npixel)), np.zeros(nwin), np.zeros(nwin)
    for part in windows:
        for w, (image, s, t) in part.items():
            cube[w] += image
            weights[w] += s
            taylor[w] = t
    return cube, weights, taylor


def final_images(
    model: np.ndarray,
    beam: CleanBeam,
    windows: Iterable[WindowImages],
    *,
    nwin: int,
    cellsize: float,
    nthreads: int,
) -> FinalImages:
    """Final residual, cubes and restored images from the per-window residuals.

    The Taylor residual follows from the windows' as ``sum_w t_w^k U_w / sum_w W_w``, exact
    when every window has one channel.  Restoring is linear: the Taylor terms are restored
    once, then combined per window.
    """
    nmoment, npixel = model.shape[0], model.shape[1]
    residual_cube, weights, taylor = _window_sums(windows, nwin, npixel)
    residual_taylor = np.zeros((nmoment, npixel, npixel))
    for w in range(nwin):
        for k in range(nmoment):
            residual_taylor[k] += taylor[w] ** k * residual_cube[w]
        if weights[w] > 0:
            residual_cube[w] /= weights[w]
    residual_taylor /= weights.sum()
    restored_taylor = [restore(model[k], beam, cellsize, nthreads=nthreads) for k in range(nmoment)]
    model_cube = np.zeros((nwin, npixel, npixel))
    restored_cube = residual_cube.copy()
    for w in range(nwin):
        for k in range(nmoment):
            model_cube[w] += taylor[w] ** k * model[k]
            restored_cube[w] += taylor[w] ** k * restored_taylor[k]
    trim_memory()
    return FinalImages(
        residual_taylor=residual_taylor,
        residual_cube=residual_cube,
        model_cube=model_cube,
        restored=restored_taylor[0] + residual_taylor[0],
        restored_cube=restored_cube,
    )
