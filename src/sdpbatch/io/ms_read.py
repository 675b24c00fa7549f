"""Read Stokes I visibilities from any MeasurementSet v2 (ours, or one a user brings).

Supported: one field, one spectral window (or the one chosen by ``data_desc_id``) with any
number of channels, and correlations that give Stokes I: ``I``; linear ``XX, YY`` (with or
without ``XY, YX``); circular ``RR, LL`` (with or without ``RL, LR``).  I = (XX + YY)/2 (or
(RR + LL)/2) with the variance ``(var_XX + var_YY)/4``, i.e. weight ``4 w_XX w_YY / (w_XX + w_YY)``.
A sample is flagged if it is flagged in either correlation, if its row is flagged (FLAG_ROW),
if its weight is not positive or its value not finite.  Weights come from WEIGHT_SPECTRUM where
that column holds data, else from WEIGHT broadcast over the channels.  Autocorrelations are
dropped.  Anything else raises :class:`MeasurementSetError` naming the file and the problem.

The main table is read in blocks of rows so that the correlation cube (4x the Stokes I size,
plus flags and weights) is never in memory all at once.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from casacore import tables

from sdpbatch.science.visibility import Visibilities

BLOCK_ROWS = 65536
DATA_COLUMNS = ("DATA", "CORRECTED_DATA", "MODEL_DATA")
REQUIRED_MAIN = ("UVW", "TIME", "ANTENNA1", "ANTENNA2", "FLAG", "WEIGHT", "DATA_DESC_ID")
REQUIRED_SUBTABLES = {
    "ANTENNA": ("NAME", "POSITION", "DISH_DIAMETER"),
    "SPECTRAL_WINDOW": ("CHAN_FREQ", "CHAN_WIDTH"),
    "POLARIZATION": ("CORR_TYPE",),
    "DATA_DESCRIPTION": ("SPECTRAL_WINDOW_ID", "POLARIZATION_ID"),
    "FIELD": ("PHASE_DIR",),
}
# casacore Stokes enumeration (casacore/measures/Measures/Stokes.h)
STOKES_NAMES = {
    1: "I", 2: "Q", 3: "U", 4: "V", 5: "RR", 6: "RL", 7: "LR", 8: "LL",
    9: "XX", 10: "XY", 11: "YX", 12: "YY",
}  # fmt: skip
ACCEPTED_FRAMES = ("J2000", "ICRS")


class MeasurementSetError(ValueError):
    """A MeasurementSet is missing, unreadable or holds content we cannot turn into Stokes I."""

    def __init__(self, path: str | Path, message: str):
        self.path = Path(path)
        super().__init__(f"MeasurementSet {path}: {message}")


@dataclass
class MeasurementSetInfo:
    """What a MeasurementSet holds, read without its visibility columns.

    Attributes
    ----------
    path : the MeasurementSet.
    nrow : rows of the main table (of the chosen data description, autocorrelations included).
    data_desc_id : the DATA_DESCRIPTION row that is read.
    field_id : the FIELD row that the main table uses.
    phase_centre : (ra, dec) radians, J2000/ICRS.
    frequency : (nchan,) Hz, channel centres.
    channel_width : (nchan,) Hz.
    correlations : correlation names, e.g. ["XX", "XY", "YX", "YY"].
    antenna_names : station names, length nant.
    antenna_positions : (nant, 3) ITRF metres.
    antenna_diameter : metres (median of DISH_DIAMETER).
    time_range : (first, last) TIME, MJD seconds.
    integration_time : seconds (median INTERVAL).
    columns : visibility columns present among DATA, CORRECTED_DATA, MODEL_DATA.
    """

    path: Path
    nrow: int
    data_desc_id: int
    field_id: int
    phase_centre: tuple[float, float]
    frequency: np.ndarray
    channel_width: np.ndarray
    correlations: list[str]
    antenna_names: list[str]
    antenna_positions: np.ndarray
    antenna_diameter: float
    time_range: tuple[float, float]
    integration_time: float
    columns: list[str]

    @property
    def nchan(self) -> int:
        return int(self.frequency.size)

    @property
    def nant(self) -> int:
        return len(self.antenna_names)


@contextlib.contextmanager
def _open(path: Path, name: str | None = None) -> Iterator[tables.table]:
    """Open the main table or a subtable read-only, without read locks."""
    target = path if name is None else path / name
    what = "main table" if name is None else f"{name} subtable"
    if not target.is_dir():
        raise MeasurementSetError(path, f"no {what} ({target} does not exist)")
    try:
        tab = tables.table(str(target), readonly=True, lockoptions="autonoread", ack=False)
    except RuntimeError as err:
        raise MeasurementSetError(path, f"cannot open the {what}: {err}") from err
    try:
        yield tab
    finally:
        tab.close()


def _require_columns(path: Path, tab: tables.table, names: tuple[str, ...], what: str) -> None:
    missing = [c for c in names if c not in tab.colnames()]
    if missing:
        raise MeasurementSetError(path, f"{what} has no column(s) {', '.join(missing)}")


def _has_data(tab: tables.table, column: str) -> bool:
    """True if ``column`` exists and its first cell holds a value (optional columns may not)."""
    return column in tab.colnames() and tab.nrows() > 0 and bool(tab.iscelldefined(column, 0))


def _choose_data_desc(path: Path, main: tables.table, data_desc_id: int | None) -> int:
    used = np.unique(main.getcol("DATA_DESC_ID"))
    if data_desc_id is None:
        if used.size != 1:
            raise MeasurementSetError(
                path,
                f"rows use {used.size} data descriptions (spectral windows / polarisation "
                f"setups) {used.tolist()}; choose one with data_desc_id",
            )
        return int(used[0])
    if data_desc_id not in used:
        raise MeasurementSetError(
            path, f"data_desc_id {data_desc_id} is not used; the rows use {used.tolist()}"
        )
    return int(data_desc_id)


def _field(path: Path, main: tables.table, rows: np.ndarray | None) -> tuple[int, tuple]:
    """The single FIELD row used by the main table and its phase centre (ra, dec) rad."""
    field_ids = main.getcol("FIELD_ID") if "FIELD_ID" in main.colnames() else np.zeros(1, int)
    used = np.unique(field_ids if rows is None else field_ids[rows])
    if used.size != 1:
        raise MeasurementSetError(
            path,
            f"rows use {used.size} fields {used.tolist()}; only one field (phase centre) "
            "per MeasurementSet is supported: split it first (e.g. DP3 or CASA split)",
        )
    field_id = int(used[0])
    with _open(path, "FIELD") as tab:
        _require_columns(path, tab, REQUIRED_SUBTABLES["FIELD"], "FIELD")
        if field_id >= tab.nrows():
            raise MeasurementSetError(path, f"FIELD_ID {field_id} has no row in FIELD")
        frame = (
            tab.getcolkeyword("PHASE_DIR", "MEASINFO").get("Ref", "J2000")
            if "MEASINFO" in tab.getcolkeywords("PHASE_DIR")
            else "J2000"
        )
        if frame not in ACCEPTED_FRAMES:
            raise MeasurementSetError(
                path, f"FIELD PHASE_DIR frame is {frame}; supported: {', '.join(ACCEPTED_FRAMES)}"
            )
        direction = np.asarray(tab.getcell("PHASE_DIR", field_id), dtype=np.float64).reshape(-1, 2)
    ra, dec = float(direction[0, 0]) % (2 * np.pi), float(direction[0, 1])
    return field_id, (ra, dec)


def _stokes_i_plan(path: Path, corr_types: list[int]) -> tuple[list[str], tuple[int, ...]]:
    """Names of the correlations and the indices that make Stokes I."""
    names = [STOKES_NAMES.get(int(c), f"type {int(c)}") for c in corr_types]
    for pair in (("I",), ("XX", "YY"), ("RR", "LL")):
        if all(p in names for p in pair):
            return names, tuple(names.index(p) for p in pair)
    raise MeasurementSetError(
        path,
        f"correlations {names} do not give Stokes I; supported: I, XX+YY (linear), RR+LL "
        "(circular)",
    )


def read_measurement_set_metadata(
    path: str | Path, *, column: str = "DATA", data_desc_id: int | None = None
) -> MeasurementSetInfo:
    """Check a MeasurementSet and read its metadata cheaply (no visibility column is read).

    Raises :class:`MeasurementSetError` for anything :func:`read_measurement_set` would reject:
    missing columns or subtables, several fields or spectral windows, correlations without
    Stokes I, or a missing ``column``.
    """
    path = Path(path)
    if column not in DATA_COLUMNS:
        raise MeasurementSetError(
            path,
            f"column '{column}' is not a visibility column; allowed: {', '.join(DATA_COLUMNS)}",
        )
    with _open(path) as main:
        _require_columns(path, main, REQUIRED_MAIN + (column,), "main table")
        if main.nrows() == 0:
            raise MeasurementSetError(path, "main table has no rows")
        ddid = _choose_data_desc(path, main, data_desc_id)
        ddids = main.getcol("DATA_DESC_ID")
        rows = None if np.all(ddids == ddid) else np.flatnonzero(ddids == ddid)
        field_id, phase_centre = _field(path, main, rows)
        times = main.getcol("TIME") if rows is None else main.getcol("TIME")[rows]
        interval = (
            main.getcol("INTERVAL") if "INTERVAL" in main.colnames() else np.zeros(times.size)
        )
        nrow = times.size
        columns = [c for c in DATA_COLUMNS if c in main.colnames()]
    with _open(path, "DATA_DESCRIPTION") as tab:
        _require_columns(path, tab, REQUIRED_SUBTABLES["DATA_DESCRIPTION"], "DATA_DESCRIPTION")
        if ddid >= tab.nrows():
            raise MeasurementSetError(path, f"DATA_DESC_ID {ddid} has no row in DATA_DESCRIPTION")
        spw = int(tab.getcell("SPECTRAL_WINDOW_ID", ddid))
        pol = int(tab.getcell("POLARIZATION_ID", ddid))
    with _open(path, "SPECTRAL_WINDOW") as tab:
        _require_columns(path, tab, REQUIRED_SUBTABLES["SPECTRAL_WINDOW"], "SPECTRAL_WINDOW")
        frequency = np.asarray(tab.getcell("CHAN_FREQ", spw), dtype=np.float64)
        width = np.abs(np.asarray(tab.getcell("CHAN_WIDTH", spw), dtype=np.float64))
    with _open(path, "POLARIZATION") as tab:
        _require_columns(path, tab, REQUIRED_SUBTABLES["POLARIZATION"], "POLARIZATION")
        correlations, _ = _stokes_i_plan(path, list(tab.getcell("CORR_TYPE", pol)))
    with _open(path, "ANTENNA") as tab:
        _require_columns(path, tab, REQUIRED_SUBTABLES["ANTENNA"], "ANTENNA")
        names = [str(n) for n in tab.getcol("NAME")]
        positions = np.asarray(tab.getcol("POSITION"), dtype=np.float64).reshape(-1, 3)
        diameters = np.asarray(tab.getcol("DISH_DIAMETER"), dtype=np.float64)
    positive = interval[interval > 0]
    return MeasurementSetInfo(
        path=path,
        nrow=int(nrow),
        data_desc_id=ddid,
        field_id=field_id,
        phase_centre=phase_centre,
        frequency=frequency,
        channel_width=width,
        correlations=correlations,
        antenna_names=names,
        antenna_positions=positions,
        antenna_diameter=float(np.median(diameters)) if diameters.size else 0.0,
        time_range=(float(times.min()), float(times.max())),
        integration_time=float(np.median(positive)) if positive.size else 0.0,
        columns=columns,
    )


def read_measurement_set_times(path: str | Path, *, data_desc_id: int | None = None) -> np.ndarray:
    """TIME (MJD s) of the cross-correlation rows :func:`read_measurement_set` would read.

    Cheap (three small columns): it lets a reader plan ``time_range`` chunks of bounded size.
    """
    path = Path(path)
    info = read_measurement_set_metadata(path, data_desc_id=data_desc_id)
    with _open(path) as main:
        keep = (main.getcol("DATA_DESC_ID") == info.data_desc_id) & (
            main.getcol("ANTENNA1") != main.getcol("ANTENNA2")
        )
        return main.getcol("TIME")[keep]


def _combine_stokes_i(
    data: np.ndarray, flag: np.ndarray, weight: np.ndarray, pair: tuple[int, ...]
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Stokes I, its weight and flag from (nrow, nchan, ncorr) blocks."""
    if len(pair) == 1:
        (k,) = pair
        return data[..., k].astype(np.complex128), weight[..., k], flag[..., k]
    a, b = pair
    vis = 0.5 * (data[..., a].astype(np.complex128) + data[..., b])
    wa = weight[..., a].astype(np.float64)
    wb = weight[..., b].astype(np.float64)
    total = wa + wb
    w = np.divide(4.0 * wa * wb, total, out=np.zeros_like(total), where=total > 0)
    return vis, w, flag[..., a] | flag[..., b]


