"""The passes over a group's visibilities: what runs on a worker (or in this process).

Each function takes a :class:`~sdpbatch.execution.ical.group.Group` (and small things) and
returns something small: unnormalised images with their weight sums, solve sums, or the
group's new model visibilities.  Every group grids all its channels in one ducc0 call per
Taylor term; independent gridder calls run side by side on the group's threads.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import ducc0
import numpy as np

from sdpbatch.execution.ical.data import Block
from sdpbatch.execution.ical.group import Group, ModelVis, trimmed
from sdpbatch.execution.ical.settings import ImagingSetup
from sdpbatch.science.imaging import grid_dirty, grid_psf, predict_sparse, predict_visibilities
from sdpbatch.science.predict import predict_point_sources
from sdpbatch.science.skymodel import SkyModel
from sdpbatch.science.solve import (
    TERMS,
    SolveSums,
    baseline_gains,
    combine_sums,
    compress,
    correct,
)

LOG = logging.getLogger(__name__)

Gains = dict[str, np.ndarray]
"""Current gains per term: (nint, nant, nfreq) complex."""


def ensure_ducc_threads(nthreads: int) -> None:
    """Grow ducc0's thread pool to ``nthreads`` (it is sized from OMP_NUM_THREADS at import,
    which a Dask worker sets to its own thread count, and caps every ``nthreads``)."""
    if ducc0.misc.thread_pool_size() < nthreads:
        ducc0.misc.resize_thread_pool(nthreads)


def concurrently(jobs: list[Callable[[int], Any]], threads: int) -> list[Any]:
    """Run independent gridder jobs (callables taking ``nthreads``), results in order.

    With several threads, jobs run side by side with one thread each: ducc0 passes scale
    better that way than one after the other with all threads (measured: two 8-channel
    passes 0.87 s instead of 1.07 s, eight 1-channel passes 1.75 s instead of 2.4 s).
    """
    ensure_ducc_threads(threads)
    if threads < 2 or len(jobs) < 2:
        return [job(threads) for job in jobs]
    parallel = min(threads, len(jobs))
    with ThreadPoolExecutor(parallel) as pool:
        return list(pool.map(lambda job: job(max(1, threads // parallel)), jobs))


# --- images --------------------------------------------------------------------------------------


def _psf_job(b: Block, setup: ImagingSetup, k: int) -> Callable[[int], tuple[np.ndarray, float]]:
    size = setup.npixel if k == 0 else setup.psf_npixel
    return lambda nthreads: grid_psf(
        b.uvw,
        b.frequency,
        b.imaging_weight,
        npixel=size,
        cellsize=setup.cellsize,
        epsilon=setup.epsilon,
        nthreads=nthreads,
        channel_factors=None if k == 0 else b.taylor**k,
        flag=b.mask(),
    )


@trimmed
def group_psf(group: Group, setup: ImagingSetup) -> tuple[np.ndarray, float]:
    """Unnormalised Taylor PSFs (2 nmoment - 1, N, N) of a group, and its weight sum.

    The spectral terms (k >= 1) only serve the minor cycles, which use the central
    ``psf_npixel`` patch: they are gridded on that smaller image (the same pixel values, a
    fraction of the cost) and are zero outside it.  ``psf_taylor[0]`` is the full PSF.
    """
    nterm, n = 2 * setup.nmoment - 1, setup.npixel
    images = np.zeros((nterm, n, n))
    wsum = 0.0
    for _, blocks in group.blocks():
        for b in blocks:
            results = concurrently([_psf_job(b, setup, k) for k in range(nterm)], setup.nthreads)
            for k, (image, _) in enumerate(results):
                start = n // 2 - image.shape[0] // 2
                images[k, start : start + image.shape[0], start : start + image.shape[0]] += image
            wsum += results[0][1]
    return images, wsum


def _dirty_job(b: Block, vis: np.ndarray, setup: ImagingSetup, channels: np.ndarray | None, k=0):
    sel = slice(None) if channels is None else channels
    mask = b.mask()
    return lambda nthreads: grid_dirty(
        b.uvw,
        b.frequency[sel],
        vis[:, sel],
        b.imaging_weight[:, sel],
        npixel=setup.npixel,
        cellsize=setup.cellsize,
        epsilon=setup.epsilon,
        nthreads=nthreads,
        channel_factors=None if k == 0 else b.taylor[sel] ** k,
        flag=None if mask is None else mask[:, sel],
    )


@trimmed
def group_residual(
    group: Group, model_vis: ModelVis | None, gains: Gains, setup: ImagingSetup
) -> tuple[np.ndarray, float]:
    """Unnormalised Taylor residual images (nmoment, N, N) of a group, and its weight sum."""
    images = np.zeros((setup.nmoment, setup.npixel, setup.npixel))
    wsum = 0.0
    for b, model in with_models(group, model_vis):
        resid = residual_vis(b, model, gains)
        del model
        jobs = [_dirty_job(b, resid, setup, None, k) for k in range(setup.nmoment)]
        results = concurrently(jobs, setup.nthreads)
        for k, (image, _) in enumerate(results):
            images[k] += image
        wsum += results[0][1]
        del resid, results, b  # before the next chunk is read
    return images, wsum


WindowImages = dict[int, tuple[np.ndarray, float, float]]
"""Per window: (unnormalised residual (N, N), weight sum, Taylor factor of the window)."""


@trimmed
def group_window_residuals(
    group: Group, model_vis: ModelVis | None, gains: Gains, setup: ImagingSetup
) -> WindowImages:
    """Per window: (unnormalised residual (N, N), weight sum, Taylor factor of the window).

    The Taylor residual images follow from these as ``sum_w t_w^k U_w / sum_w W_w`` when every
    window has one channel, which saves the separate Taylor passes.
    """
    out: WindowImages = {}
    for b, model in with_models(group, model_vis):
        resid = residual_vis(b, model, gains)
        del model
        windows = [int(w) for w in np.unique(b.windows)]
        jobs = [_dirty_job(b, resid, setup, np.flatnonzero(b.windows == w)) for w in windows]
        images = concurrently(jobs, setup.nthreads)
        for w, (image, s) in zip(windows, images, strict=True):
            t = float(b.taylor[b.windows == w].mean())
            if w in out:
                image, s = out[w][0] + image, out[w][1] + s
            out[w] = (image, s, t)
        del resid, images, b
    return out


# --- model visibilities --------------------------------------------------------------------------


def _predict_block(
    b: Block, previous: np.ndarray | None, increment: np.ndarray, setup: ImagingSetup
) -> np.ndarray:
    """``previous`` (or zeros) + the visibilities of ``increment`` for one block."""
    nonzero = int(np.count_nonzero(np.any(increment != 0, axis=0)))
    terms = [k for k in range(increment.shape[0]) if increment[k].any()]
    vis = np.zeros(b.vis.shape, dtype=np.complex128) if previous is None else previous.copy()
    if 0 < nonzero <= setup.sparse_pixels:
        vis += predict_sparse(
            increment,
            b.uvw,
            b.frequency,
            b.taylor,
            cellsize=setup.cellsize,
            nthreads=setup.nthreads,
        )
    elif nonzero:

        def job(k: int) -> Callable[[int], np.ndarray]:
            return lambda nthreads: predict_visibilities(
                increment[k],
                b.uvw,
                b.frequency,
                cellsize=setup.cellsize,
                epsilon=setup.epsilon,
                nthreads=nthreads,
                flag=b.mask(),
            )

        preds = concurrently([job(k) for k in terms], setup.nthreads)
        for k, pred in zip(terms, preds, strict=True):
            vis += pred if k == 0 else pred * (b.taylor**k)[None, :]
    if nonzero and b.flag.any():
        vis[b.flag] = 0.0
    return vis


@trimmed
def group_predict(
    group: Group, previous: ModelVis | None, increment: np.ndarray, setup: ImagingSetup
) -> ModelVis:
    """Model visibilities after a minor cycle: ``previous`` + those of ``increment``.

    ``V_c = sum_k t_c^k degrid(increment[k])``: one gridder pass per Taylor term, or, when the
    increment has at most ``setup.sparse_pixels`` nonzero pixels (late cycles), a direct
    Fourier sum over them, which is exact and much cheaper.  Prediction is linear, so adding
    the increment's visibilities to the previous ones equals predicting the whole model;
    should a previous part be gone, the whole model is predicted for it.  The previous parts
    are discarded once replaced.
    """
    model = increment.copy() if previous is None else previous.model + increment
    parts = []
    for c, blocks in group.blocks():
        row = []
        for i, b in enumerate(blocks):
            old = None if previous is None else previous.parts[c][i].load()
            if previous is not None and old is None:
                vis = _predict_block(b, None, model, setup)
            else:
                vis = _predict_block(b, old, increment, setup)
            row.append(group.stash.put(vis))
            del vis, old
        parts.append(row)
    if previous is not None:
        previous.discard()
    return ModelVis(model, parts)


def with_models(
    group: Group, model_vis: ModelVis | None
) -> Iterator[tuple[Block, np.ndarray | None]]:
    """(block, its model visibilities or None) over a group's chunks, one chunk at a time."""
    for c, blocks in group.blocks():
        for i, b in enumerate(blocks):
            if model_vis is None:
                yield b, None
                continue
            model = model_vis.parts[c][i].load()
            if model is None:
                LOG.info("model visibilities are gone: predicting them again")
                model = _predict_block(b, None, model_vis.model, group.setup)
            yield b, model
            del model
        del blocks  # before the next chunk is read


