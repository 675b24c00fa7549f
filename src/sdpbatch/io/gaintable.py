"""Station gain tables as HDF5 files in the H5parm layout that DP3 and LoSoTo read and write.

Layout (one solution set ``sol000``; term k of a calibration, e.g. T, G, B, in soltabs
``phase00k`` and ``amplitude00k``)::

    /sol000                          group; attributes h5parm_version = "1.0", TITLE
    /sol000/antenna                  table (name S16, position float64[3]): ITRF metres
    /sol000/source                   table (name S128, dir float64[2]): ra, dec radians
    /sol000/phase00k                 soltab group; TITLE = "phase", parmdb_type, TERM = "T"...
    /sol000/amplitude00k             soltab group; TITLE = "amplitude", likewise
        val     float64 (ntime, nfreq, nant, ndir, npol), attribute AXES = "time,freq,ant,dir,pol"
        weight  float32, same shape and AXES: 1 valid, 0 flagged
        time    float64 (ntime,)  MJD seconds (UTC), centre of the solution interval
        freq    float64 (nfreq,)  Hz (one value for a frequency-independent term)
        ant     S16 (nant,)       station names (as in the MeasurementSet's ANTENNA.NAME)
        dir     S128 (ndir,)      "pointing" (direction-independent gains), or the names
                                  of the directions of a term per direction ("Dir00", ...)
        pol     S2 (2,)           "XX", "YY" (the same gain is written for both)

The source table lists "pointing" (the phase centre) and every direction of a term per
direction with its (ra, dec), as DP3 DDECal writes its directions.

The phase soltab holds ``angle(g)`` in radians, the amplitude soltab ``abs(g)``, with the
gain convention of :mod:`sdpbatch.science.visibility` and DP3: ``DATA_pq = g_p conj(g_q)
TRUE_pq`` (p = ANTENNA1).  The simulation writes its true gains this way
(``truth_gains.h5``), ICAL its solved terms; :func:`read_gain_terms` reads them back, and any
H5parm with phase (and optionally amplitude) soltabs in any axis order.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np

from sdpbatch.io.atomic import atomic_path

H5PARM_VERSION = "1.0"
POLS = ("XX", "YY")
DIRECTION = "pointing"
AXES = "time,freq,ant,dir,pol"
SOLSET = "sol000"


@dataclass
class GainTable:
    """Complex gains of one term (ntime, nant, nfreq) with their axes; a term per direction
    has gains (ntime, nant, nfreq, ndir) and its ``directions``.

    weights : the gains' shape, 1 valid, 0 flagged (None: all valid).
    directions : names of the directions (None: direction-independent).
    direction_radec : (ndir, 2) their (ra, dec) radians.
    """

    gains: np.ndarray
    times: np.ndarray
    antenna_names: list[str]
    antenna_positions: np.ndarray
    frequencies: np.ndarray
    weights: np.ndarray | None = None
    directions: list[str] | None = None
    direction_radec: np.ndarray | None = None

    def __post_init__(self) -> None:
        self.gains = np.asarray(self.gains, dtype=np.complex128)
        self.times = np.atleast_1d(np.asarray(self.times, dtype=np.float64))
        self.frequencies = np.atleast_1d(np.asarray(self.frequencies, dtype=np.float64))
        self.antenna_names = [str(n) for n in self.antenna_names]
        self.antenna_positions = np.asarray(self.antenna_positions, np.float64).reshape(-1, 3)
        shape = (self.times.size, len(self.antenna_names), self.frequencies.size)
        axes = "(time, ant, freq)"
        if self.directions is not None:
            self.directions = [str(n) for n in self.directions]
            shape, axes = (*shape, len(self.directions)), "(time, ant, freq, dir)"
            radec = np.zeros((len(self.directions), 2)) if self.direction_radec is None else (
                self.direction_radec)  # fmt: skip
            self.direction_radec = np.asarray(radec, np.float64).reshape(-1, 2)
        if self.gains.shape != shape:
            raise ValueError(f"gains have shape {self.gains.shape}, expected {axes} {shape}")
        if self.antenna_positions.shape[0] != len(self.antenna_names):
            raise ValueError("antenna_positions and antenna_names differ in length")
        if self.weights is not None:
            self.weights = np.broadcast_to(np.asarray(self.weights, np.float64), shape).copy()

    def allclose(self, other: GainTable, *, rtol: float = 1e-12, atol: float = 1e-12) -> bool:
        """Same axes and stations, gains and weights equal within the tolerances."""
        w1 = np.ones(self.gains.shape) if self.weights is None else self.weights
        w2 = np.ones(other.gains.shape) if other.weights is None else other.weights
        return (
            self.antenna_names == other.antenna_names
            and self.directions == other.directions
            and self.gains.shape == other.gains.shape
            and np.allclose(self.times, other.times, rtol=rtol, atol=atol)
            and np.allclose(self.frequencies, other.frequencies, rtol=rtol, atol=atol)
            and np.allclose(self.antenna_positions, other.antenna_positions, rtol=rtol, atol=atol)
            and np.allclose(self.gains, other.gains, rtol=rtol, atol=atol)
            and np.array_equal(w1, w2)
        )


def write_gain_table(
    path: str | Path,
    *,
    gains: np.ndarray,
    times: np.ndarray,
    antenna_names: list[str],
    antenna_positions: np.ndarray,
    frequencies: np.ndarray,
    weights: np.ndarray | None = None,
    source_direction: tuple[float, float] = (0.0, 0.0),
    term: str = "G",
) -> Path:
    """Write one term's gains (ntime, nant, nfreq) complex as an H5parm at ``path``."""
    table = GainTable(gains, times, antenna_names, antenna_positions, frequencies, weights)
    return write_gain_terms(path, {term: table}, source_direction=source_direction)


