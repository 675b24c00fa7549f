"""The calibration pass over a group's visibilities: solve sums, and the cells solved where
their data are.

A group's solve sums grow with its times (per-integration sums are nearly as large as the data
divided by the channels), so a group does not hand them on: each solution interval whose data
only this group holds (:func:`interval_owners`) is solved on the group's worker as soon as its
last chunk is summed, and only its solutions (:class:`~sdpbatch.science.solve.CellSolutions`)
leave the worker.  The sums of the intervals shared with other groups (at the groups' edges,
or one interval over the whole observation) are what the groups add up on the cluster.  A
worker then holds the sums of one chunk's times, however long the observation.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from sdpbatch.execution.ical.data import Block
from sdpbatch.execution.ical.group import Group, ModelVis, trimmed
from sdpbatch.execution.ical.tasks import (
    Directions,
    Gains,
    block_model,
    gain_product,
    with_chunk_models,
)
from sdpbatch.science.predict import predict_rows
from sdpbatch.science.skymodel import SkyModel
from sdpbatch.science.solve import (
    TERMS,
    CellSolutions,
    SolverOptions,
    SolveSums,
    accumulate,
    combine_sums,
    compress,
    interval_index,
    join_cells,
    row_slices,
    solve_cells,
)
from sdpbatch.science.solve_directions import (
    DirectionSums,
    combine_direction_sums,
    compress_directions,
)


def interval_owners(boundaries: np.ndarray, group_times: list[np.ndarray]) -> np.ndarray:
    """(nint,) the group holding all the data of each solution interval, -1 where several
    (or none) hold some.

    ``boundaries`` (nint+1,) of the term's intervals; ``group_times[g]`` the distinct times of
    group g (as the intervals of its rows are computed: rounded, MJD s).
    """
    nint = boundaries.size - 1
    holders = np.zeros(nint, dtype=np.int64)
    owner = np.full(nint, -1, dtype=np.int64)
    for g, times in enumerate(group_times):
        held = np.unique(interval_index(times, boundaries))
        holders[held] += 1
        owner[held] = g
    return np.where(holders == 1, owner, -1)


@dataclass(frozen=True)
class LocalCells:
    """What a group solves itself: the intervals of ``boundaries`` (nint+1,) marked in
    ``local`` (nint,) bool, those only it holds data of."""

    boundaries: np.ndarray
    local: np.ndarray


@dataclass
class PartialSolve:
    """A term's solve as far as some groups take it: the cells they solved, and the sums of
    the cells they share with other groups (None: no such cell)."""

    cells: CellSolutions
    sums: SolveSums | None


def merge_partial(*parts: PartialSolve) -> PartialSolve:
    """Two groups' partial solves as one (a step of the tree on the cluster)."""
    shared = [p.sums for p in parts if p.sums is not None]
    total = combine_sums(shared) if shared else None  # the parts are left as they are
    return PartialSolve(join_cells(*(p.cells for p in parts)), total)


def _block_sums(b: Block, model: np.ndarray, gains: Gains, term: str) -> SolveSums:
    """Solve sums of ``term`` for one block, the model corrupted by the other current gains
    (slice by slice of rows)."""
    total = None
    for rows in row_slices(*b.vis.shape):
        others = gain_product(b, gains, skip=term, rows=rows)
        part = compress(
            b.vis[rows],
            model[rows] if others is None else model[rows] * others,
            b.weight[rows],
            antenna1=b.antenna1[rows],
            antenna2=b.antenna2[rows],
            interval=b.intervals[term][rows],
            channel=b.channels if TERMS[term].per_channel else None,
            flag=b.flag[rows],
        )
        total = accumulate(total, part)
    return total


