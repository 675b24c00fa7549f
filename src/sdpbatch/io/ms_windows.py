"""What a MeasurementSet v2 holds, read without its visibilities: its windows.

A MeasurementSet may hold several fields and spectral windows; it is read one **window** at a
time, a window being one (field, spectral window) pair that the main table's rows use.
:func:`read_measurement_set_windows` lists them (optionally narrowed by ``field``/``spw``);
:func:`read_measurement_set_metadata` takes one, and refuses an ambiguous choice with a message
that lists the choices.  ``field`` is a FIELD row number or a FIELD NAME, ``spw`` a
SPECTRAL_WINDOW row number.  Errors are :class:`MeasurementSetError`, naming the file and the
column, field or spectral window at fault.  Reading the visibilities: :mod:`sdpbatch.io.ms_read`.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from casacore import tables

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
    """One window (field, spectral window) of a MeasurementSet, read without visibilities.

    Attributes
    ----------
    path : the MeasurementSet.
    nrow : rows of the window (autocorrelations included).
    field_id, spw_id : the FIELD and SPECTRAL_WINDOW rows of the window.
    data_desc_ids : the DATA_DESCRIPTION rows its rows use (several only if they repeat the
        same spectral window and polarisation setup).
    polarization_id : the POLARIZATION row of its correlations.
    field_name : FIELD NAME ("" if absent).
    phase_centre : (ra, dec) radians, J2000/ICRS.
    frequency : (nchan,) Hz, channel centres.
    channel_width : (nchan,) Hz.
    correlations : correlation names, e.g. ["XX", "XY", "YX", "YY"].
    antenna_names : station names, length nant.
    antenna_positions : (nant, 3) ITRF metres.
    antenna_diameter : metres (median of the positive DISH_DIAMETER values; 0 if none).
    time_range : (first, last) TIME of the window, MJD seconds.
    integration_time : seconds (median INTERVAL).
    columns : visibility columns present among DATA, CORRECTED_DATA, MODEL_DATA.
    """

    path: Path
    nrow: int
    field_id: int
    spw_id: int
    data_desc_ids: tuple[int, ...]
    polarization_id: int
    field_name: str
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
def open_table(
    path: Path, name: str | None = None, *, writable: bool = False
) -> Iterator[tables.table]:
    """Open the main table or a subtable: read-only without read locks, or ``writable``."""
    target = path if name is None else path / name
    what = "main table" if name is None else f"{name} subtable"
    if not target.is_dir():
        raise MeasurementSetError(path, f"no {what} ({target} does not exist)")
    locks = {"readonly": False} if writable else {"readonly": True, "lockoptions": "autonoread"}
    try:
        tab = tables.table(str(target), ack=False, **locks)
    except RuntimeError as err:
        purpose = " for writing" if writable else ""
        raise MeasurementSetError(path, f"cannot open the {what}{purpose}: {err}") from err
    try:
        yield tab
    finally:
        tab.close()


def _require_columns(path: Path, tab: tables.table, names: tuple[str, ...], what: str) -> None:
    missing = [c for c in names if c not in tab.colnames()]
    if missing:
        raise MeasurementSetError(path, f"{what} has no column(s) {', '.join(missing)}")


def _subtable(path: Path, name: str) -> dict[str, list]:
    """The required columns of a small subtable, as lists of cells."""
    with open_table(path, name) as tab:
        _require_columns(path, tab, REQUIRED_SUBTABLES[name], name)
        extra = [c for c in ("NAME",) if c in tab.colnames() and c not in REQUIRED_SUBTABLES[name]]
        return {
            c: [tab.getcell(c, r) for r in range(tab.nrows())]
            for c in (*REQUIRED_SUBTABLES[name], *extra)
        }


def _check_data_column(path: Path, column: str) -> None:
    if column not in DATA_COLUMNS:
        raise MeasurementSetError(
            path,
            f"data column '{column}' is not a visibility column; allowed: "
            f"{', '.join(DATA_COLUMNS)}",
        )


COLUMN_ROWS = 1_000_000
"""Rows of the main table whose selection columns (ids, times) are read at once: what is kept
of a long observation's rows is a few numbers per window, or a byte per row for a mask."""


