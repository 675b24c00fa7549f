"""The passes over a group's visibilities: what runs on a worker (or in this process).

Each function takes a :class:`~sdpbatch.execution.ical.group.Group` (and small things) and
returns something small: unnormalised images per channel block with their weight sums, or the
group's new model visibilities (the calibration passes are in
:mod:`~sdpbatch.execution.ical.solve_tasks`).  A pass grids (or degrids) every visibility once:
one ducc0 call per work item, each item's channel block onto its own image; the items of a
group held in memory run side by side on the group's threads.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from sdpbatch.execution.ical.data import Block
from sdpbatch.execution.ical.directions import direction_term
from sdpbatch.execution.ical.group import Group, ModelVis, trimmed
from sdpbatch.execution.ical.scratch import Stored
from sdpbatch.execution.ical.settings import ImagingSetup
from sdpbatch.science.imaging import grid_dirty, grid_psf, predict_sparse, predict_visibilities
from sdpbatch.science.parallel import side_by_side
from sdpbatch.science.solve import TERMS, baseline_gains, correct, row_slices

LOG = logging.getLogger(__name__)

Gains = dict[str, np.ndarray]
"""Current gains per term: (nint, nant, nfreq) complex."""
Directions = tuple[list[ModelVis], np.ndarray]
"""A group's facet visibilities (one per direction) and the D gains (ndir, nint, nant, 1)."""


# --- images --------------------------------------------------------------------------------------


@dataclass
class BlockImages:
    """Unnormalised images per channel block (n, n) on the gridding pixels (``grid_npixel``)
    and their weight sums; for the PSF pass also the imaging weight summed per channel
    (nchan,) over the run's global channels."""

    images: dict[int, np.ndarray]
    weights: dict[int, float]
    channel_weights: np.ndarray | None = None

    def add(self, block: int, image: np.ndarray, weight: float) -> None:
        if block in self.images:
            self.images[block] += image
            self.weights[block] += weight
        else:
            self.images[block] = image
            self.weights[block] = weight


def merge_block_images(*parts: BlockImages) -> BlockImages:
    """The sum of the parts' images block by block (one step of the tree reduction)."""
    out = BlockImages({}, {})
    for part in parts:
        for block, image in part.images.items():
            out.add(block, image.copy() if block not in out.images else image, part.weights[block])
        if part.channel_weights is not None:
            if out.channel_weights is None:
                out.channel_weights = part.channel_weights.copy()
            else:
                out.channel_weights += part.channel_weights
    return out


def _over_chunks(group: Group, job: Callable[[int], Any], threads: int) -> list[Any]:
    """``job(chunk)`` for every chunk, results in chunk order, side by side on ``threads``
    threads (a spilled group then holds up to ``threads`` chunks at a time).

    Each ducc0 call of a job computes on one thread (:mod:`sdpbatch.science.parallel`: the
    images then do not depend on the threads or workers there are).  Side by side is also the
    faster way (measured: two 8-channel passes 0.87 s instead of 1.07 s one after the other
    with two threads each, eight 1-channel passes 1.75 s instead of 2.4 s).
    """
    return side_by_side(job, range(len(group.chunks)), threads)


@trimmed
def group_psf(group: Group, setup: ImagingSetup, nchan: int) -> BlockImages:
    """Unnormalised PSF of every channel block the group holds, and the imaging weight of
    each of the run's ``nchan`` channels (for the blocks' Taylor moments)."""

    def job(c: int) -> list[tuple[int, np.ndarray, float, np.ndarray, np.ndarray]]:
        out = []
        for b in group.chunk_blocks(c):
            image, weight = grid_psf(
                b.uvw,
                b.frequency,
                b.imaging_weight,
                npixel=setup.grid_npixel,
                cellsize=setup.grid_cellsize,
                epsilon=setup.grid_epsilon,
                nthreads=1,
                flag=b.mask(),
            )
            per_channel = b.imaging_weight.sum(axis=0, dtype=np.float64)
            out.append((group.chunks[c].item.block, image, weight, b.channels, per_channel))
            del b  # only its sums are kept: one chunk resident at a time
        return out

    result = BlockImages({}, {}, np.zeros(nchan))
    for block, image, weight, channels, per_channel in (
        r for rs in _over_chunks(group, job, setup.nthreads) for r in rs
    ):
        result.add(block, image, weight)
        np.add.at(result.channel_weights, channels, per_channel)
    return result


@trimmed
def group_residual(
    group: Group,
    model_vis: ModelVis | None,
    directions: Directions | None,
    gains: Gains,
    setup: ImagingSetup,
) -> BlockImages:
    """Unnormalised residual image of every channel block the group holds: corrected data
    minus model (each direction's part corrupted by its gains when ``directions`` are
    given), every visibility gridded once."""

    def job(c: int) -> list[tuple[int, np.ndarray, float]]:
        out = []
        for b, model in with_chunk_models(group, c, model_vis, directions):
            resid = residual_vis(b, model, gains)
            del model
            image, weight = grid_dirty(
                b.uvw,
                b.frequency,
                resid,
                b.imaging_weight,
                npixel=setup.grid_npixel,
                cellsize=setup.grid_cellsize,
                epsilon=setup.grid_epsilon,
                nthreads=1,
                flag=b.mask(),
            )
            out.append((group.chunks[c].item.block, image, weight))
            del resid, b  # before the next block is read
        return out

    result = BlockImages({}, {})
    for block, image, weight in (r for rs in _over_chunks(group, job, setup.nthreads) for r in rs):
        result.add(block, image, weight)
    return result


# --- model visibilities --------------------------------------------------------------------------