def write_gain_terms(
    path: str | Path,
    terms: Mapping[str, GainTable],
    *,
    source_direction: tuple[float, float] = (0.0, 0.0),
) -> Path:
    """Write every term (in order: term k -> ``phase00k``/``amplitude00k``) atomically.

    All terms share one set of stations; ``source_direction`` (ra, dec) radians is the
    direction the gains apply to (the phase centre).
    """
    tables = list(terms.items())
    if not tables:
        raise ValueError("no gain term to write")
    first = tables[0][1]
    for term, table in tables[1:]:
        if table.antenna_names != first.antenna_names:
            raise ValueError(f"term {term}: stations differ from those of term {tables[0][0]}")
    path = Path(path)
    with atomic_path(path) as tmp, h5py.File(tmp, "w") as f:
        sol = f.create_group(SOLSET)
        sol.attrs["h5parm_version"] = np.bytes_(H5PARM_VERSION)
        sol.attrs["TITLE"] = np.bytes_("")
        _write_station_tables(sol, first, source_direction, [t for _, t in tables])
        for k, (term, table) in enumerate(tables):
            _write_soltabs(sol, k, term, table)
    return path


def _write_station_tables(sol: h5py.Group, table: GainTable, direction, tables) -> None:
    ant = np.zeros(len(table.antenna_names), dtype=[("name", "S16"), ("position", "<f8", (3,))])
    ant["name"] = [n.encode() for n in table.antenna_names]
    ant["position"] = table.antenna_positions
    sol.create_dataset("antenna", data=ant).attrs["TITLE"] = np.bytes_(
        "Antenna names and positions"
    )
    names, dirs = [DIRECTION], [direction]
    for t in tables:
        if t.directions is not None:
            names += t.directions
            dirs += [tuple(d) for d in t.direction_radec]
    src = np.zeros(len(names), dtype=[("name", "S128"), ("dir", "<f8", (2,))])
    src["name"] = [n.encode() for n in names]
    src["dir"] = dirs
    sol.create_dataset("source", data=src).attrs["TITLE"] = np.bytes_("Source names and directions")


def _write_soltabs(sol: h5py.Group, k: int, term: str, table: GainTable) -> None:
    """phase00k and amplitude00k of one term; (time, ant, freq[, dir]) -> (time, freq, ant,
    dir, pol)."""
    weights = np.ones(table.gains.shape) if table.weights is None else table.weights
    directions = [DIRECTION] if table.directions is None else table.directions

    def expand(a: np.ndarray) -> np.ndarray:
        a = a.reshape(a.shape[:3] + (len(directions),)).transpose(0, 2, 1, 3)
        return np.repeat(a[..., None], len(POLS), axis=-1)

    axes = {
        "time": table.times,
        "freq": table.frequencies,
        "ant": np.array([n.encode() for n in table.antenna_names], "S16"),
        "dir": np.array([n.encode() for n in directions], "S128"),
        "pol": np.array([p.encode() for p in POLS], "S2"),
    }
    for soltype, values in (("amplitude", np.abs(table.gains)), ("phase", np.angle(table.gains))):
        tab = sol.create_group(f"{soltype}{k:03d}")
        tab.attrs["TITLE"] = np.bytes_(soltype)
        tab.attrs["parmdb_type"] = np.bytes_("")
        tab.attrs["TERM"] = np.bytes_(term)
        for name, axis in axes.items():
            tab.create_dataset(name, data=axis)
        tab.create_dataset("val", data=expand(values)).attrs["AXES"] = np.bytes_(AXES)
        wt = expand(weights).astype(np.float32)
        tab.create_dataset("weight", data=wt).attrs["AXES"] = np.bytes_(AXES)


