"""A group: the work items one worker holds, as chunks (one per item).

A group's chunks are kept in memory when its worker's groups hold at most
``chunk_visibilities`` together, else spilled to scratch and read back by every pass.  Every
pass iterates the chunks the same way either way; model visibilities (:class:`ModelVis`)
are stored alike, per chunk and block.
"""

from __future__ import annotations

import ctypes
import functools
import logging
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from sdpbatch.execution.ical.data import (
    Block,
    distinct_times,
    imaging_weight,
    largest_uvw,
    prepare_block,
    read_blocks,
)
from sdpbatch.execution.ical.plan import WorkItem
from sdpbatch.execution.ical.scratch import (
    Chunk,
    Stash,
    Stored,
    load_chunk,
    scratch_root,
    store_chunk,
)
from sdpbatch.execution.ical.settings import ImagingSetup
from sdpbatch.science.imaging import weight_density

LOG = logging.getLogger(__name__)


def trim_memory() -> None:
    """Give freed heap memory back to the system (glibc keeps it otherwise)."""
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def trimmed(fn: Callable) -> Callable:
    """Run ``fn``, then return freed heap memory to the system (tasks with big temporaries)."""

    @functools.wraps(fn)
    def run(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        finally:
            trim_memory()

    return run


@dataclass(frozen=True)
class GroupSummary:
    """Small facts of a group: distinct times (MJD s), largest |u|, |v|, |w| (m), whether its
    chunks are spilled to scratch."""

    times: np.ndarray
    uvw_max: float
    spilled: bool


@dataclass
class Group:
    """The data of one group of work items, and once prepared, how to image it."""

    chunks: list[Chunk]
    stash: Stash
    summary: GroupSummary
    setup: ImagingSetup | None = None
    density: np.ndarray | None = None

    def blocks(self) -> Iterator[tuple[int, list[Block]]]:
        """(chunk index, its blocks), one chunk resident at a time; prepared once set up."""
        for c in range(len(self.chunks)):
            blocks = self.chunk_blocks(c)
            yield c, blocks
            del blocks

    def chunk_blocks(self, c: int) -> list[Block]:
        """The blocks of chunk ``c`` (prepared once the group is set up)."""
        blocks = load_chunk(self.chunks[c])
        if self.setup is None:
            return blocks
        return [self._prepared(b) for b in blocks]

    def _prepared(self, b: Block) -> Block:
        weight = b.imaging_weight
        if weight is None:  # read again from the MeasurementSets
            weight = imaging_weight(b, self.setup, self.density)
        return prepare_block(b, self.setup, weight)


@trimmed
def load_group(items: Sequence[WorkItem], spilled: bool, run_id: str) -> Group:
    """Read the work items of one group (each item's files sharing rows become one block).

    The items stay in memory, or when ``spilled`` (:func:`sdpbatch.execution.ical.plan.spills`)
    each is written once to scratch files under ``run_id``'s directory (an item holds at most
    ``chunk_visibilities``, see :func:`sdpbatch.execution.ical.plan.work_items`).
    """
    stash = Stash(str(scratch_root(run_id))) if spilled else Stash()
    chunks, times, uvw_max = [], [], 0.0
    for item in items:
        blocks = read_blocks(item)
        times.append(distinct_times(blocks))
        uvw_max = max(uvw_max, largest_uvw(blocks))
        chunks.append(store_chunk(item, blocks, stash))
        del blocks
    times = np.unique(np.concatenate(times)) if times else np.zeros(0)
    return Group(chunks, stash, GroupSummary(times, uvw_max, spilled))


def group_summary(group: Group) -> GroupSummary:
    return group.summary


@trimmed
def group_density(group: Group, npixel: int, cellsize: float) -> np.ndarray:
    """Gridded weight density (npixel, npixel) of a group's unflagged data."""
    density = np.zeros((npixel, npixel))
    for _, blocks in group.blocks():
        for b in blocks:
            weight = np.where(b.flag, 0.0, b.weight)
            density += weight_density(b.uvw, b.frequency, weight, npixel=npixel, cellsize=cellsize)
    return density


@trimmed
def prepare_group(group: Group, setup: ImagingSetup, density: np.ndarray | None) -> Group:
    """The group ready to image: each chunk's imaging weights computed once and stored."""
    chunks = []
    for chunk, (_, blocks) in zip(group.chunks, group.blocks(), strict=True):
        weights = [group.stash.put(imaging_weight(b, setup, density)) for b in blocks]
        rows = [{**r, "imaging_weight": w} for r, w in zip(chunk.rows, weights, strict=True)]
        chunks.append(replace(chunk, rows=rows))
    return replace(group, chunks=chunks, setup=setup, density=density)


@dataclass
class ModelVis:
    """Model visibilities of a group, per chunk and block, and the model they predict.

    ``model`` (nmoment, N, N) Jy/pixel and the channel blocks' Taylor ``moments`` (nblocks,
    nterm): stored visibilities that are gone (lost with a worker while Dask recomputes) are
    predicted again from them.
    """

    model: np.ndarray
    parts: list[list[Stored]]
    moments: np.ndarray

    def discard(self) -> None:
        for stored in (s for chunk in self.parts for s in chunk):
            stored.discard()
