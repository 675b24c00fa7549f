"""Write ICAL's results back into a MeasurementSet: MODEL_DATA and CORRECTED_DATA.

So that DP3, WSClean and CASA can carry on from ICAL's result, as they do from each other's:

- ``MODEL_DATA``: the model visibilities of a window's cross-correlations, Stokes I put in
  both parallel hands (XX = YY = I or RR = LL = I; cross-hands 0: an unpolarised model);
  autocorrelations get 0;
- ``CORRECTED_DATA``: the window's rows of ``DATA`` (every correlation, autocorrelations too)
  divided by the product of the gain terms ``g_p conj(g_q)`` (p = ANTENNA1), the convention
  of DP3's applycal: ``DATA_pq = g_p conj(g_q) TRUE_pq`` (the one gain correction,
  :func:`sdpbatch.science.solve.correct`).

A window is given as the run checked it (its :class:`MeasurementSetInfo`): its metadata are
not read again; only the rows' ids are, in the pass that writes them.

Both columns are written as the MeasurementSet v2 defines them (complex, one ``(nchan,
ncorr)`` cell per row, the shape of DATA), in tiled storage.  Rows of other windows keep the
column's earlier values; in a new column they get zeros (MODEL_DATA) or DATA
(CORRECTED_DATA), as CASA initialises them.

**Atomic per file**: the new values go into a new column under a temporary name; only when
it is complete is it swapped in (rename the old column aside, rename the new one, remove the
old one), so a failure before the swap leaves the MeasurementSet as it was (the temporary
column is removed), and :func:`recover_columns` (run at the start of every write) completes or
undoes a swap interrupted by a crash.  The cost is one extra column of disk until the swap.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from casacore import tables

from sdpbatch.io.ms_read import BLOCK_ROWS
from sdpbatch.io.ms_windows import MeasurementSetInfo, open_table, read_columns, row_blocks
from sdpbatch.science.solve import baseline_gains, correct, interval_index

TEMP_PREFIX = "SDPBATCH_NEW_"
OLD_PREFIX = "SDPBATCH_OLD_"
PARALLEL_HANDS = ("I", "XX", "YY", "RR", "LL")


@dataclass(frozen=True)
class GainTerm:
    """One solved gain term, as :func:`write_corrected_data` applies it to a window.

    Attributes
    ----------
    gains : (nint, nant, nfreq) complex, ``DATA ~= g_p conj(g_q) MODEL``.
    boundaries : (nint + 1,) TIME boundaries (MJD s) of the solution intervals, as
        :func:`sdpbatch.science.solve.solution_intervals` returns them.
    channel : (nchan,) int, the solution channel (index into nfreq) of each channel of the
        window (all 0 for a frequency-independent term).
    """

    gains: np.ndarray
    boundaries: np.ndarray
    channel: np.ndarray


def recover_columns(path: str | Path) -> list[str]:
    """Finish or undo an interrupted write-back; return what was done (for the log).

    A temporary column is removed (its write never completed); an old column set aside is
    put back if the new one never took its name, and removed otherwise.
    """
    done = []
    with open_table(Path(path), writable=True) as main:
        for name in main.colnames():
            if name.startswith(TEMP_PREFIX):
                main.removecols([name])
                done.append(f"removed the unfinished {name}")
            elif name.startswith(OLD_PREFIX):
                target = name.removeprefix(OLD_PREFIX)
                if target in main.colnames():
                    main.removecols([name])
                    done.append(f"removed the replaced {target}")
                else:
                    main.renamecol(name, target)
                    done.append(f"restored {target}")
    return done


def _add_like_data(main: tables.table, name: str) -> None:
    """Add column ``name`` shaped like DATA (complex), in its own tiled storage manager."""
    desc = main.getcoldesc("DATA")
    fixed = "shape" in desc
    column = {
        "valueType": "complex",
        "ndim": desc.get("ndim", 2),
        "option": desc.get("option", 0) if fixed else 0,
        "comment": "",
        "dataManagerType": "TiledColumnStMan" if fixed else "TiledShapeStMan",
    }
    if fixed:
        column["shape"] = desc["shape"]
        column["_c_order"] = desc.get("_c_order", True)
    cell = main.getcell("DATA", 0)
    nchan, ncorr = cell.shape
    tile = np.array([ncorr, nchan, max(16, 16384 // max(1, nchan * ncorr))], dtype=np.int32)
    dminfo = {
        "TYPE": column["dataManagerType"],
        "NAME": f"{name}_{uuid.uuid4().hex[:8]}",  # storage managers keep their names
        "SPEC": {"DEFAULTTILESHAPE": tile},
    }
    main.addcols(tables.makecoldesc(name, column), dminfo)


def _runs(key: np.ndarray) -> Iterator[tuple[int, int]]:
    """(start, stop) of the runs of equal values in ``key``."""
    edges = np.flatnonzero(np.diff(key)) + 1
    bounds = np.concatenate([[0], edges, [key.size]]).tolist()
    yield from zip(bounds[:-1], bounds[1:], strict=True)


@dataclass(frozen=True)
class _Rows:
    """The main table's rows as a write sees them: DATA_DESC_ID, in the window, and in the
    window and a cross-correlation (one bool a row)."""

    ddid: np.ndarray
    in_window: np.ndarray
    cross: np.ndarray


def _window_rows(main: tables.table, info: MeasurementSetInfo) -> _Rows:
    """The rows of window ``info`` (its field and data descriptions), read once, a block of
    rows at a time."""
    ddid, in_window, cross = [np.zeros(0, np.int64)], [np.zeros(0, bool)], [np.zeros(0, bool)]
    for start, n in row_blocks(main.nrows()):
        c = read_columns(main, ("DATA_DESC_ID", "FIELD_ID", "ANTENNA1", "ANTENNA2"), start, n)
        mine = np.isin(c["DATA_DESC_ID"], info.data_desc_ids) & (c["FIELD_ID"] == info.field_id)
        ddid.append(c["DATA_DESC_ID"].astype(np.int64))
        in_window.append(mine)
        cross.append(mine & (c["ANTENNA1"] != c["ANTENNA2"]))
    return _Rows(*(np.concatenate(x) for x in (ddid, in_window, cross)))


def _replace_column(
    info: MeasurementSetInfo,
    target: str,
    fill: Callable[[tables.table, _Rows], Callable[[int, int], np.ndarray]],
    other: str | None,
    block_rows: int,
) -> None:
    """Write ``target`` atomically: ``fill(main, rows)(start, stop)`` for the runs of rows in
    the window; the other rows from ``target`` if it exists, else from ``other`` (a column
    name), else zeros."""
    path = Path(info.path)
    recover_columns(path)
    with open_table(path, writable=True) as main:
        rows = _window_rows(main, info)
        writer = fill(main, rows)
        temp = TEMP_PREFIX + target
        _add_like_data(main, temp)
        try:
            source = target if target in main.colnames() else other
            _fill_column(main, temp, rows, writer, source, block_rows)
            main.flush()
        except BaseException:
            main.removecols([temp])
            raise
        if target in main.colnames():
            main.renamecol(target, OLD_PREFIX + target)
        main.renamecol(temp, target)
        main.flush()
    recover_columns(path)  # removes the old column


def _fill_column(main, name, rows: _Rows, fill, source, block_rows) -> None:
    """Write every row of column ``name`` block by block (see :func:`_replace_column`), in
    runs of rows of one window or one other data description (cells of one shape)."""
    nrow = main.nrows()
    key = 2 * rows.ddid + rows.in_window
    for block in range(0, nrow, block_rows):
        for start, end in _runs(key[block : min(nrow, block + block_rows)]):
            first, n = block + start, end - start
            if rows.in_window[first]:
                values = fill(first, first + n)
            elif source is None:
                values = np.zeros((n, *main.getcell("DATA", first).shape), np.complex64)
            else:
                values = main.getcol(source, first, n)
            main.putcol(name, values, first, n)


def write_model_data(
    info: MeasurementSetInfo, model_vis: np.ndarray, *, block_rows: int = BLOCK_ROWS
) -> Path:
    """Put a window's model visibilities into MODEL_DATA (atomically; see the module).

    Parameters
    ----------
    info : the window, as the run checked it (its metadata are not read again).
    model_vis : (nrow, nchan) complex Stokes I, one row per cross-correlation row of the
        window in table order (the rows :func:`sdpbatch.io.ms_read.read_measurement_set`
        returns for the window); any array indexable by row slices (a ``numpy.memmap`` keeps
        it out of memory).
    """
    hands = [k for k, c in enumerate(info.correlations) if c in PARALLEL_HANDS]

    def fill(main: tables.table, rows: _Rows) -> Callable[[int, int], np.ndarray]:
        expected = (int(rows.cross.sum()), info.nchan)
        if tuple(np.shape(model_vis)) != expected:
            raise ValueError(f"model_vis has shape {np.shape(model_vis)}, the window {expected}")
        order = np.cumsum(rows.cross) - 1  # row of model_vis for each cross-correlation row

        def values(start: int, stop: int) -> np.ndarray:
            out = np.zeros((stop - start, info.nchan, len(info.correlations)), np.complex64)
            is_cross = rows.cross[start:stop]
            picked = order[start:stop][is_cross]
            if picked.size:
                block = np.asarray(model_vis[picked[0] : picked[-1] + 1])[picked - picked[0]]
                for k in hands:
                    out[is_cross, :, k] = block
            return out

        return values

    _replace_column(info, "MODEL_DATA", fill, None, block_rows)
    return Path(info.path)


def write_corrected_data(
    info: MeasurementSetInfo,
    gains: Sequence[GainTerm],
    *,
    data_column: str = "DATA",
    block_rows: int = BLOCK_ROWS,
) -> Path:
    """Put a window's ``data_column`` corrected by ``gains`` into CORRECTED_DATA (atomically).

    ``info``: the window, as the run checked it (its metadata are not read again).  Every
    correlation of every row of the window (autocorrelations included) is corrected by the
    product over the terms of ``g_p conj(g_q)`` at the row's time and channel
    (:func:`sdpbatch.science.solve.correct`: a zero or non-finite gain product gives 0).
    FLAG is not changed.
    """
    for term in gains:
        if np.shape(term.channel) != (info.nchan,):
            raise ValueError(
                f"a gain term maps {np.shape(term.channel)} channels, not {info.nchan}"
            )

    def fill(main: tables.table, rows: _Rows) -> Callable[[int, int], np.ndarray]:
        def values(start: int, stop: int) -> np.ndarray:
            data = main.getcol(data_column, start, stop - start)
            c = read_columns(main, ("TIME", "ANTENNA1", "ANTENNA2"), start, stop - start)
            product = np.ones(data.shape[:2], np.complex128)
            for term in gains:
                product *= baseline_gains(
                    term.gains,
                    interval=interval_index(c["TIME"], term.boundaries),
                    antenna1=c["ANTENNA1"],
                    antenna2=c["ANTENNA2"],
                    channel=np.asarray(term.channel),
                )
            return correct(data, product[:, :, None]).astype(np.complex64)

        return values

    _replace_column(info, "CORRECTED_DATA", fill, data_column, block_rows)
    return Path(info.path)
