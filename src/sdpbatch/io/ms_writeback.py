"""Write ICAL's results back into a MeasurementSet: MODEL_DATA and CORRECTED_DATA.

So that DP3, WSClean and CASA can carry on from ICAL's result, as they do from each other's:

- ``MODEL_DATA``: the model visibilities of a window's cross-correlations, Stokes I put in
  both parallel hands (XX = YY = I or RR = LL = I; cross-hands 0: an unpolarised model);
  autocorrelations get 0;
- ``CORRECTED_DATA``: the window's rows of ``DATA`` (every correlation, autocorrelations too)
  divided by the product of the gain terms ``g_p conj(g_q)`` (p = ANTENNA1), the convention
  of DP3's applycal: ``DATA_pq = g_p conj(g_q) TRUE_pq``.

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

from sdpbatch.io.ms_read import BLOCK_ROWS, window_rows
from sdpbatch.io.ms_windows import (
    MeasurementSetInfo,
    open_table,
    read_measurement_set_metadata,
)
from sdpbatch.science.solve import baseline_gains, interval_index

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


def _replace_column(
    path: Path,
    target: str,
    in_window: np.ndarray,
    fill: Callable[[tables.table, int, int], np.ndarray],
    other: str | None,
    block_rows: int,
) -> None:
    """Write ``target`` atomically: ``fill(main, start, stop)`` for the runs of rows in the
    window; the other rows from ``target`` if it exists, else from ``other`` (a column name),
    else zeros."""
    recover_columns(path)
    with open_table(path, writable=True) as main:
        temp = TEMP_PREFIX + target
        _add_like_data(main, temp)
        try:
            source = target if target in main.colnames() else other
            _fill_column(main, temp, in_window, fill, source, block_rows)
            main.flush()
        except BaseException:
            main.removecols([temp])
            raise
        if target in main.colnames():
            main.renamecol(target, OLD_PREFIX + target)
        main.renamecol(temp, target)
        main.flush()
    recover_columns(path)  # removes the old column


def _fill_column(main, name, in_window, fill, source, block_rows) -> None:
    """Write every row of column ``name`` block by block (see :func:`_replace_column`), in
    runs of rows of one window or one other data description (cells of one shape)."""
    nrow = main.nrows()
    key = 2 * main.getcol("DATA_DESC_ID").astype(np.int64) + in_window
    for block in range(0, nrow, block_rows):
        for start, end in _runs(key[block : min(nrow, block + block_rows)]):
            first, n = block + start, end - start
            if in_window[first]:
                values = fill(main, first, first + n)
            elif source is None:
                values = np.zeros((n, *main.getcell("DATA", first).shape), np.complex64)
            else:
                values = main.getcol(source, first, n)
            main.putcol(name, values, first, n)


def _window_and_rows(path, field, spw) -> tuple[MeasurementSetInfo, np.ndarray, np.ndarray]:
    info = read_measurement_set_metadata(path, field=field, spw=spw)
    return info, window_rows(path, info), window_rows(path, info, autocorrelations=True)


def write_model_data(
    path: str | Path,
    model_vis: np.ndarray,
    *,
    field: int | str | None = None,
    spw: int | None = None,
    block_rows: int = BLOCK_ROWS,
) -> Path:
    """Put a window's model visibilities into MODEL_DATA (atomically; see the module).

    Parameters
    ----------
    path : the MeasurementSet.
    model_vis : (nrow, nchan) complex Stokes I, one row per cross-correlation row of the
        window in table order (the rows :func:`sdpbatch.io.ms_read.read_measurement_set`
        returns for the same ``field``/``spw``); any array indexable by row slices (a
        ``numpy.memmap`` keeps it out of memory).
    field, spw : the window (see :func:`sdpbatch.io.ms_read.read_measurement_set_windows`).
    """
    path = Path(path)
    info, cross, rows = _window_and_rows(path, field, spw)
    expected = (int(cross.sum()), info.nchan)
    if tuple(np.shape(model_vis)) != expected:
        raise ValueError(f"model_vis has shape {np.shape(model_vis)}, the window {expected}")
    hands = [k for k, c in enumerate(info.correlations) if c in PARALLEL_HANDS]
    order = np.cumsum(cross) - 1  # row of model_vis for each cross-correlation row

    def fill(main: tables.table, start: int, stop: int) -> np.ndarray:
        out = np.zeros((stop - start, info.nchan, len(info.correlations)), np.complex64)
        is_cross = cross[start:stop]
        picked = order[start:stop][is_cross]
        if picked.size:
            block = np.asarray(model_vis[picked[0] : picked[-1] + 1])[picked - picked[0]]
            for k in hands:
                out[is_cross, :, k] = block
        return out

    _replace_column(path, "MODEL_DATA", rows, fill, None, block_rows)
    return path


def write_corrected_data(
    path: str | Path,
    gains: Sequence[GainTerm],
    *,
    field: int | str | None = None,
    spw: int | None = None,
    data_column: str = "DATA",
    block_rows: int = BLOCK_ROWS,
) -> Path:
    """Put a window's ``data_column`` corrected by ``gains`` into CORRECTED_DATA (atomically).

    Every correlation of every row of the window (autocorrelations included) is divided by
    the product over the terms of ``g_p conj(g_q)`` at the row's time and channel; a zero or
    non-finite gain product gives 0.  FLAG is not changed.
    """
    path = Path(path)
    info, _, rows = _window_and_rows(path, field, spw)
    for term in gains:
        if np.shape(term.channel) != (info.nchan,):
            raise ValueError(
                f"a gain term maps {np.shape(term.channel)} channels, not {info.nchan}"
            )

    def fill(main: tables.table, start: int, stop: int) -> np.ndarray:
        data = main.getcol(data_column, start, stop - start)
        times = main.getcol("TIME", start, stop - start)
        a1 = main.getcol("ANTENNA1", start, stop - start)
        a2 = main.getcol("ANTENNA2", start, stop - start)
        product = np.ones(data.shape[:2], np.complex128)
        for term in gains:
            product *= baseline_gains(
                term.gains,
                interval=interval_index(times, term.boundaries),
                antenna1=a1,
                antenna2=a2,
                channel=np.asarray(term.channel),
            )
        inverse = np.zeros(product.shape, np.complex64)
        np.divide(1.0, product, out=inverse, where=np.isfinite(product) & (product != 0))
        return data * inverse[:, :, None]

    _replace_column(path, "CORRECTED_DATA", rows, fill, data_column, block_rows)
    return path
