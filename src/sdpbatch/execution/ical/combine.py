"""Small tasks that combine the groups' results: sums, Taylor images, clean, final images.

The Taylor images of a channel block decomposition (as WSClean's joined channels): with block
images ``D_b`` (unnormalised) and the blocks' Taylor moments ``m_bk = sum_c W_c t_c^k /
sum_c W_c`` over their channels (``t_c = (nu_c - nu0) / nu0``, ``W_c`` the channel's imaging
weight), ``R_k = sum_b m_bk D_b / sum_b W_b``; exact when every block is one channel, and for
``k = 0`` always.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from sdpbatch.execution.ical.group import trim_memory, trimmed
from sdpbatch.execution.ical.plan import ChannelBlock
from sdpbatch.execution.ical.settings import CleanSettings
from sdpbatch.execution.ical.tasks import BlockImages
from sdpbatch.science.assess import robust_rms
from sdpbatch.science.beam import CleanBeam, fit_clean_beam, restore
from sdpbatch.science.clean import CleanResult
from sdpbatch.science.clean_window import msmfs_clean_region
from sdpbatch.science.imaging import fourier_upsample
from sdpbatch.science.parallel import side_by_side


def sum_arrays(*arrays: np.ndarray) -> np.ndarray:
    return sum(arrays[1:], arrays[0].copy())


def block_moments(
    channel_weights: np.ndarray, taylor: np.ndarray, blocks: Sequence[ChannelBlock], nterm: int
) -> np.ndarray:
    """Taylor moments (nblocks, nterm) of the channel blocks: the weighted mean of
    ``t_c**k`` over each block's channels (unweighted where a block has no weight).

    channel_weights, taylor : (nchan,) imaging weight and t_c of every channel of the run.
    """
    moments = np.zeros((len(blocks), nterm))
    for b, block in enumerate(blocks):
        c = np.asarray(block.channels)
        w = channel_weights[c] if channel_weights[c].sum() > 0 else np.ones(c.size)
        moments[b] = (w[:, None] * taylor[c, None] ** np.arange(nterm)).sum(axis=0) / w.sum()
    return moments


def taylor_images(
    images: BlockImages, moments: np.ndarray, nterm: int, npixel: int, nthreads: int = 1
) -> np.ndarray:
    """Normalised Taylor images (nterm, npixel, npixel): ``sum_b m_bk D_b / sum_b W_b``,
    interpolated from the gridding pixels (small inversion) when they are fewer."""
    total = sum(images.weights.values())
    if total <= 0:
        raise ValueError("no unflagged visibilities with positive weight to image")
    first = next(iter(images.images.values()))
    out = np.zeros((nterm, *first.shape))
    for b, image in images.images.items():
        for k in range(nterm):
            out[k] += moments[b, k] * image
    return np.stack(side_by_side(lambda t: fourier_upsample(t / total, npixel), out, nthreads))


@trimmed
def psf_taylor(
    images: BlockImages, moments: np.ndarray, nmoment: int, npixel: int, nthreads: int
) -> np.ndarray:
    """Taylor PSFs (2 nmoment - 1, N, N), ``psf[0]`` peak 1 at the centre."""
    return taylor_images(images, moments, 2 * nmoment - 1, npixel, nthreads)


@trimmed
def psf_beam(psf: np.ndarray, cellsize: float) -> CleanBeam:
    """The clean beam fitted to the PSF (raises if the cell size does not sample the beam)."""
    return fit_clean_beam(psf[0], cellsize)


def clean_input(
    residual: BlockImages, psf: np.ndarray, moments: np.ndarray, clean: CleanSettings
) -> tuple[np.ndarray, float]:
    """The Taylor residual (nmoment, N, N) Jy/beam formed from the summed block residuals,
    and the absolute threshold (Jy/beam): the higher of ``clean.threshold`` and the automatic
    one (a multiple of the residual's robust rms)."""
    nmoment = (psf.shape[0] + 1) // 2
    taylor = taylor_images(residual, moments, nmoment, psf.shape[1], clean.nthreads)
    threshold = clean.threshold
    if clean.auto_threshold is not None:
        threshold = max(threshold, clean.auto_threshold * robust_rms(taylor[0]))
    return taylor, threshold


def clean_taylor(
    taylor: np.ndarray, psf: np.ndarray, threshold: float, clean: CleanSettings
) -> CleanResult:
    """One minor cycle (multi-scale multi-frequency clean) of the Taylor residual, in one
    task; it stops at the highest of ``threshold`` and the fractional one."""
    return msmfs_clean_region(
        taylor,
        psf,
        scales=clean.scales,
        gain=clean.gain,
        niter=clean.niter,
        threshold=threshold,
        fractional_threshold=clean.fractional_threshold,
        psf_support=clean.psf_support,
        nthreads=clean.nthreads,
    )


def clean_cycle(
    residual: BlockImages, psf: np.ndarray, moments: np.ndarray, clean: CleanSettings
) -> CleanResult:
    """One minor cycle on the Taylor residual formed from the summed block residuals
    (:func:`clean_input`, :func:`clean_taylor`)."""
    taylor, threshold = clean_input(residual, psf, moments, clean)
    return clean_taylor(taylor, psf, threshold, clean)


def increment_of(result: CleanResult) -> np.ndarray:
    """The model increment (nmoment, N, N) Jy/pixel found by a minor cycle."""
    return result.model_taylor


def add_model(model: np.ndarray | None, result: CleanResult) -> np.ndarray:
    """The model after a minor cycle (its increment added)."""
    return result.model_taylor.copy() if model is None else model + result.model_taylor


@dataclass(frozen=True)
class CleanStats:
    """Small statistics of a minor cycle for the client; ``dynamic_range``: the restored
    image's peak over the residual's robust rms."""

    peak: float
    peak_end: float
    rms: float
    components: int
    stop_reason: str
    dynamic_range: float


@trimmed
def clean_stats(
    result: CleanResult, model: np.ndarray, beam: CleanBeam, cellsize: float
) -> CleanStats:
    residual = result.residual_taylor[0]
    noise = robust_rms(residual)
    restored = restore(model[0], beam, cellsize) + residual
    return CleanStats(
        peak=result.peak_start,
        peak_end=result.peak_end,
        rms=float(np.sqrt(np.mean(residual**2))),
        components=result.components,
        stop_reason=result.stop_reason,
        dynamic_range=float(restored.max() / noise) if noise > 0 else float("inf"),
    )


@dataclass
class FinalImages:
    """The final residuals, cubes and restored images (see :class:`IcalResult`); cubes have
    one plane per channel block."""

    residual_taylor: np.ndarray
    residual_cube: np.ndarray
    model_cube: np.ndarray
    restored: np.ndarray
    restored_cube: np.ndarray


def final_images(
    model: np.ndarray,
    beam: CleanBeam,
    residual: BlockImages,
    moments: np.ndarray,
    *,
    cellsize: float,
    nthreads: int,
) -> FinalImages:
    """Final Taylor residual, per-block cubes and restored images.

    A block's model is ``sum_k m_bk model_k``; restoring is linear, so the Taylor terms are
    restored once, then combined per block.
    """
    nmoment, nblocks, npixel = model.shape[0], moments.shape[0], model.shape[1]
    residual_cube = np.zeros((nblocks, npixel, npixel))

    def block_residual(b: int) -> None:
        residual_cube[b] = fourier_upsample(residual.images[b] / residual.weights[b], npixel)

    used = [b for b in residual.images if residual.weights[b] > 0]
    side_by_side(block_residual, used, nthreads)
    restored_taylor = np.stack(side_by_side(lambda m: restore(m, beam, cellsize), model, nthreads))
    factors = moments[:, :nmoment]
    residual_taylor = taylor_images(residual, moments, nmoment, npixel, nthreads)
    final = FinalImages(
        residual_taylor=residual_taylor,
        residual_cube=residual_cube,
        model_cube=np.tensordot(factors, model, axes=1),
        restored=restored_taylor[0] + residual_taylor[0],
        restored_cube=np.tensordot(factors, restored_taylor, axes=1) + residual_cube,
    )
    trim_memory()
    return final


def pack(image: np.ndarray) -> tuple[np.ndarray, np.ndarray, tuple[int, ...]]:
    """(pixel indices, values (nterm, npix), shape) of the pixels where any term of ``image``
    (nterm, N, N) is not zero."""
    flat = np.asarray(image).reshape(image.shape[0], -1)
    index = np.flatnonzero(np.any(flat != 0, axis=0))
    return index, flat[:, index], tuple(image.shape)


def unpack(index: np.ndarray, values: np.ndarray, shape, dtype=np.float64) -> np.ndarray:
    """The image :func:`pack` took apart."""
    flat = np.zeros((shape[0], int(np.prod(shape[1:]))), dtype=dtype)
    flat[:, index] = values
    return flat.reshape(shape)
