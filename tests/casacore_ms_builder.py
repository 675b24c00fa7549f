"""Build small MeasurementSets directly with python-casacore, independently of sdpbatch.

Used by the MeasurementSet reader and ICAL end-to-end tests as "a MeasurementSet a radio
astronomer brings": several channels in one spectral window, linear (or other) correlations,
WEIGHT_SPECTRUM, flags and autocorrelations.  UVW come from the textbook (Thompson, Moran &
Swenson eq. 4.1) rotation of local east/north/up station positions; visibilities of point
sources follow the MeasurementSet convention
``V = S exp(+2 pi i nu/c (u l + v m + w (n - 1)))`` with ``uvw = uvw(ANT2) - uvw(ANT1)`` and
gains ``g_p conj(g_q)`` (p = ANTENNA1).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from casacore import tables

C = 299792458.0
LON, LAT = np.deg2rad(116.7644482), np.deg2rad(-26.82472208)
STOKES = {"I": 1, "RR": 5, "RL": 6, "LR": 7, "LL": 8, "XX": 9, "XY": 10, "YX": 11, "YY": 12}


@dataclass
class MsSpec:
    """What to put in the MeasurementSet."""

    enu: np.ndarray  # (nant, 3) local metres
    frequencies: np.ndarray  # (nchan,) Hz
    ntimes: int = 3
    hour_angles: tuple[float, float] = (-0.3, 0.3)  # rad, first and last
    phase_centre: tuple[float, float] = (0.0, np.deg2rad(-30.0))
    sources: list[tuple[float, float, float]] = field(default_factory=list)  # (S Jy, l, m)
    spectral_index: float = 0.0
    gains: np.ndarray | None = None  # (ntimes, nant) complex
    source_gains: np.ndarray | None = None  # (nsrc, ntimes, nant) complex, per source
    correlations: tuple[str, ...] = ("XX", "XY", "YX", "YY")
    weight_spectrum: bool = True
    autocorrelations: bool = True
    nfield_used: int = 1
    mjd_start: float = 58849.0 * 86400.0


def local_to_uvw(enu: np.ndarray, hour_angle: float, dec: float) -> np.ndarray:
    """Station (u, v, w) metres at one hour angle, from local east/north/up."""
    e, n, up = enu[:, 0], enu[:, 1], enu[:, 2]
    x = -np.sin(LAT) * n + np.cos(LAT) * up
    y = e
    z = np.cos(LAT) * n + np.sin(LAT) * up
    sh, ch, sd, cd = np.sin(hour_angle), np.cos(hour_angle), np.sin(dec), np.cos(dec)
    u = sh * x + ch * y
    v = -sd * ch * x + sd * sh * y + cd * z
    w = cd * ch * x - cd * sh * y + sd * z
    return np.stack([u, v, w], axis=1)


def enu_to_itrf(enu: np.ndarray) -> np.ndarray:
    """Geocentric positions (spherical Earth is enough for the ANTENNA table)."""
    radius = 6378137.0 + 300.0
    e, n, up = enu.T
    sl, cl, sp, cp = np.sin(LON), np.cos(LON), np.sin(LAT), np.cos(LAT)
    centre = radius * np.array([cp * cl, cp * sl, sp])
    dx = -sl * e - sp * cl * n + cp * cl * up
    dy = cl * e - sp * sl * n + cp * sl * up
    dz = cp * n + sp * up
    return centre + np.stack([dx, dy, dz], axis=1)


def build_ms(path: Path, spec: MsSpec) -> dict:
    """Write the MeasurementSet; return the truth (stokes_i, weights, flags per kept row)."""
    nant = spec.enu.shape[0]
    freqs = np.asarray(spec.frequencies, dtype=np.float64)
    nchan, ncorr = freqs.size, len(spec.correlations)
    ra0, dec0 = spec.phase_centre
    has = dict(DATA=tables.makearrcoldesc("DATA", 0j, ndim=2, valuetype="complex"))
    if spec.weight_spectrum:
        has["WS"] = tables.makearrcoldesc("WEIGHT_SPECTRUM", 0.0, ndim=2, valuetype="float")
    ms = tables.default_ms(str(path), tables.maketabdesc(list(has.values())))
    pairs = [(p, q) for p in range(nant) for q in range(p, nant)]
    if not spec.autocorrelations:
        pairs = [(p, q) for p, q in pairs if p != q]
    nbl = len(pairs)
    nrow = nbl * spec.ntimes
    ms.addrows(nrow)
    ant1 = np.array([p for p, _ in pairs] * spec.ntimes, dtype=np.int32)
    ant2 = np.array([q for _, q in pairs] * spec.ntimes, dtype=np.int32)
    tidx = np.repeat(np.arange(spec.ntimes), nbl)
    has_ = np.linspace(*spec.hour_angles, spec.ntimes)
    dt = (has_[1] - has_[0]) / (2 * np.pi) * 86164.1 if spec.ntimes > 1 else 60.0
    times = spec.mjd_start + np.arange(spec.ntimes) * dt
    uvw = np.empty((nrow, 3))
    for t, h in enumerate(has_):
        station = local_to_uvw(spec.enu, h, dec0)
        rows = tidx == t
        uvw[rows] = station[ant2[rows]] - station[ant1[rows]]
    stokes_i = np.zeros((nrow, nchan), np.complex128)
    nu0 = freqs.mean()
    for k, (flux, l, m) in enumerate(spec.sources):
        n = np.sqrt(1 - l * l - m * m)
        phase = 2j * np.pi * (uvw @ np.array([l, m, n - 1]))[:, None] * freqs[None, :] / C
        source = flux * (freqs / nu0) ** spec.spectral_index * np.exp(phase)
        if spec.source_gains is not None:
            g = spec.source_gains[k]
            source = source * (g[tidx, ant1] * np.conj(g[tidx, ant2]))[:, None]
        stokes_i += source
    if spec.gains is not None:
        stokes_i *= (spec.gains[tidx, ant1] * np.conj(spec.gains[tidx, ant2]))[:, None]
    rng = np.random.default_rng(7)
    # correlations: unpolarised sky, XX = YY = RR = LL = I, cross-hands 0
    data = np.zeros((nrow, nchan, ncorr), np.complex64)
    for k, c in enumerate(spec.correlations):
        if c in ("I", "XX", "YY", "RR", "LL"):
            data[..., k] = stokes_i
    weights = rng.uniform(0.5, 2.0, (nrow, nchan, ncorr)).astype(np.float32)
    flags = np.zeros((nrow, nchan, ncorr), bool)
    flags[rng.random((nrow, nchan)) < 0.05, ncorr - 1] = True  # some samples in one pol only
    flag_row = np.zeros(nrow, bool)
    flag_row[rng.random(nrow) < 0.03] = True
    ms.putcol("DATA", data)
    ms.putcol("UVW", uvw)
    ms.putcol("ANTENNA1", ant1)
    ms.putcol("ANTENNA2", ant2)
    ms.putcol("TIME", times[tidx])
    ms.putcol("TIME_CENTROID", times[tidx])
    ms.putcol("INTERVAL", np.full(nrow, dt))
    ms.putcol("EXPOSURE", np.full(nrow, dt))
    ms.putcol("FLAG", flags)
    ms.putcol("FLAG_ROW", flag_row)
    ms.putcol("FIELD_ID", (np.arange(nrow) % spec.nfield_used).astype(np.int32))
    if spec.weight_spectrum:
        ms.putcol("WEIGHT_SPECTRUM", weights)
        ms.putcol("WEIGHT", weights.mean(axis=1))
    else:
        ms.putcol("WEIGHT", weights[:, 0, :])
        weights = np.repeat(weights[:, :1, :], nchan, axis=1)
    ms.putcol("SIGMA", 1 / np.sqrt(weights[:, 0, :]))
    ms.close()

    _fill(path / "SPECTRAL_WINDOW", 1, CHAN_FREQ=freqs[None], CHAN_WIDTH=np.full((1, nchan), 1e5),
          EFFECTIVE_BW=np.full((1, nchan), 1e5), RESOLUTION=np.full((1, nchan), 1e5),
          NUM_CHAN=np.array([nchan]), REF_FREQUENCY=freqs[:1],
          TOTAL_BANDWIDTH=np.array([1e5 * nchan]))  # fmt: skip
    _fill(path / "POLARIZATION", 1, NUM_CORR=np.array([ncorr]),
          CORR_TYPE=np.array([[STOKES[c] for c in spec.correlations]], dtype=np.int32),
          CORR_PRODUCT=np.zeros((1, ncorr, 2), np.int32))  # fmt: skip
    _fill(path / "DATA_DESCRIPTION", 1, SPECTRAL_WINDOW_ID=np.array([0]),
          POLARIZATION_ID=np.array([0]))  # fmt: skip
    nf = max(spec.nfield_used, 1)
    direction = np.array([[[ra0 + 0.01 * f, dec0]] for f in range(nf)])
    _fill(path / "FIELD", nf, PHASE_DIR=direction, DELAY_DIR=direction, REFERENCE_DIR=direction,
          NAME=np.array([f"F{f}" for f in range(nf)]))  # fmt: skip
    _fill(path / "ANTENNA", nant, POSITION=enu_to_itrf(spec.enu), DISH_DIAMETER=np.full(nant, 38.0),
          NAME=np.array([f"S{k:03d}" for k in range(nant)]),
          STATION=np.array(["SKA"] * nant), TYPE=np.array(["GROUND-BASED"] * nant),
          MOUNT=np.array(["X-Y"] * nant))  # fmt: skip

    # the truth of what a reader must return (cross-correlations only)
    keep = ant1 != ant2
    k = [spec.correlations.index(c) for c in ("XX", "YY") if c in spec.correlations]
    truth = {"keep": keep, "stokes_i": stokes_i[keep], "uvw": uvw[keep]}
    if len(k) == 2:
        wa, wb = weights[keep][..., k[0]], weights[keep][..., k[1]]
        truth["weight"] = 1.0 / ((1.0 / wa + 1.0 / wb) / 4.0)
        fl = flags[keep][..., k[0]] | flags[keep][..., k[1]] | flag_row[keep][:, None]
        truth["flag"] = fl
    truth["time"] = times[tidx][keep]
    truth["antenna1"], truth["antenna2"] = ant1[keep], ant2[keep]
    return truth


def _fill(sub: Path, nrow: int, **columns: np.ndarray) -> None:
    with tables.table(str(sub), readonly=False, ack=False) as t:
        t.addrows(nrow)
        for name, value in columns.items():
            t.putcol(name, value)


def random_enu(nant: int, radius: float, seed: int = 1) -> np.ndarray:
    """A compact random array within ``radius`` metres (flat ground, small height noise)."""
    rng = np.random.default_rng(seed)
    r = radius * np.sqrt(rng.random(nant))
    a = 2 * np.pi * rng.random(nant)
    return np.stack([r * np.cos(a), r * np.sin(a), rng.normal(0, 1.0, nant)], axis=1)


def add_window(path: Path, *, frequencies: np.ndarray, field: int, scale: float) -> None:
    """Append a copy of the rows of DATA_DESC_ID 0 as another window of the MeasurementSet.

    The copy uses a new spectral window at ``frequencies`` (as many channels as the first)
    and FIELD row ``field`` (added, 0.02 rad east of field 0, if it does not exist); its DATA
    is ``scale`` times the original's, so a reader's result for it is known exactly.
    """
    freqs = np.asarray(frequencies, dtype=np.float64)
    with tables.table(str(path), readonly=False, ack=False) as ms:
        rows = np.flatnonzero(ms.getcol("DATA_DESC_ID") == 0)
        copies = {c: ms.getcol(c)[rows] for c in ms.colnames() if ms.iscelldefined(c, 0)}
        copies["DATA"] = copies["DATA"] * scale
        with tables.table(str(path / "DATA_DESCRIPTION"), readonly=False, ack=False) as dd:
            ddid = dd.nrows()
            dd.addrows(1)
            dd.putcell("SPECTRAL_WINDOW_ID", ddid, ddid)
            dd.putcell("POLARIZATION_ID", ddid, 0)
        copies["DATA_DESC_ID"] = np.full(rows.size, ddid, np.int32)
        copies["FIELD_ID"] = np.full(rows.size, field, np.int32)
        start = ms.nrows()
        ms.addrows(rows.size)
        for name, values in copies.items():
            ms.putcol(name, values, startrow=start, nrow=rows.size)
    with tables.table(str(path / "SPECTRAL_WINDOW"), readonly=False, ack=False) as t:
        t.addrows(1)
        row = t.nrows() - 1
        t.putcell("CHAN_FREQ", row, freqs)
        for col in ("CHAN_WIDTH", "EFFECTIVE_BW", "RESOLUTION"):
            t.putcell(col, row, np.full(freqs.size, 2e5))
        t.putcell("NUM_CHAN", row, freqs.size)
    with tables.table(str(path / "FIELD"), readonly=False, ack=False) as t:
        while t.nrows() <= field:
            t.addrows(1)
            direction = t.getcell("PHASE_DIR", 0) + np.array([[0.02 * t.nrows(), 0.0]])
            for col in ("PHASE_DIR", "DELAY_DIR", "REFERENCE_DIR"):
                t.putcell(col, t.nrows() - 1, direction)
            t.putcell("NAME", t.nrows() - 1, f"EXTRA{t.nrows() - 1}")
