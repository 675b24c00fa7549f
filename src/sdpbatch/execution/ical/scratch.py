"""Where a group's arrays are kept between passes: in memory, or spilled to scratch files.

Every array a pass needs again (a work item's rows, its imaging weights, model visibilities)
is put into a :class:`Stash` and handed around as a :class:`Stored`.  A group small enough to
stay in memory uses a stash without a directory (the array itself is kept); a larger one
spills each array once to this run's scratch directory, so that a pass holds one work item's
data at a time.  ``Stored.load()`` returns None when a file is gone (the worker that wrote it
died): the caller then reads or predicts it again.
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

from sdpbatch.execution.ical.data import ROW_ARRAYS, Block, read_blocks
from sdpbatch.execution.ical.plan import WorkItem

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


@dataclass
class Chunk:
    """A work item's data, block by block: ``rows[i]`` holds block i's :data:`ROW_ARRAYS`
    (and, once prepared, its ``imaging_weight``); ``small[i]`` its per-channel arrays."""

    item: WorkItem
    small: list[dict[str, np.ndarray]]
    rows: list[dict[str, Stored]]

    @property
    def nvis(self) -> int:
        return self.item.nvis


def store_chunk(item: WorkItem, blocks: Sequence[Block], stash: Stash) -> Chunk:
    """Put the item's blocks' rows into ``stash``."""
    return Chunk(
        item=item,
        small=[b.small() for b in blocks],
        rows=[{name: stash.put(getattr(b, name)) for name in ROW_ARRAYS} for b in blocks],
    )


def load_chunk(chunk: Chunk) -> list[Block]:
    """The chunk's blocks (with their imaging weights when stored); read again from the
    MeasurementSets, without weights, when a stored array is gone."""
    blocks = []
    for small, rows in zip(chunk.small, chunk.rows, strict=True):
        arrays = {name: stored.load() for name, stored in rows.items()}
        if any(a is None for a in arrays.values()):
            LOG.info("scratch files of a chunk are gone: reading it again")
            return read_blocks(chunk.item)
        weight = arrays.pop("imaging_weight", None)
        blocks.append(Block(**arrays, **small, imaging_weight=weight))
    return blocks
