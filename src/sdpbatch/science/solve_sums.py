"""Solve sums: the compressed data of a gain solve (see :mod:`sdpbatch.science.solve`).

The data are compressed (:func:`compress`) to per (solution interval, baseline[, channel])
sums ``A = sum w V conj(M)``, ``B = sum w |M|^2``, ``C = sum w |V|^2`` and the sample count.
``A`` and ``B`` are the sufficient statistics of the least-squares problem for a gain constant
over the summed samples, ``C`` gives with them the residual of any gains (the noise scale of
the solution's signal-to-noise).  They add up across rows, channels and frequency windows
(:func:`combine_sums`), so every window computes its own sums where its data live and only these
small arrays meet for the solve.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class SolveSums:
    """Compressed data of a gain solve, one entry per (interval, antenna1 < antenna2, channel).

    Attributes
    ----------
    interval : (n,) int, solution interval index.
    antenna1, antenna2 : (n,) int, station indices with antenna1 < antenna2.
    channel : (n,) int, solution channel index (0 for frequency-independent terms).
    a : (n,) complex128, ``sum w V conj(M)``.
    b : (n,) float64, ``sum w |M|^2``.
    c : (n,) float64, ``sum w |V|^2`` (with ``a`` and ``b``, the residual of any gains).
    n : (n,) float64, number of samples summed (unflagged, weight > 0).
    """

    interval: np.ndarray
    antenna1: np.ndarray
    antenna2: np.ndarray
    channel: np.ndarray
    a: np.ndarray
    b: np.ndarray
    c: np.ndarray
    n: np.ndarray

    @property
    def size(self) -> int:
        return int(self.a.shape[0])


KEYS = ("interval", "antenna1", "antenna2", "channel")
VALUES = ("a", "b", "c", "n")


def _reduce(
    interval: np.ndarray,
    antenna1: np.ndarray,
    antenna2: np.ndarray,
    channel: np.ndarray,
    **values: np.ndarray,
) -> SolveSums:
    """Sum entries with the same (interval, antenna1, antenna2, channel) key."""
    columns = [np.asarray(c, dtype=np.int64) for c in (interval, antenna1, antenna2, channel)]
    if columns[0].size == 0:
        return SolveSums(*columns, np.zeros(0, complex), np.zeros(0), np.zeros(0), np.zeros(0))
    sizes = [int(c.max()) + 1 for c in columns]
    key = columns[0]
    for column, size in zip(columns[1:], sizes[1:], strict=True):
        key = key * size + column
    unique, inverse = np.unique(key, return_inverse=True)
    m = unique.size
    summed = {}
    for name in VALUES:
        v = values[name]
        summed[name] = np.bincount(inverse, weights=v.real, minlength=m)
        if np.iscomplexobj(v):
            summed[name] = summed[name] + 1j * np.bincount(inverse, weights=v.imag, minlength=m)
    decoded = []
    for size in sizes[:0:-1]:
        unique, rest = np.divmod(unique, size)
        decoded.append(rest)
    interval_u, (channel_u, antenna2_u, antenna1_u) = unique, decoded
    return SolveSums(interval_u, antenna1_u, antenna2_u, channel_u, **summed)


def compress(
    vis: np.ndarray,
    model: np.ndarray,
    weight: np.ndarray,
    *,
    antenna1: np.ndarray,
    antenna2: np.ndarray,
    interval: np.ndarray,
    channel: np.ndarray | None = None,
    flag: np.ndarray | None = None,
) -> SolveSums:
    """Solve sums of one block of data.

    Parameters
    ----------
    vis, model : (nrow, nchan) complex, observed and model visibilities (the model already
        corrupted by any other gain terms that are held fixed).
    weight : (nrow, nchan) data weights (inverse variance).
    antenna1, antenna2 : (nrow,) station indices; autocorrelations are ignored.
    interval : (nrow,) solution interval index of each row.
    channel : (nchan,) solution channel index of each channel (e.g. the global channel number
        for a bandpass); None sums over channels (frequency-independent gains).
    flag : (nrow, nchan) bool, samples to ignore.  Samples with a weight <= 0 or a value that
        is not finite are ignored too.
    """
    w = np.asarray(weight, dtype=np.float64)
    bad = ~(np.isfinite(vis) & np.isfinite(model) & np.isfinite(w) & (w > 0))
    if flag is not None:
        bad |= flag
    w = np.where(bad, 0.0, w)
    vis = np.where(bad, 0.0, vis)
    model = np.where(bad, 0.0, model)
    a = w * vis * np.conj(model)
    b = w * (model.real**2 + model.imag**2)
    c = w * (vis.real**2 + vis.imag**2)
    n = (~bad).astype(np.float64)
    a1 = np.asarray(antenna1, dtype=np.int64)
    a2 = np.asarray(antenna2, dtype=np.int64)
    swap = a1 > a2  # V_qp = conj(V_pq): store every baseline as p < q
    a = np.where(swap[:, None], np.conj(a), a)
    lo, hi = np.minimum(a1, a2), np.maximum(a1, a2)
    if channel is None:
        a, b, c, n = (x.sum(axis=1, keepdims=True) for x in (a, b, c, n))
        chan = np.zeros(1, dtype=np.int64)
    else:
        chan = np.asarray(channel, dtype=np.int64)
    nchan = chan.shape[0]
    rows = np.flatnonzero(a1 != a2)
    rep = np.repeat
    return _reduce(
        rep(np.asarray(interval)[rows], nchan),
        rep(lo[rows], nchan),
        rep(hi[rows], nchan),
        np.tile(chan, rows.size),
        **{name: x[rows].ravel() for name, x in zip(VALUES, (a, b, c, n), strict=True)},
    )


def combine_sums(parts: list[SolveSums]) -> SolveSums:
    """Add up the solve sums of several blocks (windows, chunks).

    Two common cases skip the sort of the general case: parts with the same solution cells
    (windows of one observation) are added entry by entry, and parts whose solution intervals
    follow each other without overlap (consecutive time chunks) are concatenated.
    """
    if not parts:
        raise ValueError("combine_sums needs at least one SolveSums")
    first = parts[0]
    if all(all(np.array_equal(getattr(p, k), getattr(first, k)) for k in KEYS) for p in parts[1:]):
        values = {name: getattr(first, name).copy() for name in VALUES}
        for p in parts[1:]:
            for name in VALUES:
                values[name] += getattr(p, name)
        return SolveSums(*(getattr(first, k) for k in KEYS), **values)
    cat = {name: np.concatenate([getattr(p, name) for p in parts]) for name in (*KEYS, *VALUES)}
    used = [p for p in parts if p.size]
    if all(x.interval.max() < y.interval.min() for x, y in zip(used, used[1:], strict=False)):
        return SolveSums(**cat)  # every part is reduced and sorted, and they do not overlap
    return _reduce(**cat)
