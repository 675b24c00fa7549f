"""How a run's visibilities are cut into work: channel blocks, work items, groups.

- A *channel block* is a run of channels adjacent in frequency (over all MeasurementSets):
  each major cycle grids every block once onto its own image (one FFT per block and gridder
  call) and predicts each block from its own model image, as WSClean's joined channels do.
- A *work item* is (channel block, time chunk): the channels of one block from every file
  that holds some, in one time range; files of one observation share their rows and are read
  side by side into one gridder call.  An item holds at most ``chunk_visibilities`` (a single
  integration may exceed it).
- A *group* is the items one worker holds: consecutive times, every channel block of them,
  balanced by visibilities; one MeasurementSet with many channels is thereby spread over
  every worker.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from sdpbatch.io.ms_read import MeasurementSetInfo, window_times

TIME_DECIMALS = 3
"""Times are compared after rounding to a millisecond (different files of one observation)."""


@dataclass(frozen=True)
class ChannelBlock:
    """Channels imaged together: global channel indices, mean frequency and bandwidth (Hz)."""

    index: int
    channels: tuple[int, ...]
    frequency: float
    bandwidth: float


@dataclass(frozen=True)
class FilePart:
    """The channels ``[start, stop)`` of one window (a MeasurementSet's field and spectral
    window, read from ``data_column``) that belong to a block.

    ``first_channel``: global index of the window's channel 0; ``info``: the window as the
    client checked it (its readers do not check the file again).
    """

    path: str
    window: int
    start: int
    stop: int
    first_channel: int
    nrow: int
    field: int
    spw: int
    data_column: str
    info: MeasurementSetInfo | None = field(default=None, compare=False, repr=False)

    @property
    def nvis(self) -> int:
        return self.nrow * (self.stop - self.start)


@dataclass(frozen=True)
class WorkItem:
    """One channel block in one time range (None: all times), from one or more files.

    ``rows``: per part, the span ``[first, stop)`` of main-table rows that holds its rows in
    the time range (``(0, 0)``: none); empty when not planned (a reader scans every row).
    """

    block: int
    parts: tuple[FilePart, ...]
    time_range: tuple[float, float] | None
    nvis: int
    rows: tuple[tuple[int, int], ...] = ()


class WindowTimes:
    """The rows and times of each window's cross-correlations, read once per window."""

    def __init__(self, infos: Sequence[MeasurementSetInfo]):
        self.infos = infos
        self._read: dict[int, tuple[np.ndarray, np.ndarray]] = {}

    def get(self, window: int) -> tuple[np.ndarray, np.ndarray]:
        """(rows, TIME MJD s) of window ``window``, in table order."""
        if window not in self._read:
            info = self.infos[window]
            self._read[window] = window_times(info.path, info)
        return self._read[window]

    def span(self, window: int, time_range: tuple[float, float] | None) -> tuple[int, int]:
        """The main-table rows ``[first, stop)`` holding the window's rows in ``time_range``."""
        rows, times = self.get(window)
        if time_range is not None:
            rows = rows[(times >= time_range[0]) & (times < time_range[1])]
        return (int(rows[0]), int(rows[-1]) + 1) if rows.size else (0, 0)


BLOCK_FRACTIONAL_BANDWIDTH = 0.06
"""The fractional bandwidth one channel block may span when ``channel_blocks`` is chosen
automatically (:func:`auto_channel_blocks`): a block predicts all its channels from one model
image, which misses a spectral index of -0.7 by about 2 % at the block's edges.  Measured on the
raw-like snapshot (13.4 %, two Taylor terms, 2048^2): dynamic range 198.7 with 4 blocks, 194.0
with 3 (this choice), 182.8 with 2 (what 10 % per block would give)."""


def fractional_bandwidth(infos: Sequence[MeasurementSetInfo]) -> float:
    """The band's span, channel edges included, over its centre frequency."""
    frequency = np.concatenate([i.frequency for i in infos])
    half = 0.5 * np.abs(np.concatenate([i.channel_width for i in infos]))
    low, high = float(np.min(frequency - half)), float(np.max(frequency + half))
    return (high - low) / (0.5 * (high + low))


