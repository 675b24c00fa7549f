"""A group of windows: the data one worker holds, as chunks, one resident at a time.

A group is always a list of :class:`~sdpbatch.execution.ical.scratch.Chunk`: a group of at
most ``chunk_visibilities`` is one chunk of all its rows kept in memory; a larger one is read
in time chunks spilled to scratch.  Every pass iterates :meth:`Group.blocks` the same way.
Model visibilities (:class:`ModelVis`) are stored alike, per chunk and block.
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
    WindowSpec,
    distinct_times,
    imaging_weight,
    largest_uvw,
    prepare_block,
    read_blocks,
)
from sdpbatch.execution.ical.scratch import (
    Chunk,
    Stash,
    Stored,
    load_chunk,
    scratch_root,
    store_chunk,
    time_chunks,
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
    """Small facts of a group: distinct times (MJD s), largest |u|, |v|, |w| (m), chunks."""

    times: np.ndarray
    uvw_max: float
    nchunks: int


@dataclass
class Group:
    """The data of one group of windows, and once prepared, how to image it."""

    windows: list[WindowSpec]
    chunks: list[Chunk]
    stash: Stash
    summary: GroupSummary
    setup: ImagingSetup | None = None
    density: np.ndarray | None = None

    def blocks(self) -> Iterator[tuple[int, list[Block]]]:
        """(chunk index, its blocks), one chunk resident at a time; prepared once set up."""
        for c, chunk in enumerate(self.chunks):
            blocks = load_chunk(chunk, self.windows)
            if self.setup is not None:
                blocks = [self._prepared(b) for b in blocks]
            yield c, blocks
            del blocks

    def _prepared(self, b: Block) -> Block:
        weight = b.imaging_weight
        if weight is None:  # read again from the MeasurementSets
            weight = imaging_weight(b, self.setup, self.density)
        return prepare_block(b, self.setup, weight)


@trimmed
def load_group(windows: Sequence[WindowSpec], run_id: str, chunk_visibilities: int) -> Group:
    """Read the MeasurementSets of one group; windows sharing their rows become one block.

    A group of at most ``chunk_visibilities`` (rows x channels) stays in memory as one chunk;
    a larger one is read in time chunks of at most that size, each spilled once to scratch
    files under ``run_id``'s directory.
    """
    if sum(w.nvis for w in windows) <= chunk_visibilities:
        stash, ranges = Stash(), [None]
    else:
        stash = Stash(str(scratch_root(run_id)))
        ranges = time_chunks(windows, chunk_visibilities)
    chunks, times, uvw_max = [], [], 0.0
    for time_range in ranges:
        blocks = read_blocks(windows, time_range)
        times.append(distinct_times(blocks))
        uvw_max = max(uvw_max, largest_uvw(blocks))
        chunks.append(store_chunk(blocks, stash, time_range))
        del blocks
    summary = GroupSummary(np.unique(np.concatenate(times)), uvw_max, len(chunks))
    return Group(list(windows), chunks, stash, summary)


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
    """Model visibilities of a group, per chunk and block, and the model image they predict.

    ``model`` (nmoment, N, N) Jy/pixel: stored visibilities that are gone (lost with a worker
    while Dask recomputes) are predicted again from it.
    """

    model: np.ndarray
    parts: list[list[Stored]]

    def discard(self) -> None:
        for stored in (s for chunk in self.parts for s in chunk):
            stored.discard()
