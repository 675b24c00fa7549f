"""Exact visibilities of point and Gaussian components: the direct Fourier sum with the w term.

Convention (MeasurementSet / WSClean, see :mod:`sdpbatch.science.visibility`)::

    V(u, v, w, nu) = sum_s S_s(nu) * T_s(uvw, nu) * exp(+2j*pi*nu/c * (u*l_s + v*m_s + w*(n_s - 1)))

No 1/n factor: a point source of apparent flux S gives |V| = S.  ``T_s`` is 1 for a point and
``exp(-2 pi^2 (nu/c)^2 |shape_s @ uvw|^2)`` for a Gaussian component, with ``shape`` the matrices
of :func:`sdpbatch.science.skymodel.gaussian_taper_matrix`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from sdpbatch.science.constants import C
from sdpbatch.science.parallel import side_by_side

ROW_CHUNK = 32_768
"""Rows per chunk: bounds the (rows x sources) work arrays (~0.5 MiB per source)."""


def predict_point_sources(
    uvw: np.ndarray,
    frequency: np.ndarray,
    lmn: np.ndarray,
    flux: np.ndarray,
    *,
    shape: np.ndarray | None = None,
    row_chunk: int = ROW_CHUNK,
    nthreads: int = 1,
) -> np.ndarray:
    """Visibilities (nrow, nchan) complex128 Jy of point and Gaussian components.

    Parameters
    ----------
    uvw : (nrow, 3) metres.
    frequency : (nchan,) Hz.
    lmn : (nsrc, 3) direction cosines (l, m, n) of the sources.
    flux : (nsrc, nchan) apparent Stokes I (Jy) of each source at each channel.
    shape : (nsrc, 2, 3) Gaussian taper matrices (``gaussian_taper_matrix``; zero rows for
        points), or None for point sources only.
    row_chunk : rows per chunk (memory ~ 48 * row_chunk * nsrc bytes per thread).
    nthreads : row chunks computed side by side (numpy releases the GIL in them).

    The phase of each (row, source) is one matrix product ``uvw @ (l, m, n-1)``.  With evenly
    spaced channels the phasors of channel c+1 are those of channel c times one step phasor
    (two exponentials per chunk instead of one per channel; rounding grows by ~1e-16 per
    channel); otherwise each channel takes its own.  Sources are summed by matrix-vector
    products; Gaussian components add their taper's correction ``(T - 1)`` for their columns.
    """
    uvw = np.asarray(uvw, dtype=np.float64)
    frequency = np.atleast_1d(np.asarray(frequency, dtype=np.float64))
    lmn = np.asarray(lmn, dtype=np.float64).reshape(-1, 3)
    flux = np.asarray(flux, dtype=np.float64).reshape(lmn.shape[0], frequency.size)
    out = np.zeros((uvw.shape[0], frequency.size), dtype=np.complex128)
    if lmn.shape[0] == 0 or uvw.shape[0] == 0:
        return out
    sky = _Components.of(lmn, flux, shape, frequency)
    starts = range(0, uvw.shape[0], row_chunk)

    def chunk(start: int) -> None:
        rows = slice(start, min(uvw.shape[0], start + row_chunk))
        out[rows] = sky.visibilities(uvw[rows], frequency)

    side_by_side(chunk, starts, nthreads)
    return out


@dataclass(frozen=True)
class _Components:
    """What the direct sum needs of the components: delays, flux weights, Gaussians, and
    whether the channels are evenly spaced (then phasors are stepped channel to channel)."""

    delay: np.ndarray  # (3, nsrc): (l, m, n - 1)
    weights: np.ndarray  # (nsrc, nchan) complex flux
    gauss: np.ndarray  # indices of the Gaussian components
    shape: np.ndarray | None  # (nsrc, 2, 3) taper matrices
    spacing: float | None  # channel spacing (Hz) when even

    @classmethod
    def of(cls, lmn, flux, shape, frequency) -> _Components:
        nchan = frequency.size
        spacing = (frequency[-1] - frequency[0]) / max(nchan - 1, 1)
        grid = frequency[0] + spacing * np.arange(nchan)
        even = nchan > 2 and bool(np.all(np.abs(frequency - grid) <= 1e-13 * frequency.max()))
        shape = None if shape is None else np.asarray(shape, dtype=np.float64)
        return cls(
            delay=(lmn - np.array([0.0, 0.0, 1.0])).T,
            weights=flux.astype(np.complex128),
            gauss=_gaussian_columns(shape, lmn.shape[0]),
            shape=shape,
            spacing=spacing if even else None,
        )

    def visibilities(self, uvw: np.ndarray, frequency: np.ndarray) -> np.ndarray:
        """(rows, nchan) visibilities of the components for these rows."""
        out = np.empty((uvw.shape[0], frequency.size), dtype=np.complex128)
        path = uvw @ self.delay  # (rows, nsrc) metres
        if self.gauss.size:
            ab = np.einsum("rk,sjk->rsj", uvw, self.shape[self.gauss])
            extent = ab[..., 0] ** 2 + ab[..., 1] ** 2  # (rows, ngauss) m^2
        if self.spacing is not None:
            phasor = np.exp((2j * np.pi * frequency[0] / C) * path)
            step = np.exp((2j * np.pi * self.spacing / C) * path)
        for c, nu in enumerate(frequency):
            if self.spacing is None:
                phasor = np.exp((2j * np.pi * nu / C) * path)
            elif c:
                phasor *= step
            out[:, c] = phasor @ self.weights[:, c]
            if self.gauss.size:
                taper = np.exp((-2.0 * np.pi**2 * (nu / C) ** 2) * extent)
                out[:, c] += (phasor[:, self.gauss] * (taper - 1.0)) @ self.weights[self.gauss, c]
        return out


def _gaussian_columns(shape: np.ndarray | None, nsrc: int) -> np.ndarray:
    """Indices of the Gaussian components (nonzero taper matrices)."""
    if shape is None:
        return np.zeros(0, dtype=np.int64)
    if np.shape(shape) != (nsrc, 2, 3):
        raise ValueError(f"shape must be ({nsrc}, 2, 3) taper matrices, got {np.shape(shape)}")
    return np.flatnonzero(np.any(np.asarray(shape) != 0, axis=(1, 2)))


def predict_point_sources_by_station(
    ant_uvw: np.ndarray,
    time_index: np.ndarray,
    antenna1: np.ndarray,
    antenna2: np.ndarray,
    frequency: np.ndarray,
    lmn: np.ndarray,
    flux: np.ndarray,
    *,
    shape: np.ndarray | None = None,
    jones: np.ndarray | None = None,
) -> np.ndarray:
    """The same direct sum, factored per station: for data whose UVW are station differences.

    With ``uvw_pq = uvw_q - uvw_p`` the phase of a baseline is the difference of two station
    phases, so ``V_pq = sum_s S_s K_qs conj(K_ps)`` with ``K_ps = exp(+2j*pi*nu/c * uvw_p .
    (l_s, m_s, n_s - 1))`` (the K-Jones term of the measurement equation).  Per time this is
    one matrix product ``(K diag(S)) K^H`` of (nant x nsrc) matrices, whose entries are then
    picked per baseline: sines and cosines once per (time, station, source) instead of once
    per (baseline, source), exact to float64 rounding.

    Parameters
    ----------
    ant_uvw : (ntime, nant, 3) metres, station UVW per time.
    time_index : (nrow,) int, time of each row; antenna1, antenna2 : (nrow,) int.
    frequency : (nchan,) Hz; lmn : (nsrc, 3); flux : (nsrc, nchan) Jy.
    shape : (nsrc, 2, 3) Gaussian taper matrices or None: a Gaussian's taper depends on the
        baseline, not on the stations, so Gaussian components are summed per baseline by
        :func:`predict_point_sources` and only the points are factored.
    jones : (ntime, nant, nsrc, nchan) complex direction-dependent station gains or None:
        ``V_pq = sum_s g_ps conj(g_qs) S_s K_qs conj(K_ps)`` (station beams, ionosphere; the
        convention of the direction-independent gains, p = ANTENNA1).
    """
    ant_uvw = np.asarray(ant_uvw, dtype=np.float64)
    frequency = np.atleast_1d(np.asarray(frequency, dtype=np.float64))
    lmn = np.asarray(lmn, dtype=np.float64).reshape(-1, 3)
    flux = np.asarray(flux, dtype=np.float64).reshape(lmn.shape[0], frequency.size)
    shape = None if shape is None else np.asarray(shape, dtype=np.float64)
    time_index = np.asarray(time_index)
    nrow = time_index.shape[0]
    out = np.zeros((nrow, frequency.size), dtype=np.complex128)
    if lmn.shape[0] == 0 or nrow == 0:
        return out
    gauss = _gaussian_columns(shape, lmn.shape[0])
    if gauss.size:
        rows = (time_index, antenna1, antenna2)
        out += _gaussians(ant_uvw, rows, frequency, lmn, flux, shape, gauss, jones)
        points = np.setdiff1d(np.arange(lmn.shape[0]), gauss)
        lmn, flux = lmn[points], flux[points]
        jones = None if jones is None else jones[:, :, points]
        if points.size == 0:
            return out
    _station_factored(out, ant_uvw, time_index, antenna1, antenna2, frequency, lmn, flux, jones)
    return out


def _station_factored(out, ant_uvw, time_index, antenna1, antenna2, frequency, lmn, flux, jones):
    """Add the points' ``(K diag(S)) K^H`` per time and channel to ``out`` (nrow, nchan)."""
    nrow = time_index.shape[0]
    path = ant_uvw @ (lmn - np.array([0.0, 0.0, 1.0])).T  # (ntime, nant, nsrc) metres
    order = np.argsort(time_index, kind="stable")
    times, starts = np.unique(time_index[order], return_index=True)
    bounds = np.append(starts, nrow)
    for c, nu in enumerate(frequency):
        for t, lo, hi in zip(times, bounds[:-1], bounds[1:], strict=True):
            station = np.exp(1j * (2.0 * np.pi * nu / C) * path[t])  # (nant, nsrc)
            if jones is not None:
                station *= jones[t, :, :, c].conj()
            # [q, p] = V_pq; einsum rather than BLAS: a small product that a multithreaded
            # BLAS slows down tenfold on a busy machine
            coherency = np.einsum("qs,ps->qp", station * flux[:, c], station.conj())
            rows = order[lo:hi]
            out[rows, c] += coherency[antenna2[rows], antenna1[rows]]


