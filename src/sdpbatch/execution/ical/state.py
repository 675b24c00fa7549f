"""The state of one ICAL run: what stays fixed, what reading settles, what the cycles change.

Handles are task results: values in-process, futures on Dask.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from sdpbatch.execution.ical.data import WindowSpec
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
    """What stays fixed through a run: where tasks go, the windows and groups, settings."""

    runner: Runner
    params: Parameters
    settings: IcalSettings
    schedule: CalibrationSchedule
    infos: list[MeasurementSetInfo]
    windows: list[WindowSpec]
    ngroups: int
    threads: Threads
    progress: Progress
    run_id: str = field(default_factory=lambda: uuid.uuid4().hex[:12])
    clock: StageClock = field(default_factory=StageClock)
    started: float = field(default_factory=time.perf_counter)

    @property
    def frequencies(self) -> np.ndarray:
        return np.concatenate([i.frequency for i in self.infos])

    def per_group(self, fn, name: str, *per_group: list, shared: tuple = ()) -> list:
        """One task per group, pinned to the group's worker."""
        items = zip(*per_group, strict=True)
        return [
            self.runner.submit(fn, *args, *shared, key=f"ical-{name}-{g}", slot=g)
            for g, args in enumerate(items)
        ]

    def one(self, fn, name: str, *args: Any) -> Any:
        """A task that combines the groups' results (on worker 0, like the clean)."""
        return self.runner.submit(fn, *args, key=f"ical-{name}", slot=0)


@dataclass
class Imaging:
    """What reading the data settles: the groups (handles), the imaging and clean setup."""

    groups: list
    setup: ImagingSetup
    clean: CleanSettings
    intervals: dict[str, tuple[np.ndarray, np.ndarray]]


@dataclass
class CycleState:
    """What the cycles change: gains, the model and its visibilities (handles), the records."""

    psf: Any
    beam: Any = None
    model: Any = None
    increment: Any = None
    model_vis: list = field(default_factory=list)
    gains: dict[str, np.ndarray] = field(default_factory=dict)
    anchors: dict[str, np.ndarray] = field(default_factory=dict)  # solved against a sky model
    cycles: list[CycleRecord] = field(default_factory=list)