class _LocalSolver:
    """Sums a group's chunks in time order and solves its local intervals once complete."""

    def __init__(self, gains: Gains, term: str, local: LocalCells, options: SolverOptions):
        self.gains, self.term, self.local, self.options = gains, term, local, options
        self.total: SolveSums | None = None
        self.solved = [CellSolutions.none(gains[term].shape[1])]
        self.done = np.zeros(local.local.size, dtype=bool)

    def add(self, b: Block, model: np.ndarray) -> None:
        part = _block_sums(b, model, self.gains, self.term)
        if self.done[part.interval].any():
            raise RuntimeError(
                "ICAL: data of a solution interval already solved (work items out of time order)"
            )
        self.total = accumulate(self.total, part)

    def flush(self, before: float) -> None:
        """Solve the local intervals that end by time ``before`` (no later chunk has data of
        them): their sums leave the running total."""
        ready = self.local.local & (self.local.boundaries[1:] <= before) & ~self.done
        self.done |= ready
        if self.total is None or not ready.any():
            return
        pick = ready[self.total.interval]
        if pick.any():
            cells = solve_cells(
                self.total.select(pick),
                initial=self.gains[self.term],
                phase_only=TERMS[self.term].phase_only,
                options=self.options,
            )
            self.solved.append(cells)
            self.total = self.total.select(~pick)

    def result(self) -> PartialSolve:
        self.flush(np.inf)
        shared = self.total if self.total is not None and self.total.size else None
        return PartialSolve(join_cells(*self.solved), shared)


def _solve_chunks(
    group: Group,
    chunks: Iterator[tuple[int, Iterator[tuple[Block, np.ndarray]]]],
    gains: Gains,
    term: str,
    local: LocalCells,
    options: SolverOptions,
) -> PartialSolve:
    """Sum ``(chunk, its (block, model) pairs)`` chunk after chunk (the group's chunks are in
    time order); before each chunk, solve the local intervals that end by its first time."""
    solver = _LocalSolver(gains, term, local, options)
    for c, pairs in chunks:
        time_range = group.chunks[c].item.time_range
        solver.flush(-np.inf if time_range is None else time_range[0])
        for b, model in pairs:
            solver.add(b, model)
            del b, model  # before the next block is read
    return solver.result()


@trimmed
def group_solve(
    group: Group,
    model_vis: ModelVis,
    local: LocalCells,
    directions: Directions | None,
    gains: Gains,
    term: str,
    options: SolverOptions,
) -> PartialSolve:
    """``term`` solved against a group's model visibilities (each direction's part corrupted
    by its gains when ``directions`` are given), as far as the group can."""
    chunks = (
        (c, with_chunk_models(group, c, model_vis, directions)) for c in range(len(group.chunks))
    )
    return _solve_chunks(group, chunks, gains, term, local, options)


@trimmed
def group_direction_sums(group: Group, facets: list[ModelVis], gains: Gains) -> DirectionSums:
    """The group's :class:`DirectionSums` of the D term against its facets' model
    visibilities (one per direction), corrupted by the direction-independent ``gains``."""
    total = None
    for c in range(len(group.chunks)):
        for i, b in enumerate(group.chunk_blocks(c)):
            models = np.stack([block_model(group, c, i, b, f) for f in facets])
            others = gain_product(b, gains)
            if others is not None:
                models *= others[None]
            part = compress_directions(
                b.vis, models, b.weight, antenna1=b.antenna1, antenna2=b.antenna2,
                interval=b.intervals["D"], flag=b.flag,
            )  # fmt: skip
            total = part if total is None else combine_direction_sums([total, part])
            del models, others, b
    return total


@trimmed
def group_sky_model_solve(
    group: Group,
    local: LocalCells,
    sky: SkyModel,
    lmn: np.ndarray,
    shape: np.ndarray,
    gains: Gains,
    term: str,
    options: SolverOptions,
) -> PartialSolve:
    """``term`` solved against the exact visibilities of ``sky``, as far as the group can.

    ``lmn`` (nsrc, 3): the components' direction cosines about the phase centre; ``shape``
    (nsrc, 2, 3): their Gaussian tapers (zero for points).  They are predicted by direct
    Fourier sum block by block (never stored), factored per station when the rows' UVW allow
    it: their positions are exact, not rounded to pixels, which is what anchors the image.
    """

    def predicted(b: Block) -> np.ndarray:
        flux = sky.flux_at(b.frequency)
        model = predict_rows(
            b.uvw, b.time_index(), b.antenna1, b.antenna2, b.frequency, lmn, flux, shape=shape
        )
        if b.flag.any():
            model[b.flag] = 0.0
        return model

    def pairs(c: int) -> Iterator[tuple[Block, np.ndarray]]:
        return ((b, predicted(b)) for b in group.chunk_blocks(c))

    chunks = ((c, pairs(c)) for c in range(len(group.chunks)))
    return _solve_chunks(group, chunks, gains, term, local, options)
