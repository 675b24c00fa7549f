"""The D term of ICAL: a phase per station, integration and direction (DDECal's directions).

When D is due, worker 0 clusters the clean model's brightest pixels into ``ndirections``
directions (:func:`sdpbatch.science.directions.cluster_directions`) and cuts the model into
their Voronoi facets; each group predicts each facet's visibilities (one task per group and
direction, with the predict task of the cycles); each group compresses its data against them
(:class:`~sdpbatch.science.solve_directions.DirectionSums`, the models corrupted by the
direction-independent gains), the sums are added up on the cluster and worker 0 solves every
direction jointly (:func:`~sdpbatch.science.solve_directions.solve_directions`).

Applied in imaging by subtracting each direction's corrupted model: a group's residual is
``V / G - M - sum_d (g_d g_d^H - 1) M_d`` (G the direction-independent gains, M the current
model's visibilities, M_d the facets of the model the D gains were solved against), so a
source of facet d is subtracted with its own phases.  Increments cleaned after the solve are
subtracted uncorrupted until the next solve.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from sdpbatch.execution.ical.data import Block
from sdpbatch.execution.ical.group import ModelVis
from sdpbatch.science.directions import cluster_directions, facet_labels
from sdpbatch.science.solve import baseline_gains

SEPARATION_PIXELS = 10
"""Directions start at least this many pixels apart (the pixels of one cleaned source, its
PSF's main lobe, make one direction)."""


@dataclass
class DirectionState:
    """The D term as the cycles leave it.

    centres : (ndir, 2) (l, m) of the directions (direction cosines).
    gains : (ndir, nint, nant, 1) complex, ``V ~= G sum_d g_dp conj(g_dq) M_d``.
    model : handle of the Taylor model (nmoment, N, N) Jy/pixel the gains were solved against.
    flags : the gains' shape, solutions not to be trusted (they hold the previous gain).
    vis : per group, the handles of its facets' model visibilities (one per direction); None
        when they are gone (a resumed run, back to the best cycle): predicted again from
        ``model`` when needed.
    stats : per direction, the statistics of its solution (qa.json).
    """

    centres: np.ndarray
    gains: np.ndarray
    model: Any
    flags: np.ndarray | None = None
    vis: list | None = None
    stats: list[dict] = field(default_factory=list)

    def without_vis(self) -> DirectionState:
        """A copy that predicts its facets again when needed (what the best cycle keeps)."""
        return replace(self, vis=None)


def pixel_directions(npixel: int, cellsize: float) -> tuple[np.ndarray, np.ndarray]:
    """(l, m) (N, N) of every pixel ``image[ix, iy]`` (l along ix), as the predictors use."""
    offsets = (np.arange(npixel) - npixel // 2) * cellsize
    return np.meshgrid(offsets, offsets, indexing="ij")


def choose_directions(model: np.ndarray, ndirections: int, cellsize: float) -> np.ndarray:
    """(ndir, 2) direction centres from the model's pixels (Taylor term 0 as flux), (0, 2)
    for an empty model; runs on worker 0 where the model is."""
    flux = model[0]
    ix, iy = np.nonzero(flux)
    if ix.size == 0:
        return np.zeros((0, 2))
    l, m = pixel_directions(flux.shape[0], cellsize)  # noqa: E741
    centres, _ = cluster_directions(
        l[ix, iy], m[ix, iy], flux[ix, iy], ndirections,
        min_separation=SEPARATION_PIXELS * cellsize,
    )  # fmt: skip
    return centres


def facet_map(model: np.ndarray, centres: np.ndarray, cellsize: float) -> np.ndarray:
    """(N, N) int8: the facet (nearest centre) of every pixel of the model (nmoment, N, N)."""
    l, m = pixel_directions(model.shape[1], cellsize)  # noqa: E741
    return facet_labels(l, m, centres).reshape(l.shape).astype(np.int8)


def facet_part(model: np.ndarray, facets: np.ndarray, d: int) -> np.ndarray:
    """The Taylor model (nmoment, N, N) within facet ``d`` of the ``facets`` map, zero
    elsewhere."""
    return np.where(facets[None] == d, model, 0.0)


def discard_facets(facets: list[ModelVis]) -> None:
    """Free a group's facet visibilities (memory or scratch files) once replaced."""
    for vis in facets:
        vis.discard()


def direction_term(b: Block, models: list[np.ndarray], gains: np.ndarray) -> np.ndarray:
    """``sum_d (g_dp conj(g_dq) - 1) M_d`` (nrow, nchan) of a block: what the D gains add to
    its model visibilities.  ``models`` the block's facet visibilities, ``gains`` of D."""
    channel = np.zeros(b.channels.size, dtype=np.int64)
    total = np.zeros(b.vis.shape, dtype=np.complex128)
    for g, model in zip(gains, models, strict=True):
        gpq = baseline_gains(g, interval=b.intervals["D"], antenna1=b.antenna1,
                             antenna2=b.antenna2, channel=channel)  # fmt: skip
        total += (gpq - 1.0) * model
    return total