def _text(value) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _soltab_values(tab: h5py.Group, name: str, path: Path) -> tuple[np.ndarray, np.ndarray]:
    """val and weight of a soltab as (time, ant, freq), first polarisation; (time, ant, freq,
    dir) when its directions are not the one "pointing"."""
    axes = _text(tab["val"].attrs.get("AXES", b"")).split(",")
    missing = {"time", "ant", "freq"} - set(axes)
    if missing:
        raise ValueError(f"{path}: {name} has axes {axes}, without {sorted(missing)}")
    kept = ("time", "ant", "freq", "dir") if "dir" in axes else ("time", "ant", "freq")
    order = [axes.index(a) for a in kept]
    rest = [i for i in range(len(axes)) if i not in order]
    several = "dir" in tab and [_text(n) for n in tab["dir"][...]] != [DIRECTION]

    def as_tan(data: np.ndarray) -> np.ndarray:
        data = np.transpose(data, order + rest)
        data = data.reshape(data.shape[: len(kept)] + (-1,))[..., 0]  # first pol (XX)
        return data if several or len(kept) == 3 else data[..., 0]

    weight = tab["weight"][...] if "weight" in tab else np.ones(tab["val"].shape)
    return as_tan(tab["val"][...]), as_tan(weight).astype(np.float64)


def read_gain_terms(path: str | Path) -> dict[str, GainTable]:
    """Every term of an H5parm: ``{TERM: GainTable}`` in soltab order (phase00k with its
    amplitude00k, amplitude 1 where absent; a soltab without TERM is named by its number)."""
    path = Path(path)
    try:
        f = h5py.File(path, "r")
    except OSError as err:
        raise ValueError(f"{path}: not a readable HDF5 gain table ({err})") from err
    with f:
        sol = f.get(SOLSET)
        phases = sorted(n for n in sol if n.startswith("phase")) if sol is not None else []
        if not phases:
            raise ValueError(f"{path}: no /{SOLSET}/phase soltab (not an H5parm gain table)")
        terms = {}
        for name in phases:
            tab = sol[name]
            phase, weight = _soltab_values(tab, name, path)
            amp_name = "amplitude" + name.removeprefix("phase")
            amp = _soltab_values(sol[amp_name], amp_name, path)[0] if amp_name in sol else 1.0
            names = [_text(n) for n in tab["ant"][...]]
            directions = [_text(n) for n in tab["dir"][...]] if phase.ndim == 4 else None
            terms[_text(tab.attrs.get("TERM", name.removeprefix("phase")))] = GainTable(
                gains=amp * np.exp(1j * phase),
                times=tab["time"][...],
                antenna_names=names,
                antenna_positions=_positions(sol, names),
                frequencies=tab["freq"][...],
                weights=weight,
                directions=directions,
                direction_radec=None if directions is None else _directions(sol, directions),
            )
        return terms


def _positions(sol: h5py.Group, names: list[str]) -> np.ndarray:
    """ITRF positions of ``names`` from the solset's antenna table (in the soltab's order)."""
    if "antenna" not in sol:
        return np.zeros((len(names), 3))
    table = sol["antenna"][...]
    index = {_text(n): k for k, n in enumerate(table["name"])}
    return np.array([table["position"][index[n]] if n in index else np.zeros(3) for n in names])


def _directions(sol: h5py.Group, names: list[str]) -> np.ndarray:
    """(ndir, 2) (ra, dec) of ``names`` from the solset's source table (zeros if absent)."""
    if "source" not in sol:
        return np.zeros((len(names), 2))
    table = sol["source"][...]
    index = {_text(n): k for k, n in enumerate(table["name"])}
    return np.array([table["dir"][index[n]] if n in index else np.zeros(2) for n in names])


def read_gain_table(path: str | Path, term: str | None = None) -> GainTable:
    """One term of an H5parm (``term`` by name, e.g. "T"; the first by default)."""
    terms = read_gain_terms(path)
    if term is None:
        return next(iter(terms.values()))
    if term not in terms:
        raise ValueError(f"{path}: no term {term!r}; it holds {', '.join(terms)}")
    return terms[term]