def _gaussians(ant_uvw, rows, frequency, lmn, flux, shape, gauss, jones) -> np.ndarray:
    """The Gaussian components ``gauss`` summed per baseline; with direction-dependent gains
    (a taper per baseline, a gain per station) one component at a time."""
    time_index, antenna1, antenna2 = rows
    uvw = ant_uvw[time_index, antenna2] - ant_uvw[time_index, antenna1]
    if jones is None:
        return predict_point_sources(uvw, frequency, lmn[gauss], flux[gauss], shape=shape[gauss])
    out = np.zeros((uvw.shape[0], frequency.size), dtype=np.complex128)
    for s in gauss:
        one = predict_point_sources(uvw, frequency, lmn[[s]], flux[[s]], shape=shape[[s]])
        out += one * jones[time_index, antenna1, s] * jones[time_index, antenna2, s].conj()
    return out


STATION_UVW_TOLERANCE = 1e-6
"""Metres: how far a row's UVW may be from its stations' difference for the factored sum
(a phase error of at most 2e-6 rad at 1 GHz for a source 0.1 from the phase centre)."""

CHECK_ROWS = 262_144
"""Rows whose differences :func:`station_uvw` checks at once."""


def station_uvw(
    uvw: np.ndarray,
    time_index: np.ndarray,
    antenna1: np.ndarray,
    antenna2: np.ndarray,
    *,
    tolerance: float = STATION_UVW_TOLERANCE,
) -> np.ndarray | None:
    """(ntime, nant, 3) station UVW (metres) whose differences ``X[t, antenna2] - X[t,
    antenna1]`` give every row's ``uvw`` (nrow, 3) within ``tolerance``, or None if they do not.

    Each time's stations are placed by walking its baselines out from one station of each
    connected set, which is put at 0: a common offset of a set cancels in all its differences.
    ``time_index`` (nrow,) int: the time of each row, 0 .. ntime-1.
    """
    t, a1, a2 = (np.asarray(x, dtype=np.int64) for x in (time_index, antenna1, antenna2))
    if t.size == 0:
        return None
    out = np.zeros((int(t.max()) + 1, int(max(a1.max(), a2.max())) + 1, 3))
    known = np.zeros(out.shape[:2], dtype=bool)
    while True:
        k1, k2 = known[t, a1], known[t, a2]
        forward, backward = k1 & ~k2, k2 & ~k1
        if forward.any() or backward.any():
            out[t[forward], a2[forward]] = out[t[forward], a1[forward]] + uvw[forward]
            out[t[backward], a1[backward]] = out[t[backward], a2[backward]] - uvw[backward]
            known[t[forward], a2[forward]] = True
            known[t[backward], a1[backward]] = True
            continue
        neither = np.flatnonzero(~k1 & ~k2)
        if neither.size == 0:
            break
        _, first = np.unique(t[neither], return_index=True)  # a new root in each such time
        known[t[neither[first]], a1[neither[first]]] = True
    for lo in range(0, t.size, CHECK_ROWS):  # slices: the differences of 1e7 rows are 0.7 GB
        r = slice(lo, lo + CHECK_ROWS)
        if np.abs(out[t[r], a2[r]] - out[t[r], a1[r]] - uvw[r]).max() > tolerance:
            return None
    return out