def row_blocks(nrow: int, *, first: int = 0) -> Iterator[tuple[int, int]]:
    """(first row, number of rows) of blocks of at most :data:`COLUMN_ROWS` rows covering
    rows ``[first, first + nrow)``."""
    for start in range(first, first + nrow, COLUMN_ROWS):
        yield start, min(COLUMN_ROWS, first + nrow - start)


def read_columns(main: tables.table, names: tuple[str, ...], start: int, n: int) -> dict:
    """{name: values} of ``n`` rows from ``start``; an optional column that is missing
    (FIELD_ID, INTERVAL) reads as zeros."""
    present = set(main.colnames())
    return {
        name: main.getcol(name, start, n) if name in present else np.zeros(n, np.int32)
        for name in names
    }


@dataclass
class _Use:
    """How the rows of one (FIELD_ID, DATA_DESC_ID) pair are spread: their count, first and
    last TIME, and the counts of their positive INTERVAL values."""

    nrow: int = 0
    first: float = np.inf
    last: float = -np.inf
    intervals: dict = dataclasses.field(default_factory=dict)

    def add(self, time: np.ndarray, interval: np.ndarray) -> None:
        self.nrow += time.size
        self.first, self.last = min(self.first, time.min()), max(self.last, time.max())
        values, counts = np.unique(interval[interval > 0], return_counts=True)
        for v, c in zip(values.tolist(), counts.tolist(), strict=True):
            self.intervals[v] = self.intervals.get(v, 0) + c


@dataclass(frozen=True)
class _Rows:
    """What the main table's rows use, read once block by block: per (field, data description)
    pair, a :class:`_Use`."""

    uses: dict[tuple[int, int], _Use]
    columns: list[str]

    @property
    def fields(self) -> list[int]:
        return sorted({f for f, _ in self.uses})

    @property
    def ddids(self) -> list[int]:
        return sorted({d for _, d in self.uses})


def _read_rows(path: Path, data_column: str) -> _Rows:
    with open_table(path) as main:
        _require_columns(path, main, REQUIRED_MAIN, "main table")
        if data_column not in main.colnames():
            present = [c for c in DATA_COLUMNS if c in main.colnames()]
            raise MeasurementSetError(
                path,
                f"data column {data_column} does not exist; present: "
                f"{', '.join(present) or 'none'}",
            )
        if main.nrows() == 0:
            raise MeasurementSetError(path, "main table has no rows")
        names = main.colnames()
        uses: dict[tuple[int, int], _Use] = {}
        for start, n in row_blocks(main.nrows()):
            c = read_columns(main, ("FIELD_ID", "DATA_DESC_ID", "TIME", "INTERVAL"), start, n)
            key = (c["FIELD_ID"].astype(np.int64) << 32) + c["DATA_DESC_ID"]
            keys, which = np.unique(key, return_inverse=True)
            for k, value in enumerate(keys.tolist()):
                mine = which == k
                use = uses.setdefault((value >> 32, value & 0xFFFFFFFF), _Use())
                use.add(c["TIME"][mine], c["INTERVAL"][mine])
        return _Rows(uses, [c for c in DATA_COLUMNS if c in names])