def _predict_block(
    b: Block,
    block: int,
    previous: np.ndarray | None,
    increment: np.ndarray,
    moments: np.ndarray,
    setup: ImagingSetup,
) -> np.ndarray:
    """``previous`` (or zeros) + the visibilities of the Taylor ``increment`` for one block
    (on one thread: it runs side by side with the other chunks'; see :func:`_over_chunks`).

    A sparse increment (at most ``setup.sparse_pixels`` pixels) is predicted exactly per
    channel by direct sum; otherwise the channel block's model image
    ``sum_k moments[block, k] increment[k]`` is degridded once for all its channels.
    """
    nonzero = int(np.count_nonzero(np.any(increment != 0, axis=0)))
    vis = np.zeros(b.vis.shape, dtype=np.complex128) if previous is None else previous.copy()
    if 0 < nonzero <= setup.sparse_pixels:
        vis += predict_sparse(
            increment,
            b.uvw,
            b.frequency,
            b.taylor,
            cellsize=setup.cellsize,
            stations=(b.time_index(), b.antenna1, b.antenna2),
            nthreads=1,
        )
    elif nonzero:
        image = np.tensordot(moments[block, : increment.shape[0]], increment, axes=1)
        vis += predict_visibilities(
            image,
            b.uvw,
            b.frequency,
            cellsize=setup.cellsize,
            epsilon=setup.epsilon,
            nthreads=1,
            flag=b.mask(),
        )
    if nonzero and b.flag.any():
        vis[b.flag] = 0.0
    return vis


@trimmed
def group_predict(
    group: Group,
    previous: ModelVis | None,
    increment: np.ndarray,
    moments: np.ndarray,
    setup: ImagingSetup,
) -> ModelVis:
    """Model visibilities after a minor cycle: ``previous`` + those of ``increment``.

    ``increment`` (nmoment, N, N) Jy/pixel; ``moments`` (nblocks, nterm) the Taylor moments of
    the channel blocks.  Prediction is linear, so adding the increment's visibilities to the
    previous ones equals predicting the whole model; should a previous part be gone, the whole
    model is predicted for it.  The previous parts are discarded once replaced.
    """
    model = increment.copy() if previous is None else previous.model + increment

    def job(c: int) -> list[Stored]:
        row = []
        block = group.chunks[c].item.block
        for i, b in enumerate(group.chunk_blocks(c)):
            old = None if previous is None else previous.parts[c][i].load()
            if previous is not None and old is None:
                vis = _predict_block(b, block, None, model, moments, setup)
            else:
                vis = _predict_block(b, block, old, increment, moments, setup)
            row.append(group.stash.put(vis))
            del vis, old
        return row

    parts = _over_chunks(group, job, setup.nthreads)
    if previous is not None:
        previous.discard()
    return ModelVis(model, parts, moments)


def with_chunk_models(
    group: Group, c: int, model_vis: ModelVis | None, directions: Directions | None = None
) -> Iterator[tuple[Block, np.ndarray | None]]:
    """(block, its model visibilities or None) of chunk ``c``; with ``directions`` (the
    group's facet visibilities, the D gains) each direction's part corrupted by its gains."""
    for i, b in enumerate(group.chunk_blocks(c)):
        model = block_model(group, c, i, b, model_vis)
        if directions is not None:
            facets = [block_model(group, c, i, b, f) for f in directions[0]]
            extra = direction_term(b, facets, directions[1])
            model = extra if model is None else model + extra
            del facets, extra
        yield b, model
        del model


def block_model(group: Group, c: int, i: int, b: Block, model_vis: ModelVis | None):
    """The model visibilities of block ``i`` of chunk ``c`` (``b``), or None without a model;
    predicted again from the model when the stored ones are gone."""
    if model_vis is None:
        return None
    model = model_vis.parts[c][i].load()
    if model is None:
        LOG.info("model visibilities are gone: predicting them again")
        block = group.chunks[c].item.block
        setup = group.setup
        model = _predict_block(b, block, None, model_vis.model, model_vis.moments, setup)
    return model


def with_models(
    group: Group, model_vis: ModelVis | None
) -> Iterator[tuple[Block, np.ndarray | None]]:
    """(block, its model visibilities or None) over a group's chunks, one chunk at a time."""
    for c in range(len(group.chunks)):
        yield from with_chunk_models(group, c, model_vis)


# --- calibration ---------------------------------------------------------------------------------


def _solution_channels(block: Block, term: str) -> np.ndarray:
    if TERMS[term].per_channel:
        return block.channels
    return np.zeros(block.channels.size, dtype=np.int64)


def gain_product(
    block: Block, gains: Gains, skip: str | None = None, rows: slice = slice(None)
) -> np.ndarray | None:
    """``prod_terms g_p conj(g_q)`` (nrow, nchan) of the block's ``rows``, or None without
    gains."""
    total = None
    for term, g in gains.items():
        if term == skip:
            continue
        gpq = baseline_gains(
            g,
            interval=block.intervals[term][rows],
            antenna1=block.antenna1[rows],
            antenna2=block.antenna2[rows],
            channel=_solution_channels(block, term),
        )
        total = gpq if total is None else total * gpq
    return total


def residual_vis(block: Block, model: np.ndarray | None, gains: Gains) -> np.ndarray:
    """Corrected data minus model, (nrow, nchan) complex: the fresh data corrected each time."""
    if not gains:
        return block.vis if model is None else block.vis - model
    out = np.empty(block.vis.shape, dtype=np.complex128)
    for rows in row_slices(*block.vis.shape):
        out[rows] = correct(block.vis[rows], gain_product(block, gains, rows=rows))
        if model is not None:
            out[rows] -= model[rows]
    return out