def auto_channel_blocks(infos: Sequence[MeasurementSetInfo], nmoment: int) -> tuple[int, str]:
    """The number of channel blocks of ``channel_blocks: null`` (auto) and the reason.

    - one Taylor term: one block; with a flat model every block predicts the same image and
      the blocks' images add up to the single block's, so more blocks only cost FFTs;
    - ``nmoment`` terms: at least ``nmoment`` blocks (fewer cannot determine the Taylor
      terms: the blocks' moments must span them), and one block per
      :data:`BLOCK_FRACTIONAL_BANDWIDTH` of the band, so that a block's single model image
      stays within a few percent of the spectrum it stands for (e.g. 3 blocks for 13 % and
      two terms, 4 for the seed's 23 %);
    - never more blocks than channels.

    The cubes have a plane per block: ask for ``channel_blocks`` to have more planes.
    """
    nchan = sum(i.nchan for i in infos)
    fraction = fractional_bandwidth(infos)
    if nmoment <= 1:
        n, why = 1, "one Taylor term: more blocks would grid the same image in parts"
    else:
        by_band = math.ceil(fraction / BLOCK_FRACTIONAL_BANDWIDTH - 1e-9)
        n = max(nmoment, by_band)
        why = (
            f"{nmoment} Taylor terms need {nmoment} blocks at least, a block spans at most "
            f"{BLOCK_FRACTIONAL_BANDWIDTH:.0%} in frequency ({by_band} for this band)"
        )
    n = max(1, min(n, nchan))
    return n, f"fractional bandwidth {fraction:.1%} over {nchan} channel(s); {why}"


def resolve_channel_blocks(
    infos: Sequence[MeasurementSetInfo], requested: int | None, nmoment: int
) -> tuple[int, str]:
    """The number of channel blocks a run uses and why: ``requested`` (the parameter
    ``channel_blocks``, at most one per channel) or, when it is None, the automatic choice."""
    if requested is None:
        n, why = auto_channel_blocks(infos, nmoment)
        return n, f"chosen automatically: {why}"
    nchan = sum(i.nchan for i in infos)
    why = f"as requested (channel_blocks {requested}, {nchan} channels)"
    return min(int(requested), nchan), why


def channel_blocks(infos: Sequence[MeasurementSetInfo], nblocks: int) -> list[ChannelBlock]:
    """``nblocks`` runs of channels (at most one per channel), by ascending frequency, with
    channel counts as equal as possible."""
    frequency = np.concatenate([i.frequency for i in infos])
    width = np.concatenate([i.channel_width for i in infos])
    order = np.argsort(frequency, kind="stable")
    runs = np.array_split(order, max(1, min(nblocks, frequency.size)))
    return [
        ChannelBlock(
            index=b,
            channels=tuple(int(c) for c in np.sort(run)),
            frequency=float(frequency[run].mean()),
            bandwidth=float(width[run].sum()),
        )
        for b, run in enumerate(runs)
    ]


def _file_parts(
    infos: Sequence[MeasurementSetInfo], block: ChannelBlock, data_column: str
) -> list[FilePart]:
    """The block's channels of each window, as one contiguous range per window."""
    parts, first = [], 0
    wanted = set(block.channels)
    for w, info in enumerate(infos):
        mine = [c for c in range(info.nchan) if first + c in wanted]
        if mine:
            if mine != list(range(mine[0], mine[-1] + 1)):
                raise ValueError(
                    f"channels of block {block.index} are not contiguous in {info.path}"
                )
            parts.append(
                FilePart(
                    path=str(info.path),
                    window=w,
                    start=mine[0],
                    stop=mine[-1] + 1,
                    first_channel=first,
                    nrow=info.nrow,
                    field=info.field_id,
                    spw=info.spw_id,
                    data_column=data_column,
                    info=info,
                )
            )
        first += info.nchan
    return parts


