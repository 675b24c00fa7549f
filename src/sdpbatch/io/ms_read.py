"""Read Stokes I visibilities from any MeasurementSet v2 (ours, or one a user brings).

A MeasurementSet is read one **window** (field, spectral window) at a time; the windows and
their metadata come from :mod:`sdpbatch.io.ms_windows` (whose names this module also offers:
it is the one interface of MeasurementSet reading).

Correlations that give Stokes I: ``I``; linear ``XX, YY`` (with or without ``XY, YX``);
circular ``RR, LL`` (with or without ``RL, LR``).  I = (XX + YY)/2 (or (RR + LL)/2) with the
variance ``(var_XX + var_YY)/4``, i.e. weight ``4 w_XX w_YY / (w_XX + w_YY)``.  A sample is
flagged if either parallel-hand correlation is flagged, if its row is flagged (FLAG_ROW), if its
weight is not positive or its value not finite; flagged samples hold 0 with weight 0, so a fully
flagged station or channel leaves no NaN behind.  Weights come from WEIGHT_SPECTRUM where that
column holds data of the right shape, else from WEIGHT broadcast over the channels.
Autocorrelations (ANTENNA1 == ANTENNA2) are dropped.  Channel widths come from CHAN_WIDTH
(absolute values).  Anything else raises :class:`MeasurementSetError` naming the file, and the
column, field or spectral window at fault.

The main table is read in blocks of rows so that the correlation cube (4x the Stokes I size,
plus flags and weights) is never in memory all at once.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from casacore import tables

from sdpbatch.io.ms_windows import (
    DATA_COLUMNS,
    MeasurementSetError,
    MeasurementSetInfo,
    open_table,
    read_columns,
    read_measurement_set_metadata,
    read_measurement_set_windows,
    row_blocks,
    stokes_i_pair,
)
from sdpbatch.science.visibility import Visibilities

__all__ = [
    "BLOCK_ROWS",
    "DATA_COLUMNS",
    "MeasurementSetError",
    "MeasurementSetInfo",
    "read_measurement_set",
    "read_measurement_set_metadata",
    "read_measurement_set_times",
    "read_measurement_set_windows",
    "window_rows",
    "window_times",
]

BLOCK_ROWS = 65536


def window_rows(
    path: str | Path,
    info: MeasurementSetInfo,
    *,
    time_range: tuple[float, float] | None = None,
    autocorrelations: bool = False,
    rows: tuple[int, int] | None = None,
) -> np.ndarray:
    """Boolean mask (main table rows) of the window's rows: its cross-correlations, or all its
    rows with ``autocorrelations``; only those with ``start <= TIME < end`` if ``time_range``,
    and only among rows ``[first, stop)`` if ``rows`` (nothing outside them is read).
    The columns are read a block of rows at a time (:func:`row_blocks`)."""
    with open_table(Path(path)) as main:
        keep = np.zeros(main.nrows(), dtype=bool)
        first, stop = (0, keep.size) if rows is None else rows
        for start, n in row_blocks(stop - first, first=first):
            mine = np.ones(n, dtype=bool)
            if time_range is not None:  # blocks of other times: only TIME is read
                time = main.getcol("TIME", start, n)
                mine = (time >= time_range[0]) & (time < time_range[1])
                if not mine.any():
                    continue
            c = read_columns(main, ("DATA_DESC_ID", "FIELD_ID", "ANTENNA1", "ANTENNA2"), start, n)
            mine &= np.isin(c["DATA_DESC_ID"], info.data_desc_ids)
            mine &= c["FIELD_ID"] == info.field_id
            if not autocorrelations:
                mine &= c["ANTENNA1"] != c["ANTENNA2"]
            keep[start : start + n] = mine
    return keep


def read_measurement_set_times(
    path: str | Path, *, field: int | str | None = None, spw: int | None = None
) -> np.ndarray:
    """TIME (MJD s) of the cross-correlation rows :func:`read_measurement_set` would read.

    Cheap (a few small columns): it lets a reader plan ``time_range`` chunks of bounded size.
    """
    path = Path(path)
    return window_times(path, read_measurement_set_metadata(path, field=field, spw=spw))[1]


def window_times(path: str | Path, info: MeasurementSetInfo) -> tuple[np.ndarray, np.ndarray]:
    """(rows, TIME): main-table row numbers and TIME (MJD s) of the window's cross-correlation
    rows, in table order; a plan takes the row span of a time range from them."""
    keep = window_rows(path, info)
    times = []
    with open_table(Path(path)) as main:
        for start, n in row_blocks(keep.size):
            if keep[start : start + n].any():
                times.append(main.getcol("TIME", start, n)[keep[start : start + n]])
    return np.flatnonzero(keep), np.concatenate(times) if times else np.zeros(0)


def _combine_stokes_i(
    data: np.ndarray, flag: np.ndarray, weight: np.ndarray, pair: tuple[int, ...]
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Stokes I, its weight and flag from (nrow, nchan, ncorr) blocks."""
    if len(pair) == 1:
        (k,) = pair
        return data[..., k].astype(np.complex128), weight[..., k], flag[..., k]
    a, b = pair
    with np.errstate(invalid="ignore", over="ignore"):  # non-finite samples are flagged later
        vis = 0.5 * (data[..., a].astype(np.complex128) + data[..., b])
    wa = weight[..., a].astype(np.float64)
    wb = weight[..., b].astype(np.float64)
    total = wa + wb
    w = np.divide(4.0 * wa * wb, total, out=np.zeros_like(total), where=total > 0)
    return vis, w, flag[..., a] | flag[..., b]