def _median(counts: dict) -> float:
    """The median of values given as {value: count} (0 without any), as ``np.median``."""
    if not counts:
        return 0.0
    values = np.array(sorted(counts))
    total = np.cumsum([counts[v] for v in values])
    n = int(total[-1])
    lower = values[np.searchsorted(total, (n - 1) // 2, side="right")]
    upper = values[np.searchsorted(total, n // 2, side="right")]
    return float(0.5 * (lower + upper))


def _field_choices(path: Path, rows: _Rows, names: list[str], field: int | str | None) -> list[int]:
    used = rows.fields
    if field is None:
        return used
    if isinstance(field, str) and field in names:
        wanted = [i for i, n in enumerate(names) if n == field]
    elif isinstance(field, int | np.integer) or (isinstance(field, str) and field.isdigit()):
        wanted = [int(field)]
    else:
        wanted = []
    chosen = [f for f in used if f in wanted]
    if not chosen:
        listed = ", ".join(f"{f} ({names[f]})" if f < len(names) else str(f) for f in used)
        raise MeasurementSetError(
            path, f"field {field!r} does not exist; the rows use fields {listed}"
        )
    return chosen


def _spw_choices(path: Path, rows: _Rows, dd: dict[str, list], spw: int | None) -> list[int]:
    ddids = rows.ddids
    if max(ddids) >= len(dd["SPECTRAL_WINDOW_ID"]) or min(ddids) < 0:
        raise MeasurementSetError(path, f"DATA_DESC_ID {max(ddids)} has no row in DATA_DESCRIPTION")
    spws = sorted({int(dd["SPECTRAL_WINDOW_ID"][d]) for d in ddids})
    if spw is None:
        return spws
    if int(spw) not in spws:
        raise MeasurementSetError(
            path, f"spw {spw} does not exist; the rows use spectral windows {spws}"
        )
    return [int(spw)]


def read_measurement_set_windows(
    path: str | Path,
    *,
    data_column: str = "DATA",
    field: int | str | None = None,
    spw: int | None = None,
) -> list[MeasurementSetInfo]:
    """The windows (field, spectral window) the rows of a MeasurementSet use, each described.

    ``field`` and ``spw`` narrow the list; a field or spectral window that no row uses raises
    :class:`MeasurementSetError` naming it and listing those that exist.  Also raises for
    anything :func:`read_measurement_set` would reject (missing columns or subtables,
    correlations without Stokes I, a missing ``data_column``).
    """
    path = Path(path)
    _check_data_column(path, data_column)
    rows = _read_rows(path, data_column)
    fields = _subtable(path, "FIELD")
    dd = _subtable(path, "DATA_DESCRIPTION")
    field_names = [str(n) for n in fields.get("NAME", [""] * len(fields["PHASE_DIR"]))]
    field_ids = _field_choices(path, rows, field_names, field)
    spw_ids = _spw_choices(path, rows, dd, spw)
    common = _common(path)
    windows = []
    for f in field_ids:
        for s in spw_ids:
            ddids = [d for d in rows.ddids if dd["SPECTRAL_WINDOW_ID"][d] == s]
            used = [rows.uses[(f, d)] for d in ddids if (f, d) in rows.uses]
            if used:
                windows.append(_window(path, rows, used, f, s, ddids, fields, dd, common))
    if not windows:
        raise MeasurementSetError(path, f"no rows of field {field!r} in spectral window {spw!r}")
    return windows


def _common(path: Path) -> dict:
    """What all windows share: stations and their diameter."""
    ant = _subtable(path, "ANTENNA")
    diameters = np.asarray(ant["DISH_DIAMETER"], dtype=np.float64)
    positive = diameters[diameters > 0]
    return dict(
        antenna_names=[str(n) for n in ant["NAME"]],
        antenna_positions=np.asarray(ant["POSITION"], dtype=np.float64).reshape(-1, 3),
        antenna_diameter=float(np.median(positive)) if positive.size else 0.0,
    )


def _window(path, rows, used, field_id, spw_id, ddids, fields, dd, common) -> MeasurementSetInfo:
    """The window of ``field_id`` and ``spw_id`` whose rows are ``used`` (their :class:`_Use`
    per data description)."""
    pols = sorted({int(dd["POLARIZATION_ID"][d]) for d in ddids})
    if len(pols) != 1:
        raise MeasurementSetError(
            path,
            f"spectral window {spw_id} is used with {len(pols)} polarisation setups "
            f"(POLARIZATION {pols}); only one per spectral window is supported",
        )
    pol = pols[0]
    with open_table(path, "POLARIZATION") as tab:
        _require_columns(path, tab, REQUIRED_SUBTABLES["POLARIZATION"], "POLARIZATION")
        if pol >= tab.nrows():
            raise MeasurementSetError(path, f"POLARIZATION_ID {pol} has no row in POLARIZATION")
        correlations, _ = stokes_i_plan(path, list(tab.getcell("CORR_TYPE", pol)))
    frequency, width = _channels(path, spw_id)
    intervals: dict = {}
    for use in used:
        for value, count in use.intervals.items():
            intervals[value] = intervals.get(value, 0) + count
    names = fields.get("NAME")
    return MeasurementSetInfo(
        path=path,
        nrow=sum(use.nrow for use in used),
        field_id=int(field_id),
        spw_id=int(spw_id),
        data_desc_ids=tuple(ddids),
        polarization_id=pol,
        field_name=str(names[field_id]) if names and field_id < len(names) else "",
        phase_centre=_phase_centre(path, field_id),
        frequency=frequency,
        channel_width=width,
        correlations=correlations,
        time_range=(float(min(u.first for u in used)), float(max(u.last for u in used))),
        integration_time=_median(intervals),
        columns=list(rows.columns),
        **common,
    )


def _channels(path: Path, spw_id: int) -> tuple[np.ndarray, np.ndarray]:
    with open_table(path, "SPECTRAL_WINDOW") as tab:
        _require_columns(path, tab, REQUIRED_SUBTABLES["SPECTRAL_WINDOW"], "SPECTRAL_WINDOW")
        if spw_id >= tab.nrows():
            raise MeasurementSetError(path, f"spectral window {spw_id} has no SPECTRAL_WINDOW row")
        frequency = np.asarray(tab.getcell("CHAN_FREQ", spw_id), dtype=np.float64).ravel()
        width = np.abs(np.asarray(tab.getcell("CHAN_WIDTH", spw_id), dtype=np.float64)).ravel()
    if width.shape != frequency.shape or not np.all(width > 0):
        raise MeasurementSetError(
            path, f"SPECTRAL_WINDOW {spw_id}: CHAN_WIDTH must give one positive width per channel"
        )
    return frequency, width


def _phase_centre(path: Path, field_id: int) -> tuple[float, float]:
    with open_table(path, "FIELD") as tab:
        if field_id >= tab.nrows():
            raise MeasurementSetError(path, f"FIELD_ID {field_id} has no row in FIELD")
        keywords = tab.getcolkeywords("PHASE_DIR")
        frame = keywords["MEASINFO"].get("Ref", "J2000") if "MEASINFO" in keywords else "J2000"
        if frame not in ACCEPTED_FRAMES:
            raise MeasurementSetError(
                path, f"FIELD PHASE_DIR frame is {frame}; supported: {', '.join(ACCEPTED_FRAMES)}"
            )
        direction = np.asarray(tab.getcell("PHASE_DIR", field_id), dtype=np.float64).reshape(-1, 2)
    return float(direction[0, 0]) % (2 * np.pi), float(direction[0, 1])


def stokes_i_plan(path: Path, corr_types: list[int]) -> tuple[list[str], tuple[int, ...]]:
    """Names of the correlations and the indices that make Stokes I."""
    names = [STOKES_NAMES.get(int(c), f"type {int(c)}") for c in corr_types]
    return names, stokes_i_pair(path, names)


def stokes_i_pair(path: Path, names: list[str]) -> tuple[int, ...]:
    """The indices of the correlations ``names`` (a window's ``correlations``) that make
    Stokes I."""
    for pair in (("I",), ("XX", "YY"), ("RR", "LL")):
        if all(p in names for p in pair):
            return tuple(names.index(p) for p in pair)
    raise MeasurementSetError(
        path,
        f"correlations {names} do not give Stokes I; supported: I, XX+YY (linear), RR+LL "
        "(circular)",
    )


def read_measurement_set_metadata(
    path: str | Path,
    *,
    data_column: str = "DATA",
    field: int | str | None = None,
    spw: int | None = None,
) -> MeasurementSetInfo:
    """Check a MeasurementSet and describe one window cheaply (no visibility column is read).

    Raises :class:`MeasurementSetError` for anything :func:`read_measurement_set` would reject,
    and if the rows use several fields or spectral windows and ``field``/``spw`` do not choose
    one (the message lists them).
    """
    windows = read_measurement_set_windows(path, data_column=data_column, field=field, spw=spw)
    if len(windows) > 1:
        pairs = ", ".join(f"(field {w.field_id}, spw {w.spw_id})" for w in windows)
        raise MeasurementSetError(
            path,
            f"holds {len(windows)} windows {pairs}; choose one with field and spw "
            "(each is read as a window of its own)",
        )
    return windows[0]