def _per_time(parts: Sequence[FilePart], windows: WindowTimes) -> dict[float, int]:
    """Visibilities of the parts per distinct time (rounded to :data:`TIME_DECIMALS`)."""
    per_time: dict[float, int] = {}
    for part in parts:
        times, counts = np.unique(
            np.round(windows.get(part.window)[1], TIME_DECIMALS), return_counts=True
        )
        for t, n in zip(times.tolist(), counts.tolist(), strict=True):
            per_time[t] = per_time.get(t, 0) + n * (part.stop - part.start)
    return per_time


def time_chunks(
    parts: Sequence[FilePart], limit: int, windows: WindowTimes
) -> list[tuple[float, float] | None]:
    """Time ranges [start, end) whose visibilities over ``parts`` stay within ``limit`` (a
    single time may exceed it); [None] when all of them fit.  Boundaries lie halfway between
    times, the outer ones are infinite."""
    if sum(p.nvis for p in parts) <= limit:
        return [None]
    per_time = _per_time(parts, windows)
    times = sorted(per_time)
    starts, size = [0], 0
    for i, t in enumerate(times):
        if size and size + per_time[t] > limit:
            starts.append(i)
            size = 0
        size += per_time[t]
    edges = [-np.inf] + [0.5 * (times[i - 1] + times[i]) for i in starts[1:]] + [np.inf]
    return list(zip(edges[:-1], edges[1:], strict=True))


def work_items(
    infos: Sequence[MeasurementSetInfo],
    blocks: Sequence[ChannelBlock],
    chunk_visibilities: int,
    data_column: str = "DATA",
) -> list[WorkItem]:
    """Every (channel block, time chunk) of the run; a chunk's items know the rows of each
    file that hold its times (a reader reads those, not the whole file)."""
    items = []
    windows = WindowTimes(infos)
    for block in blocks:
        parts = tuple(_file_parts(infos, block, data_column))
        ranges = time_chunks(parts, chunk_visibilities, windows)
        total = sum(p.nvis for p in parts)
        for time_range in ranges:
            rows = (
                ()
                if time_range is None
                else tuple(windows.span(p.window, time_range) for p in parts)
            )
            items.append(WorkItem(block.index, parts, time_range, -(-total // len(ranges)), rows))
    return items


def _time_order(item: WorkItem) -> tuple[float, int]:
    return (-np.inf if item.time_range is None else item.time_range[0], item.block)


def assign(items: Sequence[WorkItem], ngroups: int) -> list[list[WorkItem]]:
    """Items cut into ``ngroups`` groups of consecutive times (balanced visibilities), each
    in time order, every channel block of a time range together; every group gets at least
    one item (``ngroups`` <= the number of items).

    A group then holds whole solution intervals with all their channels: its solve sums
    grow by adding into cells already there, and the groups' sums join end to end.
    """
    ordered = sorted(items, key=_time_order)
    nvis = np.array([item.nvis for item in ordered], dtype=float)
    middle = np.cumsum(nvis) - 0.5 * nvis
    share = nvis.sum() / ngroups
    cuts = [0]
    for g in range(1, ngroups):
        cut = int(np.searchsorted(middle, g * share))
        cuts.append(min(max(cut, cuts[-1] + 1), len(ordered) - (ngroups - g)))
    cuts.append(len(ordered))
    return [list(ordered[a:b]) for a, b in zip(cuts[:-1], cuts[1:], strict=True)]


def worker_loads(groups: Sequence[Sequence[WorkItem]], nslots: int) -> list[int]:
    """Visibilities each worker slot holds: group g runs on slot ``g % nslots``."""
    loads = [0] * nslots
    for g, group in enumerate(groups):
        loads[g % nslots] += sum(item.nvis for item in group)
    return loads


def spills(
    groups: Sequence[Sequence[WorkItem]], nslots: int, chunk_visibilities: int
) -> list[bool]:
    """Whether each group keeps its items in scratch files rather than memory: when the groups
    of its worker hold more than ``chunk_visibilities`` together (results do not depend on it)."""
    loads = worker_loads(groups, nslots)
    return [loads[g % nslots] > chunk_visibilities for g in range(len(groups))]