def _weight_spectrum_usable(main: tables.table, row: int, shape: tuple[int, ...]) -> bool:
    """WEIGHT_SPECTRUM exists, holds a value at ``row`` and has the shape of the data."""
    return (
        "WEIGHT_SPECTRUM" in main.colnames()
        and bool(main.iscelldefined("WEIGHT_SPECTRUM", row))
        and tuple(main.getcell("WEIGHT_SPECTRUM", row).shape) == shape
    )


def read_measurement_set(
    path: str | Path,
    *,
    data_column: str = "DATA",
    field: int | str | None = None,
    spw: int | None = None,
    time_range: tuple[float, float] | None = None,
    channels: tuple[int, int] | None = None,
    rows: tuple[int, int] | None = None,
    info: MeasurementSetInfo | None = None,
    block_rows: int = BLOCK_ROWS,
) -> Visibilities:
    """Read the Stokes I cross-correlations of one window (see the module docstring).

    Parameters
    ----------
    path : the MeasurementSet directory.
    data_column : DATA, CORRECTED_DATA or MODEL_DATA.
    field, spw : the window, needed when the rows use several (see
        :func:`read_measurement_set_windows`).
    time_range : (start, end) MJD s: read only the rows with ``start <= TIME < end`` (in table
        order; the rows need not be sorted by time, but only the blocks holding them are read).
    channels : (start, stop): read only these channels of the window (a slice of the cells:
        nothing else is read from disk).
    rows : (first, stop): main-table rows holding every row wanted (a plan's span of a time
        range, from :func:`window_times`): no other row is read, not even its TIME.
    info : the window as :func:`read_measurement_set_metadata` described it (``field`` and
        ``spw`` are then ignored): the file is not checked again, as a plan's readers do.
    block_rows : rows read per block (bounds the memory of the correlation cube).
    """
    path = Path(path)
    if info is None:
        info = read_measurement_set_metadata(path, data_column=data_column, field=field, spw=spw)
    elif data_column not in info.columns:
        present = ", ".join(info.columns) or "none"
        raise MeasurementSetError(
            path, f"data column {data_column} does not exist; present: {present}"
        )
    first, stop = (0, info.nchan) if channels is None else channels
    if not 0 <= first < stop <= info.nchan:
        raise MeasurementSetError(
            path, f"channels {first}..{stop - 1} outside the {info.nchan} of the window"
        )
    cells = None if (first, stop) == (0, info.nchan) else slice(first, stop)
    pair = stokes_i_pair(path, info.correlations)  # from the checked metadata, not read again
    keep = window_rows(path, info, time_range=time_range, rows=rows)
    nkeep = int(keep.sum())
    if nkeep == 0 and time_range is None and rows is None:
        raise MeasurementSetError(path, "no cross-correlation rows")
    out = _empty(info, nkeep, slice(first, stop))
    with open_table(path) as main:
        _read_blocks(path, main, out, keep, pair, data_column, block_rows, cells, info.nchan)
    _check_antennas(path, out, info.nant)
    out.check()
    return out