# --- calibration ---------------------------------------------------------------------------------


def _solution_channels(block: Block, term: str) -> np.ndarray:
    if TERMS[term].per_channel:
        return block.channels
    return np.zeros(block.channels.size, dtype=np.int64)


def gain_product(block: Block, gains: Gains, skip: str | None = None) -> np.ndarray | None:
    """``prod_terms g_p conj(g_q)`` (nrow, nchan) of the block, or None without gains."""
    total = None
    for term, g in gains.items():
        if term == skip:
            continue
        gpq = baseline_gains(
            g,
            interval=block.intervals[term],
            antenna1=block.antenna1,
            antenna2=block.antenna2,
            channel=_solution_channels(block, term),
        )
        total = gpq if total is None else total * gpq
    return total


def residual_vis(block: Block, model: np.ndarray | None, gains: Gains) -> np.ndarray:
    """Corrected data minus model, (nrow, nchan) complex: the fresh data corrected each time."""
    gpq = gain_product(block, gains)
    vis = block.vis if gpq is None else correct(block.vis, gpq)
    return vis if model is None else vis - model


def _block_sums(b: Block, model: np.ndarray, gains: Gains, term: str) -> SolveSums:
    """Solve sums of ``term`` for one block, the model corrupted by the other current gains."""
    others = gain_product(b, gains, skip=term)
    if others is not None:
        model = model * others
    return compress(
        b.vis,
        model,
        b.weight,
        antenna1=b.antenna1,
        antenna2=b.antenna2,
        interval=b.intervals[term],
        channel=b.channels if TERMS[term].per_channel else None,
        flag=b.flag,
    )


@trimmed
def group_solve_sums(group: Group, model_vis: ModelVis, gains: Gains, term: str) -> SolveSums:
    """Solve sums of ``term`` for a group against its model visibilities."""
    parts = []
    for b, model in with_models(group, model_vis):
        parts.append(_block_sums(b, model, gains, term))
        del b, model  # before the next chunk is read
    return combine_sums(parts)


@trimmed
def group_sky_model_sums(
    group: Group, sky: SkyModel, lmn: np.ndarray, gains: Gains, term: str
) -> SolveSums:
    """Solve sums of ``term`` for a group against the exact visibilities of ``sky``.

    ``lmn`` (nsrc, 3): the components' direction cosines about the phase centre.  They are
    predicted by direct Fourier sum block by block (never stored): their positions are exact,
    not rounded to pixels, which is what anchors the image.
    """
    parts = []
    for b, _ in with_models(group, None):
        model = predict_point_sources(b.uvw, b.frequency, lmn, sky.flux_at(b.frequency))
        if b.flag.any():
            model[b.flag] = 0.0
        parts.append(_block_sums(b, model, gains, term))
        del b, model  # before the next chunk is read
    return combine_sums(parts)
