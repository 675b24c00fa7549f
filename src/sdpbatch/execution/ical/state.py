"""The state of one ICAL run: what stays fixed, what reading settles, what the cycles change.

Handles are task results: values in-process, futures on Dask.
"""

from __future__ import annotations

import itertools
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from sdpbatch.execution.ical.directions import DirectionState
from sdpbatch.execution.ical.plan import ChannelBlock, WorkItem
from sdpbatch.execution.ical.results import CycleRecord
from sdpbatch.execution.ical.settings import (
    CalibrationSchedule,
    CleanSettings,
    IcalSettings,
    ImagingSetup,
    Threads,
)
from sdpbatch.execution.progress import Progress
from sdpbatch.execution.runner import Runner
from sdpbatch.io.ms_read import MeasurementSetInfo
from sdpbatch.parameters import Parameters


@dataclass
class StageClock:
    """Wall time per stage, and when each stage ran (``time.perf_counter``)."""

    timings: dict[str, float] = field(default_factory=dict)
    intervals: list[tuple[str, float, float]] = field(default_factory=list)
    mark: float = field(default_factory=time.perf_counter)

    def lap(self, name: str) -> None:
        """The time since the last lap goes to stage ``name``."""
        now = time.perf_counter()
        self.timings[name] = self.timings.get(name, 0.0) + now - self.mark
        self.intervals.append((name, self.mark, now))
        self.mark = now


@dataclass
class Run:
    """What stays fixed through a run: where tasks go, the blocks, items and groups, settings.

    ``groups[g]``: the work items of group g, which runs on worker slot g.
    """

    runner: Runner
    params: Parameters
    settings: IcalSettings
    schedule: CalibrationSchedule
    infos: list[MeasurementSetInfo]
    blocks: list[ChannelBlock]
    groups: list[list[WorkItem]]
    threads: Threads
    progress: Progress
    run_id: str = field(default_factory=lambda: uuid.uuid4().hex[:12])
    clock: StageClock = field(default_factory=StageClock)
    started: float = field(default_factory=time.perf_counter)
    serial: Iterator[int] = field(default_factory=itertools.count)

    @property
    def frequencies(self) -> np.ndarray:
        """(nchan,) Hz: every channel of the run, window after window."""
        return np.concatenate([i.frequency for i in self.infos])

    @property
    def ngroups(self) -> int:
        return len(self.groups)

    def _key(self, name: str) -> str:
        """A task key never used before in this run: a step made again (a cycle redone after
        a term is undone) must not be answered by Dask with the first one's result."""
        return f"ical-{name}-n{next(self.serial)}"

    def per_group(self, fn, name: str, *per_group: list, shared: tuple = ()) -> list:
        """One task per group (or item: a minor cycle's tile), item ``g`` pinned to worker
        slot ``g`` (modulo the workers)."""
        items = zip(*per_group, strict=True)
        return [
            self.runner.submit(fn, *args, *shared, key=self._key(f"{name}-{g}"), slot=g)
            for g, args in enumerate(items)
        ]

    def one(self, fn, name: str, *args: Any) -> Any:
        """A task that combines the groups' results (on worker 0, like the clean)."""
        return self.runner.submit(fn, *args, key=self._key(name), slot=0)

    def tree(self, fn, name: str, handles: list) -> Any:
        """``fn`` applied pairwise over the groups' results, level by level, on the cluster
        (each pair where its left part is); the total ends on worker 0."""
        slots = list(range(len(handles)))
        level = 0
        while len(handles) > 1:
            pairs = range(0, len(handles), 2)
            handles = [
                self.runner.submit(
                    fn, *handles[i : i + 2], key=self._key(f"{name}-{level}-{i}"), slot=slots[i]
                )
                if i + 1 < len(handles)
                else handles[i]
                for i in pairs
            ]
            slots = [slots[i] for i in pairs]
            level += 1
        return handles[0]


@dataclass
class Imaging:
    """What reading the data settles: the groups' data (handles), the imaging and clean setup,
    the solution intervals per term ((boundaries, centres)) and the group that alone holds
    each interval's data (-1: several), and once the PSF is made, the channel blocks' Taylor
    moments (nblocks, 2 nmoment - 1)."""

    groups: list
    setup: ImagingSetup
    clean: CleanSettings
    intervals: dict[str, tuple[np.ndarray, np.ndarray]]
    owners: dict[str, np.ndarray]
    moments: np.ndarray | None = None


@dataclass
class CycleState:
    """What the cycles change: gains, the model and its visibilities (handles), the records;
    the D term apart (its gains have a direction axis)."""

    psf: Any
    beam: Any = None
    model: Any = None
    increment: Any = None
    model_vis: list = field(default_factory=list)
    gains: dict[str, np.ndarray] = field(default_factory=dict)
    anchors: dict[str, np.ndarray] = field(default_factory=dict)  # solved against a sky model
    cycles: list[CycleRecord] = field(default_factory=list)
    disabled: set[str] = field(default_factory=set)  # terms undone: not solved any more
    undone: list[dict] = field(default_factory=list)
    best: dict = field(default_factory=dict)  # the cycle of highest dynamic range: its model, gains
    predicted: list = field(default_factory=list)  # the increments in model_vis, packed, in order
    directions: DirectionState | None = None  # the D term: centres, gains, facets
