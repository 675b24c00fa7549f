"""ICAL's visibility data: blocks of rows, and how they are read and prepared.

A work item's files (windows) that share their rows (the same times, baselines and UVW: the
files of one observation) are joined into one *block* of (nrow, nchan) arrays, channels in
ascending frequency, so that the gridder sees all their channels in one call.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace

import numpy as np

from sdpbatch.execution.ical.plan import TIME_DECIMALS, WorkItem
from sdpbatch.execution.ical.settings import ImagingSetup
from sdpbatch.io.ms_read import read_measurement_set
from sdpbatch.science.imaging import apply_density_weighting
from sdpbatch.science.solve import interval_index
from sdpbatch.science.visibility import Visibilities

ROW_ARRAYS = ("uvw", "time", "antenna1", "antenna2", "vis", "weight", "flag")
"""The per-row arrays of a block (what a chunk stores)."""


@dataclass
class Block:
    """Visibilities of one or more windows that share their rows.

    ``vis``, ``weight``, ``flag`` are (nrow, nchan); ``channels`` are the global channel
    indices, ``windows`` the window of each channel.  Once prepared (:func:`prepare_block`):
    ``imaging_weight`` (nrow, nchan), ``taylor`` (nchan,) t_c = (nu_c - nu0) / nu0 and
    ``intervals`` (nrow,) the solution interval of each row per gain term.
    """

    uvw: np.ndarray
    time: np.ndarray
    antenna1: np.ndarray
    antenna2: np.ndarray
    frequency: np.ndarray
    vis: np.ndarray
    weight: np.ndarray
    flag: np.ndarray
    channels: np.ndarray
    windows: np.ndarray
    imaging_weight: np.ndarray | None = None
    taylor: np.ndarray | None = None
    intervals: dict[str, np.ndarray] = field(default_factory=dict)

    @property
    def nvis(self) -> int:
        return self.vis.size

    def time_index(self) -> np.ndarray:
        """(nrow,) the index of each row's time among the block's distinct times."""
        return np.unique(self.time, return_inverse=True)[1]

    def mask(self) -> np.ndarray | None:
        """The flags, or None when nothing is flagged (the gridder's faster path)."""
        return self.flag if self.flag.any() else None

    def small(self) -> dict[str, np.ndarray]:
        """The per-channel arrays (kept with a chunk when its rows are stored)."""
        return {"frequency": self.frequency, "channels": self.channels, "windows": self.windows}


def _same_rows(block: Block, vis: Visibilities) -> bool:
    return (
        block.uvw.shape == vis.uvw.shape
        and np.array_equal(block.time, vis.time)
        and np.array_equal(block.antenna1, vis.antenna1)
        and np.array_equal(block.antenna2, vis.antenna2)
        and np.allclose(block.uvw, vis.uvw, rtol=0, atol=1e-6)
    )


def _new_block(vis: Visibilities, channels: np.ndarray, windows: np.ndarray) -> Block:
    return Block(
        uvw=vis.uvw,
        time=vis.time,
        antenna1=vis.antenna1.astype(np.int64),
        antenna2=vis.antenna2.astype(np.int64),
        frequency=vis.frequency,
        vis=vis.vis,
        weight=vis.weight,
        flag=vis.flag,
        channels=channels,
        windows=windows,
    )


def _join(target: Block, vis: Visibilities, channels: np.ndarray, windows: np.ndarray) -> None:
    target.frequency = np.concatenate([target.frequency, vis.frequency])
    target.vis = np.concatenate([target.vis, vis.vis], axis=1)
    target.weight = np.concatenate([target.weight, vis.weight], axis=1)
    target.flag = np.concatenate([target.flag, vis.flag], axis=1)
    target.channels = np.concatenate([target.channels, channels])
    target.windows = np.concatenate([target.windows, windows])


def _ascending(b: Block) -> None:
    """Sort a block's channels by frequency (the gridder wants them ascending)."""
    order = np.argsort(b.frequency, kind="stable")
    if np.all(order == np.arange(order.size)):
        return
    for name in ("vis", "weight", "flag"):
        setattr(b, name, np.ascontiguousarray(getattr(b, name)[:, order]))
    for name in ("frequency", "channels", "windows"):
        setattr(b, name, getattr(b, name)[order])


def read_blocks(item: WorkItem) -> list[Block]:
    """Read a work item: its channels of each file in its time range; files sharing their
    rows (one observation's) are joined side by side into one block."""
    blocks: list[Block] = []
    for k, part in enumerate(item.parts):
        rows = item.rows[k] if item.rows else None
        if rows is not None and rows[0] == rows[1]:
            continue  # the file holds none of the item's times
        vis = read_measurement_set(
            part.path,
            data_column=part.data_column,
            field=part.field,
            spw=part.spw,
            time_range=item.time_range,
            channels=(part.start, part.stop),
            rows=rows,
            info=part.info,
        )
        if vis.nrow == 0:
            continue
        channels = part.first_channel + np.arange(part.start, part.stop)
        window = np.full(vis.nchan, part.window)
        target = next((b for b in blocks if _same_rows(b, vis)), None)
        if target is None:
            blocks.append(_new_block(vis, channels, window))
        else:
            _join(target, vis, channels, window)
    for b in blocks:
        _ascending(b)
    return blocks


def distinct_times(blocks: Sequence[Block]) -> np.ndarray:
    """The distinct times (MJD s, rounded to :data:`TIME_DECIMALS`) of the blocks."""
    times = [np.unique(np.round(b.time, TIME_DECIMALS)) for b in blocks]
    return np.unique(np.concatenate(times)) if times else np.zeros(0)


def largest_uvw(blocks: Sequence[Block]) -> float:
    """The largest |u|, |v| or |w| (m) of the blocks."""
    return max((float(np.abs(b.uvw).max()) for b in blocks if b.uvw.size), default=0.0)


def imaging_weight(b: Block, setup: ImagingSetup, density: np.ndarray | None) -> np.ndarray:
    """The block's imaging weights (nrow, nchan): zero where flagged, density-weighted unless
    natural; float64 for a gridder accuracy of 1e-5 or better, else float32."""
    real = np.float64 if setup.epsilon <= 1e-5 else np.float32
    weight = np.where(b.flag, 0.0, b.weight.astype(np.float64))
    if setup.weighting != "natural":
        weight = apply_density_weighting(
            b.uvw,
            b.frequency,
            weight,
            density,
            scheme=setup.weighting,
            robust=setup.robust,
            cellsize=setup.cellsize,
        )
    return np.ascontiguousarray(weight, dtype=real)


def prepare_block(b: Block, setup: ImagingSetup, weight: np.ndarray) -> Block:
    """The block ready to image, with its imaging ``weight``: Taylor factors and intervals."""
    times = np.round(b.time, TIME_DECIMALS)
    return replace(
        b,
        imaging_weight=weight,
        taylor=(b.frequency - setup.reference_frequency) / setup.reference_frequency,
        intervals={t: interval_index(times, bnd) for t, bnd in setup.boundaries.items()},
    )