def _empty(info: MeasurementSetInfo, nrow: int, channels: slice) -> Visibilities:
    nchan = channels.stop - channels.start
    return Visibilities(
        uvw=np.empty((nrow, 3)),
        time=np.empty(nrow),
        antenna1=np.empty(nrow, np.int32),
        antenna2=np.empty(nrow, np.int32),
        frequency=info.frequency[channels],
        channel_width=info.channel_width[channels],
        vis=np.empty((nrow, nchan), np.complex128),
        weight=np.empty((nrow, nchan), np.float32),
        flag=np.empty((nrow, nchan), bool),
        phase_centre=info.phase_centre,
        antenna_positions=info.antenna_positions,
        antenna_names=info.antenna_names,
        integration_time=info.integration_time,
        antenna_diameter=info.antenna_diameter,
    )


def _check_antennas(path: Path, vis: Visibilities, nant: int) -> None:
    """The stations of the rows read are in the ANTENNA table."""
    for column, values in (("ANTENNA1", vis.antenna1), ("ANTENNA2", vis.antenna2)):
        if values.size and (values.max() >= nant or values.min() < 0):
            raise MeasurementSetError(
                path, f"{column} refers to stations beyond the {nant} in ANTENNA"
            )


def _cells(main: tables.table, column: str, start: int, n: int, cells: slice | None) -> np.ndarray:
    """(n, nchan, ncorr) cells of ``column`` from row ``start``: all channels (``cells`` None)
    or the slice ``cells`` only (nothing else is read from disk)."""
    if cells is None:
        return main.getcol(column, startrow=start, nrow=n)
    ncorr = main.getcell(column, start).shape[1]
    return main.getcolslice(
        column, [cells.start, 0], [cells.stop - 1, ncorr - 1], startrow=start, nrow=n
    )


def _read_blocks(path, main, out, keep, pair, column, block_rows, cells, nchan_window) -> None:
    """Fill ``out`` from the rows of ``keep``, block by block (channels ``cells`` of each)."""
    has_flag_row = "FLAG_ROW" in main.colnames()
    rows = np.flatnonzero(keep)
    if rows.size == 0:
        return
    spectrum = None
    filled = 0
    end = int(rows[-1]) + 1  # no row after the last one kept is read
    for start in range(int(rows[0]), end, block_rows):
        n = min(block_rows, end - start)
        sel = keep[start : start + n]
        m = int(sel.sum())
        if m == 0:
            continue
        first = start + int(np.argmax(sel))
        full = main.getcell(column, first).shape
        if full[0] != nchan_window:
            raise MeasurementSetError(
                path, f"{column} has {full[0]} channels, SPECTRAL_WINDOW {nchan_window}"
            )
        data = _cells(main, column, start, n, cells)[sel]
        if spectrum is None:
            spectrum = _weight_spectrum_usable(main, first, full)
        flag = _cells(main, "FLAG", start, n, cells)[sel]
        if spectrum:
            weight = _cells(main, "WEIGHT_SPECTRUM", start, n, cells)[sel]
        else:
            weight = main.getcol("WEIGHT", startrow=start, nrow=n)[sel][:, None, :]
            weight = np.broadcast_to(weight, data.shape)
        vis, w, f = _combine_stokes_i(data, flag, weight, pair)
        if has_flag_row:
            f = f | main.getcol("FLAG_ROW", startrow=start, nrow=n)[sel][:, None]
        f = f | ~(w > 0) | ~np.isfinite(vis)
        block = slice(filled, filled + m)
        out.vis[block] = np.where(f, 0.0, vis)
        out.weight[block] = np.where(f, 0.0, w)
        out.flag[block] = f
        out.uvw[block] = main.getcol("UVW", startrow=start, nrow=n)[sel]
        out.time[block] = main.getcol("TIME", startrow=start, nrow=n)[sel]
        out.antenna1[block] = main.getcol("ANTENNA1", startrow=start, nrow=n)[sel]
        out.antenna2[block] = main.getcol("ANTENNA2", startrow=start, nrow=n)[sel]
        filled += m
