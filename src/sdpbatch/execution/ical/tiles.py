"""A minor cycle spread over the workers as sub-images (parameter ``parallel_deconvolution``).

Worker 0, which holds the summed block residuals, forms the Taylor residual and the plan
(:func:`sdpbatch.science.subimages.plan`: the whole image's stopping level, the seams, the
tiles where something can be cleaned) and cuts each tile's sub-image and core; the client
gathers only the tiles' outlines.  Tile ``i`` is cleaned on worker slot ``i`` (modulo the
workers, loosely pinned as every group task) with the threads of one worker, holding its
sub-image and the PSF cut to the sub-image's size, not the whole image.  Worker 0 adds the
cores' models and updates the whole residual once: the result is a
:class:`~sdpbatch.science.clean.CleanResult` like the one-task minor cycle's, so the model,
its increment (what the checkpoint stores) and the statistics follow as before.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import numpy as np

from sdpbatch.execution.ical.combine import clean_input, clean_taylor
from sdpbatch.execution.ical.group import trimmed
from sdpbatch.execution.ical.settings import CleanSettings
from sdpbatch.execution.ical.state import Run
from sdpbatch.execution.ical.tasks import BlockImages
from sdpbatch.science.clean import CleanResult
from sdpbatch.science.subimages import (
    Plan,
    Tile,
    TileResult,
    clean_tile,
    combine,
    cut,
    plan,
    psf_cut,
)

LOG = logging.getLogger("sdpbatch.execution.ical")


@dataclass(frozen=True)
class Prepared:
    """What worker 0 keeps for a tiled minor cycle: the Taylor residual (nmoment, N, N), the
    absolute threshold (Jy/beam) and the plan (None: the image is cleaned in one task)."""

    taylor: np.ndarray
    threshold: float
    plan: Plan | None


@trimmed
def prepare(
    residual: BlockImages, psf: np.ndarray, moments: np.ndarray, clean: CleanSettings
) -> Prepared:
    """The Taylor residual, threshold and plan of a minor cycle in tiles of
    ``clean.tile_size`` px (on worker 0)."""
    taylor, threshold = clean_input(residual, psf, moments, clean)
    planned = plan(
        taylor,
        psf,
        size=clean.tile_size,
        scales=clean.scales,
        threshold=threshold,
        fractional_threshold=clean.fractional_threshold,
        psf_support=clean.psf_support,
    )
    return Prepared(taylor, threshold, planned)


def outline(prepared: Prepared) -> tuple[float, list[Tile]] | None:
    """The stopping level and the tiles to clean, for the client (None: no tiles)."""
    planned = prepared.plan
    return None if planned is None else (planned.level, planned.tiles)


def whole(prepared: Prepared, psf: np.ndarray, clean: CleanSettings) -> CleanResult:
    """The minor cycle in one task (a sub-image would be the whole image)."""
    return clean_taylor(prepared.taylor, psf, prepared.threshold, clean)


def cut_tile(prepared: Prepared, tile: Tile) -> tuple[np.ndarray, np.ndarray]:
    """The tile's sub-image of the Taylor residual and its core (on worker 0)."""
    return cut(prepared.taylor, prepared.plan, tile)


@trimmed
def clean_part(
    part: tuple[np.ndarray, np.ndarray],
    tile: Tile,
    psf: np.ndarray,
    level: float,
    clean: CleanSettings,
    nthreads: int,
) -> TileResult:
    """One tile's minor cycle, on its worker."""
    residual, core = part
    return clean_tile(
        residual,
        core,
        psf,
        tile,
        level=level,
        scales=clean.scales,
        gain=clean.gain,
        niter=clean.niter,
        psf_support=clean.psf_support,
        nthreads=nthreads,
    )


@trimmed
def combine_parts(
    prepared: Prepared, psf: np.ndarray, clean: CleanSettings, *parts: TileResult
) -> CleanResult:
    """The cores' models added and the residual updated once (on worker 0)."""
    support = prepared.plan.support
    return combine(prepared.taylor, psf, parts, support=support, nthreads=clean.nthreads)


def tiled_minor_cycle(
    run: Run, psf: Any, moments: np.ndarray, clean: CleanSettings, residual: Any, cycle: int
) -> Any:
    """Submit the minor cycle of ``residual`` (the summed block images, a handle) as tiles;
    returns the handle of its :class:`~sdpbatch.science.clean.CleanResult` (on worker 0)."""
    name = f"clean-{cycle}"
    prepared = run.one(prepare, f"{name}-plan", residual, psf, moments, clean)
    outlined = run.runner.gather(run.one(outline, f"{name}-outline", prepared))
    if outlined is None:
        LOG.info("ICAL cycle %d: one minor cycle task (a sub-image would be the image)", cycle)
        return run.one(whole, name, prepared, psf, clean)
    level, tiles = outlined
    nthreads = min(slot.nthreads for slot in run.runner.slots)
    parts = []
    if tiles:
        cut_psf = run.one(psf_cut, f"{name}-psf", psf, tiles[0].size)
        cuts = [run.one(cut_tile, f"{name}-cut-{t.number}", prepared, t) for t in tiles]
        parts = run.per_group(
            clean_part, f"{name}-tile", cuts, tiles, shared=(cut_psf, level, clean, nthreads)
        )
    LOG.info(
        "ICAL cycle %d: %d tile(s) of %d px sub-images to clean, on %d worker(s)",
        cycle,
        len(tiles),
        tiles[0].size if tiles else 0,
        min(len(tiles), len(run.runner.slots)),
    )
    return run.one(combine_parts, name, prepared, psf, clean, *parts)