def predict_rows(
    uvw: np.ndarray,
    time_index: np.ndarray,
    antenna1: np.ndarray,
    antenna2: np.ndarray,
    frequency: np.ndarray,
    lmn: np.ndarray,
    flux: np.ndarray,
    *,
    shape: np.ndarray | None = None,
    nthreads: int = 1,
) -> np.ndarray:
    """Visibilities (nrow, nchan) complex128 Jy of the components at rows of baselines: the
    direct sum factored per station (:func:`predict_point_sources_by_station`) when the rows'
    UVW are their stations' differences (:func:`station_uvw`), else per baseline
    (:func:`predict_point_sources`); the two agree to float64 rounding.

    uvw (nrow, 3) metres; time_index, antenna1, antenna2 (nrow,) int; frequency (nchan,) Hz;
    lmn (nsrc, 3); flux (nsrc, nchan) Jy; shape (nsrc, 2, 3) Gaussian tapers or None;
    nthreads: of the per-baseline sum.
    """
    stations = station_uvw(uvw, time_index, antenna1, antenna2)
    if stations is None:
        return predict_point_sources(uvw, frequency, lmn, flux, shape=shape, nthreads=nthreads)
    return predict_point_sources_by_station(
        stations, time_index, antenna1, antenna2, frequency, lmn, flux, shape=shape
    )
