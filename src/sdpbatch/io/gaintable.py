"""Station gain tables as HDF5 files in the H5parm layout of DP3 and LoSoTo.

Layout (one solution set ``sol000``)::

    /sol000                          group, attribute TITLE = "sol000"
    /sol000/antenna                  compound table (name S16, position float64[3]) ITRF m
    /sol000/source                   compound table (name S128, dir float64[2]) ra, dec rad
    /sol000/amplitude000             soltab group, attribute TITLE = "amplitude"
    /sol000/phase000                 soltab group, attribute TITLE = "phase"
        val      float64 (ntime, nant, nfreq, npol), attribute AXES = b"time,ant,freq,pol"
        weight   float16 (same shape), 1 = valid, 0 = flagged; attribute AXES likewise
        time     float64 (ntime,)   MJD seconds (UTC), centre of the solution interval
        ant      S16 (nant,)        station names (as in the MeasurementSet ANTENNA.NAME)
        freq     float64 (nfreq,)   Hz
        pol      S2 (npol,)         "XX", "YY" (the same gain is written for both)

The phase soltab holds ``angle(g)`` in radians, the amplitude soltab ``abs(g)``, with the
gain convention of :mod:`sdpbatch.science.visibility`: ``DATA_pq = g_p conj(g_q) TRUE_pq``.
The simulation writes its true gains this way (``truth_gains.h5``); ICAL writes its solutions
the same way, so both can be compared and read by LoSoTo.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np

from sdpbatch.io.atomic import atomic_path

POLS = ("XX", "YY")
AXES = b"time,ant,freq,pol"


@dataclass
class GainTable:
    """Complex gains (ntime, nant, nfreq) with their axes."""

    gains: np.ndarray
    times: np.ndarray
    antenna_names: list[str]
    antenna_positions: np.ndarray
    frequencies: np.ndarray
    weights: np.ndarray | None = None  # (ntime, nant, nfreq) 1 valid / 0 flagged


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
) -> Path:
    """Write gains (ntime, nant, nfreq) complex to an H5parm file at ``path`` (atomically)."""
    gains = np.asarray(gains, dtype=np.complex128)
    times = np.asarray(times, dtype=np.float64)
    frequencies = np.atleast_1d(np.asarray(frequencies, dtype=np.float64))
    positions = np.asarray(antenna_positions, dtype=np.float64).reshape(-1, 3)
    shape = (times.size, len(antenna_names), frequencies.size)
    if gains.shape != shape:
        raise ValueError(f"gains have shape {gains.shape}, expected (time, ant, freq) {shape}")
    if positions.shape[0] != len(antenna_names):
        raise ValueError("antenna_positions and antenna_names differ in length")
    w = np.ones(shape) if weights is None else np.asarray(weights, dtype=np.float64)
    npol = len(POLS)
    path = Path(path)
    with atomic_path(path) as tmp, h5py.File(tmp, "w") as f:
        sol = f.create_group("sol000")
        sol.attrs["TITLE"] = np.bytes_("sol000")
        ant = np.zeros(len(antenna_names), dtype=[("name", "S16"), ("position", "<f8", (3,))])
        ant["name"] = [n.encode() for n in antenna_names]
        ant["position"] = positions
        sol.create_dataset("antenna", data=ant)
        src = np.zeros(1, dtype=[("name", "S128"), ("dir", "<f8", (2,))])
        src["name"] = b"pointing"
        src["dir"] = source_direction
        sol.create_dataset("source", data=src)
        for name, title, values in (
            ("amplitude000", "amplitude", np.abs(gains)),
            ("phase000", "phase", np.angle(gains)),
        ):
            tab = sol.create_group(name)
            tab.attrs["TITLE"] = np.bytes_(title)
            val = np.repeat(values[..., None], npol, axis=-1)
            tab.create_dataset("val", data=val).attrs["AXES"] = np.bytes_(AXES)
            wt = np.repeat(w[..., None], npol, axis=-1).astype(np.float16)
            tab.create_dataset("weight", data=wt).attrs["AXES"] = np.bytes_(AXES)
            tab.create_dataset("time", data=times)
            tab.create_dataset("ant", data=np.array([n.encode() for n in antenna_names], "S16"))
            tab.create_dataset("freq", data=frequencies)
            tab.create_dataset("pol", data=np.array([p.encode() for p in POLS], "S2"))
    return path


def read_gain_table(path: str | Path) -> GainTable:
    """Read an H5parm written by :func:`write_gain_table` (XX gains; amplitude 1 if absent)."""
    path = Path(path)
    try:
        f = h5py.File(path, "r")
    except OSError as err:
        raise ValueError(f"{path}: not a readable HDF5 gain table ({err})") from err
    with f:
        if "sol000/phase000" not in f:
            raise ValueError(f"{path}: no /sol000/phase000 soltab (not an H5parm gain table)")
        ph = f["sol000/phase000"]
        axes = ph["val"].attrs.get("AXES", AXES)
        axes = axes.decode() if isinstance(axes, bytes) else str(axes)
        if axes != AXES.decode():
            raise ValueError(f"{path}: phase000 axes are '{axes}', expected '{AXES.decode()}'")
        phase = ph["val"][..., 0]
        weight = ph["weight"][..., 0].astype(np.float64)
        amp = f["sol000/amplitude000/val"][..., 0] if "sol000/amplitude000" in f else 1.0
        ant = f["sol000/antenna"][...]
        return GainTable(
            gains=amp * np.exp(1j * phase),
            times=ph["time"][...],
            antenna_names=[n.decode() for n in ph["ant"][...]],
            antenna_positions=np.asarray(ant["position"], dtype=np.float64),
            frequencies=ph["freq"][...],
            weights=weight,
        )