def _cells(main: tables.table, column: str, start: int, n: int, cells: slice | None) -> np.ndarray:
    """(n, nchan, ncorr) cells of ``column`` from row ``start``: all channels (``cells`` None)
    or the slice ``cells`` only (nothing else is read from disk)."""
    if cells is None:
        return main.getcol(column, startrow=start, nrow=n)
    ncorr = main.getcell(column, start).shape[1]
    return main.getcolslice(
        column, [cells.start, 0], [cells.stop - 1, ncorr - 1], startrow=start, nrow=n
    )


def read_measurement_set(
    path: str | Path,
    *,
    column: str = "DATA",
    data_desc_id: int | None = None,
    block_rows: int = BLOCK_ROWS,
    time_range: tuple[float, float] | None = None,
    channels: tuple[int, int] | None = None,
) -> Visibilities:
    """Read the Stokes I cross-correlations of a MeasurementSet (see the module docstring).

    Parameters
    ----------
    path : the MeasurementSet directory.
    column : DATA, CORRECTED_DATA or MODEL_DATA.
    data_desc_id : the spectral window / polarisation setup to read when there are several.
    block_rows : rows read per block (bounds the memory of the correlation cube).
    time_range : (start, end) MJD s: read only the rows with ``start <= TIME < end`` (in table
        order; the rows need not be sorted by time, but only the blocks holding them are read).
    channels : (start, stop): read only these channels of the spectral window (a slice of
        the cells: nothing else is read from disk).
    """
    path = Path(path)
    info = read_measurement_set_metadata(path, column=column, data_desc_id=data_desc_id)
    with _open(path, "POLARIZATION") as tab, _open(path, "DATA_DESCRIPTION") as dd:
        corr_types = list(
            tab.getcell("CORR_TYPE", int(dd.getcell("POLARIZATION_ID", info.data_desc_id)))
        )
    _, pair = _stokes_i_plan(path, corr_types)
    with _open(path) as main:
        if not _has_data(main, column):
            raise MeasurementSetError(path, f"column {column} exists but holds no data")
        ddids = main.getcol("DATA_DESC_ID")
        ant1_all = main.getcol("ANTENNA1")
        ant2_all = main.getcol("ANTENNA2")
        keep = (ddids == info.data_desc_id) & (ant1_all != ant2_all)
        if time_range is not None:
            times_all = main.getcol("TIME")
            keep &= (times_all >= time_range[0]) & (times_all < time_range[1])
        nkeep = int(keep.sum())
        if nkeep == 0 and time_range is None:
            raise MeasurementSetError(path, "no cross-correlation rows")
        if (
            max(ant1_all.max(), ant2_all.max()) >= info.nant
            or min(ant1_all.min(), ant2_all.min()) < 0
        ):
            raise MeasurementSetError(
                path, f"ANTENNA1/ANTENNA2 refer to stations beyond the {info.nant} in ANTENNA"
            )
        first_chan, stop_chan = (0, info.nchan) if channels is None else channels
        if not 0 <= first_chan < stop_chan <= info.nchan:
            raise MeasurementSetError(
                path, f"channels {first_chan}..{stop_chan - 1} outside the {info.nchan} it has"
            )
        nchan = stop_chan - first_chan
        cells = None if nchan == info.nchan else slice(first_chan, stop_chan)
        out = Visibilities(
            uvw=np.empty((nkeep, 3)),
            time=np.empty(nkeep),
            antenna1=ant1_all[keep].astype(np.int32),
            antenna2=ant2_all[keep].astype(np.int32),
            frequency=info.frequency[first_chan:stop_chan],
            channel_width=info.channel_width[first_chan:stop_chan],
            vis=np.empty((nkeep, nchan), np.complex128),
            weight=np.empty((nkeep, nchan), np.float32),
            flag=np.empty((nkeep, nchan), bool),
            phase_centre=info.phase_centre,
            antenna_positions=info.antenna_positions,
            antenna_names=info.antenna_names,
            integration_time=info.integration_time,
            antenna_diameter=info.antenna_diameter,
        )
        spectrum = _has_data(main, "WEIGHT_SPECTRUM")
        has_flag_row = "FLAG_ROW" in main.colnames()
        nrow = main.nrows()
        filled = 0
        first = int(np.argmax(keep)) if nkeep else nrow
        end = nrow - int(np.argmax(keep[::-1])) if nkeep else nrow
        for start in range(first, end, block_rows):
            n = min(block_rows, end - start)
            sel = keep[start : start + n]
            m = int(sel.sum())
            if m == 0:
                continue
            data = _cells(main, column, start, n, cells)[sel]
            if data.shape[1] != nchan:
                raise MeasurementSetError(
                    path, f"{column} has {data.shape[1]} channels, SPECTRAL_WINDOW {info.nchan}"
                )
            flag = _cells(main, "FLAG", start, n, cells)[sel]
            if spectrum:
                weight = _cells(main, "WEIGHT_SPECTRUM", start, n, cells)[sel]
            else:
                weight = np.broadcast_to(
                    main.getcol("WEIGHT", startrow=start, nrow=n)[sel][:, None, :], data.shape
                )
            vis, w, f = _combine_stokes_i(data, flag, weight, pair)
            if has_flag_row:
                f = f | main.getcol("FLAG_ROW", startrow=start, nrow=n)[sel][:, None]
            f = f | ~(w > 0) | ~np.isfinite(vis)
            rows = slice(filled, filled + m)
            out.vis[rows] = np.where(f, 0.0, vis)
            out.weight[rows] = np.where(f, 0.0, w)
            out.flag[rows] = f
            out.uvw[rows] = main.getcol("UVW", startrow=start, nrow=n)[sel]
            out.time[rows] = main.getcol("TIME", startrow=start, nrow=n)[sel]
            filled += m
    out.check()
    return out
