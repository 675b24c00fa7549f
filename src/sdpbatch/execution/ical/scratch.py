"""Where a group's arrays are kept between passes: in memory, or spilled to scratch files.

Every array a pass needs again (a chunk's rows, its imaging weights, model visibilities) is
put into a :class:`Stash` and handed around as a :class:`Stored`.  A group small enough to
stay in memory uses a stash without a directory (the array itself is kept); a larger one is
read in time chunks (:func:`time_chunks`) and spills each array once to this run's scratch
directory, so that a pass holds one chunk at a time.  ``Stored.load()`` returns None when a
file is gone (the worker that wrote it died): the caller then reads or predicts it again.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from sdpbatch.execution.ical.data import ROW_ARRAYS, TIME_DECIMALS, Block, WindowSpec, read_blocks
from sdpbatch.io.ms_read import read_measurement_set_times

LOG = logging.getLogger(__name__)


@dataclass(frozen=True)
class InMemory:
    """An array kept as it is."""

    array: np.ndarray

    def load(self) -> np.ndarray:
        return self.array

    def discard(self) -> None:
        pass


@dataclass(frozen=True)
class OnDisk:
    """An array in a ``.npy`` file (written complete under a temporary name, then renamed)."""

    path: str

    def load(self) -> np.ndarray | None:
        try:
            return np.load(self.path, allow_pickle=False)  # into memory, no memmap
        except FileNotFoundError:
            return None

    def discard(self) -> None:
        Path(self.path).unlink(missing_ok=True)


Stored = InMemory | OnDisk


@dataclass(frozen=True)
class Stash:
    """Puts arrays in memory (``directory`` None) or into files under ``directory``."""

    directory: str | None = None

    def put(self, array: np.ndarray) -> Stored:
        if self.directory is None:
            return InMemory(array)
        root = Path(self.directory)
        root.mkdir(parents=True, exist_ok=True)
        path = root / f"{uuid.uuid4().hex}.npy"
        tmp = path.with_suffix(".tmp")
        with open(tmp, "wb") as f:
            np.save(f, array, allow_pickle=False)
        os.replace(tmp, path)
        return OnDisk(str(path))


def scratch_root(run_id: str, worker: Any = None) -> Path:
    """This run's scratch directory: in the Dask worker's local directory, or the temp dir."""
    if worker is None:
        try:
            from distributed import get_worker

            worker = get_worker()
        except (ImportError, ValueError):
            worker = None
    base = Path(worker.local_directory) if worker is not None else Path(tempfile.gettempdir())
    return base / f"sdpbatch-ical-{run_id}"


def remove_scratch(run_id: str, dask_worker: Any = None) -> None:
    """Delete this run's scratch files in this process, or on the worker (``client.run``)."""
    shutil.rmtree(scratch_root(run_id, dask_worker), ignore_errors=True)


def time_chunks(windows: Sequence[WindowSpec], limit: int) -> list[tuple[float, float]]:
    """Time ranges [start, end) whose rows x channels over the windows fit a chunk.

    Consecutive distinct times are added while the chunk stays within ``limit`` visibilities
    (a single time may exceed it); boundaries lie halfway between times, the outer ones are
    infinite.
    """
    per_time: dict[float, int] = {}
    for spec in windows:
        times, counts = np.unique(
            np.round(read_measurement_set_times(spec.path), TIME_DECIMALS), return_counts=True
        )
        for t, n in zip(times.tolist(), counts.tolist(), strict=True):
            per_time[t] = per_time.get(t, 0) + n * spec.nchan
    times = sorted(per_time)
    starts, size = [0], 0
    for i, t in enumerate(times):
        if size and size + per_time[t] > limit:
            starts.append(i)
            size = 0
        size += per_time[t]
    edges = [-np.inf] + [0.5 * (times[i - 1] + times[i]) for i in starts[1:]] + [np.inf]
    return list(zip(edges[:-1], edges[1:], strict=True))


@dataclass
class Chunk:
    """The rows of a group in one time range (None: all of them), block by block.

    ``rows[i]`` holds block i's :data:`ROW_ARRAYS` (and, once prepared, its
    ``imaging_weight``); ``small[i]`` its per-channel arrays; ``nvis`` its visibilities.
    """

    time_range: tuple[float, float] | None
    small: list[dict[str, np.ndarray]]
    rows: list[dict[str, Stored]]
    nvis: int


def store_chunk(
    blocks: Sequence[Block], stash: Stash, time_range: tuple[float, float] | None
) -> Chunk:
    """Put the blocks' rows into ``stash``."""
    return Chunk(
        time_range=time_range,
        small=[b.small() for b in blocks],
        rows=[{name: stash.put(getattr(b, name)) for name in ROW_ARRAYS} for b in blocks],
        nvis=sum(b.nvis for b in blocks),
    )


def load_chunk(chunk: Chunk, windows: Sequence[WindowSpec]) -> list[Block]:
    """The chunk's blocks (with their imaging weights when stored); read again from the
    MeasurementSets, without weights, when a stored array is gone."""
    blocks = []
    for small, rows in zip(chunk.small, chunk.rows, strict=True):
        arrays = {name: stored.load() for name, stored in rows.items()}
        if any(a is None for a in arrays.values()):
            LOG.info("scratch files of a chunk are gone: reading it again")
            return read_blocks(windows, chunk.time_range)
        weight = arrays.pop("imaging_weight", None)
        blocks.append(Block(**arrays, **small, imaging_weight=weight))
    return blocks
