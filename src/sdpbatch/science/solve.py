"""Per-station complex gain solutions with StEFCal (Salvini & Wijnholds 2014).

Convention: the solved gains model the corruption, ``DATA_pq ~= g_p conj(g_q) MODEL_pq`` with
p = antenna1; data are corrected as ``DATA_pq / (g_p conj(g_q))`` (for phase-only gains,
``DATA_pq conj(g_p) g_q``).  Phases are referenced to station 0.

The data are first compressed (:func:`compress`) to per (solution interval, baseline[, channel])
sums ``A = sum w V conj(M)`` and ``B = sum w |M|^2``.  They are the sufficient statistics of the
least-squares problem for a gain constant over the summed samples, and they add up across rows,
channels and frequency windows (:func:`combine_sums`), so every window computes its own sums
where its data live and only these small arrays meet for the solve (:func:`solve_gains`).

Solution terms as in the seed's library: "T" phase-only per integration, "G" amplitude and phase
per interval (``timeslice_G`` seconds or the whole observation), "B" amplitude and phase per
channel over the whole observation.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

SOLUTION_TERMS = ("T", "G", "B")


@dataclass(frozen=True)
class TermSpec:
    """How one gain term is solved: phase-only or not, per channel or not."""

    phase_only: bool
    per_channel: bool


TERMS: dict[str, TermSpec] = {
    "T": TermSpec(phase_only=True, per_channel=False),
    "G": TermSpec(phase_only=False, per_channel=False),
    "B": TermSpec(phase_only=False, per_channel=True),
}


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
    """

    interval: np.ndarray
    antenna1: np.ndarray
    antenna2: np.ndarray
    channel: np.ndarray
    a: np.ndarray
    b: np.ndarray

    @property
    def size(self) -> int:
        return int(self.a.shape[0])


def _reduce(
    interval: np.ndarray,
    antenna1: np.ndarray,
    antenna2: np.ndarray,
    channel: np.ndarray,
    a: np.ndarray,
    b: np.ndarray,
) -> SolveSums:
    """Sum entries with the same (interval, antenna1, antenna2, channel) key."""
    columns = [np.asarray(c, dtype=np.int64) for c in (interval, antenna1, antenna2, channel)]
    if columns[0].size == 0:
        return SolveSums(*columns, np.zeros(0, complex), np.zeros(0))
    sizes = [int(c.max()) + 1 for c in columns]
    key = columns[0]
    for column, size in zip(columns[1:], sizes[1:], strict=True):
        key = key * size + column
    unique, inverse = np.unique(key, return_inverse=True)
    n = unique.size
    a_sum = np.bincount(inverse, weights=a.real, minlength=n) + 1j * np.bincount(
        inverse, weights=a.imag, minlength=n
    )
    b_sum = np.bincount(inverse, weights=b, minlength=n)
    decoded = []
    for size in sizes[:0:-1]:
        unique, rest = np.divmod(unique, size)
        decoded.append(rest)
    interval_u, (channel_u, antenna2_u, antenna1_u) = unique, decoded
    return SolveSums(interval_u, antenna1_u, antenna2_u, channel_u, a_sum, b_sum)


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
    flag : (nrow, nchan) bool, samples to ignore.
    """
    w = np.asarray(weight, dtype=np.float64)
    if flag is not None:
        w = np.where(flag, 0.0, w)
    cross = np.asarray(antenna1) != np.asarray(antenna2)
    a = w * vis * np.conj(model)
    b = w * (model.real**2 + model.imag**2)
    a1 = np.asarray(antenna1, dtype=np.int64)
    a2 = np.asarray(antenna2, dtype=np.int64)
    swap = a1 > a2  # V_qp = conj(V_pq): store every baseline as p < q
    a = np.where(swap[:, None], np.conj(a), a)
    lo, hi = np.minimum(a1, a2), np.maximum(a1, a2)
    if channel is None:
        a, b = a.sum(axis=1, keepdims=True), b.sum(axis=1, keepdims=True)
        chan = np.zeros(1, dtype=np.int64)
    else:
        chan = np.asarray(channel, dtype=np.int64)
    nchan = chan.shape[0]
    rows = np.flatnonzero(cross)
    rep = np.repeat
    return _reduce(
        rep(np.asarray(interval)[rows], nchan),
        rep(lo[rows], nchan),
        rep(hi[rows], nchan),
        np.tile(chan, rows.size),
        a[rows].ravel(),
        b[rows].ravel(),
    )


def combine_sums(parts: list[SolveSums]) -> SolveSums:
    """Add up the solve sums of several blocks (windows, chunks).

    Two common cases skip the sort of the general case: parts with the same solution cells
    (windows of one observation) are added entry by entry, and parts whose solution intervals
    follow each other without overlap (consecutive time chunks) are concatenated.
    """
    if not parts:
        raise ValueError("combine_sums needs at least one SolveSums")
    keys = ("interval", "antenna1", "antenna2", "channel")
    first = parts[0]
    if all(all(np.array_equal(getattr(p, k), getattr(first, k)) for k in keys) for p in parts[1:]):
        a, b = first.a.copy(), first.b.copy()
        for p in parts[1:]:
            a += p.a
            b += p.b
        return SolveSums(first.interval, first.antenna1, first.antenna2, first.channel, a, b)
    cat = {name: np.concatenate([getattr(p, name) for p in parts]) for name in (*keys, "a", "b")}
    used = [p for p in parts if p.size]
    if all(x.interval.max() < y.interval.min() for x, y in zip(used, used[1:], strict=False)):
        return SolveSums(**cat)  # every part is reduced and sorted, and they do not overlap
    return _reduce(**cat)


def stefcal(
    a: np.ndarray,
    b: np.ndarray,
    initial: np.ndarray,
    *,
    phase_only: bool,
    max_iterations: int = 500,
    tolerance: float = 1e-12,
) -> tuple[np.ndarray, int]:
    """StEFCal for a batch of independent solutions.

    Parameters
    ----------
    a : (nsol, nant, nant) complex Hermitian, ``A[p, q] = sum w V_pq conj(M_pq)``.
    b : (nsol, nant, nant) real symmetric, ``B[p, q] = sum w |M_pq|^2``.
    initial : (nsol, nant) complex starting gains.
    phase_only : keep |g| = 1.

    Each iteration sets ``g_p = sum_q A_pq g_q / sum_q B_pq |g_q|^2`` (the least-squares gain of
    station p with the others fixed), or its phase for phase-only gains, and averages every
    second iteration with the previous one (Salvini & Wijnholds 2014).  Stations without data
    keep their initial gain.  Returns (gains, iterations used).
    """
    g = np.array(initial, dtype=np.complex128)
    if phase_only:
        g = _unit(g, np.ones_like(g))
    has_data = b.sum(axis=2) > 0
    iteration = 0
    for iteration in range(1, max_iterations + 1):
        num = np.einsum("spq,sq->sp", a, g)
        if phase_only:
            new = _unit(num, g)
        else:
            den = np.einsum("spq,sq->sp", b, g.real**2 + g.imag**2)
            with np.errstate(divide="ignore", invalid="ignore"):
                new = np.where(den > 0, num / den, g)
        new = np.where(has_data, new, g)
        if iteration % 2 == 0:
            new = 0.5 * (new + g)
            if phase_only:
                new = _unit(new, g)
        change = np.max(np.abs(new - g)) / max(np.max(np.abs(new)), 1e-300)
        g = new
        if change < tolerance:
            break
    return g, iteration


def _unit(z: np.ndarray, fallback: np.ndarray) -> np.ndarray:
    """z / |z|, with ``fallback`` where z == 0."""
    mag = np.abs(z)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(mag > 0, z / mag, fallback)


def reference_phases(gains: np.ndarray, reference: int = 0) -> np.ndarray:
    """Gains (..., nant, nfreq) rotated so that station ``reference`` has phase zero."""
    ref = gains[..., reference : reference + 1, :]
    mag = np.abs(ref)
    rot = np.where(mag > 0, np.conj(ref) / np.where(mag > 0, mag, 1.0), 1.0)
    return gains * rot


def solve_gains(
    sums: SolveSums,
    *,
    term: str,
    initial: np.ndarray,
    reference: int = 0,
    max_iterations: int = 500,
    tolerance: float = 1e-12,
    max_batch_bytes: int = 64 * 2**20,
) -> np.ndarray:
    """Solve one gain term from its combined sums.

    Parameters
    ----------
    sums : the combined :class:`SolveSums` of all data.
    term : "T" (phase-only), "G" or "B" (amplitude and phase).
    initial : (nint, nant, nfreq) complex starting gains (e.g. the previous solution); its shape
        sets the number of intervals, stations and solution channels.

    Returns gains (nint, nant, nfreq) complex with ``DATA ~= g_p conj(g_q) MODEL``, phases
    referenced to station ``reference``.  Solutions without data keep their initial value.
    """
    if term not in TERMS:
        raise ValueError(f"gain term {term!r} is not known; allowed: {', '.join(SOLUTION_TERMS)}")
    spec = TERMS[term]
    initial = np.asarray(initial, dtype=np.complex128)
    nint, nant, nfreq = initial.shape
    if sums.size and (
        sums.interval.max() >= nint or sums.channel.max() >= nfreq or sums.antenna2.max() >= nant
    ):
        raise ValueError(
            f"solve sums do not fit gains of shape {initial.shape} (intervals, stations, channels)"
        )
    gains = initial.copy()
    cell = sums.interval * nfreq + sums.channel  # solution cell of each entry
    cells = np.unique(cell)
    batch = max(1, max_batch_bytes // (24 * nant * nant))
    for start in range(0, cells.size, batch):
        chunk = cells[start : start + batch]
        pick = np.isin(cell, chunk)
        slot = np.searchsorted(chunk, cell[pick])
        p, q = sums.antenna1[pick], sums.antenna2[pick]
        a = np.zeros((chunk.size, nant, nant), dtype=np.complex128)
        b = np.zeros((chunk.size, nant, nant))
        a[slot, p, q] = sums.a[pick]
        a[slot, q, p] = np.conj(sums.a[pick])
        b[slot, p, q] = sums.b[pick]
        b[slot, q, p] = sums.b[pick]
        it, ch = np.divmod(chunk, nfreq)
        solved, _ = stefcal(
            a,
            b,
            initial[it, :, ch],
            phase_only=spec.phase_only,
            max_iterations=max_iterations,
            tolerance=tolerance,
        )
        gains[it, :, ch] = solved
    return reference_phases(gains, reference)


# --- solution intervals and applying gains -------------------------------------------------------


def solution_intervals(times: np.ndarray, interval: float | None) -> tuple[np.ndarray, np.ndarray]:
    """Solution intervals over the observation's distinct ``times`` (s).

    ``interval`` 0 gives one interval per integration, None one interval for the whole
    observation, > 0 consecutive intervals of that many seconds from the first time.
    Returns (boundaries (nint+1,) with -inf/+inf at the ends, centres (nint,)): rows with
    ``boundaries[k] <= time < boundaries[k+1]`` belong to interval k.
    """
    t = np.unique(np.asarray(times, dtype=np.float64))
    if t.size == 0:
        raise ValueError("solution_intervals: no times")
    if interval is None:
        return np.array([-np.inf, np.inf]), np.array([t.mean()])
    if interval == 0:
        inner = 0.5 * (t[1:] + t[:-1])
        return np.concatenate([[-np.inf], inner, [np.inf]]), t
    if interval < 0:
        raise ValueError(f"solution interval must be >= 0 s or None, got {interval}")
    index = np.floor((t - t[0]) / interval).astype(np.int64)
    used = np.unique(index)
    starts = t[0] + used * interval
    boundaries = np.concatenate([[-np.inf], starts[1:], [np.inf]])
    centres = np.array([t[index == k].mean() for k in used])
    return boundaries, centres


def interval_index(times: np.ndarray, boundaries: np.ndarray) -> np.ndarray:
    """(nrow,) interval index of each time for :func:`solution_intervals` boundaries."""
    return np.searchsorted(boundaries, np.asarray(times), side="right") - 1


def baseline_gains(
    gains: np.ndarray,
    *,
    interval: np.ndarray,
    antenna1: np.ndarray,
    antenna2: np.ndarray,
    channel: np.ndarray,
) -> np.ndarray:
    """``g_p conj(g_q)`` (nrow, nchan) for each row and channel.

    gains : (nint, nant, nfreq); interval : (nrow,) interval index of each row;
    channel : (nchan,) solution channel index of each data channel (all 0 for a
    frequency-independent term).
    """
    gp = gains[interval[:, None], np.asarray(antenna1)[:, None], channel[None, :]]
    gq = gains[interval[:, None], np.asarray(antenna2)[:, None], channel[None, :]]
    return gp * np.conj(gq)


def correct(vis: np.ndarray, baseline_gain: np.ndarray) -> np.ndarray:
    """Corrected visibilities ``vis / (g_p conj(g_q))`` (zero where the gain product is zero)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(baseline_gain != 0, vis / baseline_gain, 0.0)


# --- the phase gradient self-calibration cannot determine -----------------------------------------


def anchor_phase_gradient(
    gains: np.ndarray, anchor: np.ndarray, positions: np.ndarray
) -> np.ndarray:
    """``gains`` with the linear phase gradient of ``gains / anchor`` across stations removed.

    Self-calibration cannot determine a phase gradient across the array (it shifts the image
    and the model with it).  Once a calibration against a sky model has fixed it (``anchor``),
    later solutions keep its gradient: per solution interval and channel, the plane
    ``b . (position - centroid)`` fitted to the phase of ``gains conj(anchor)`` is taken out.
    The constant phase is kept.  ``gains`` (nint, nant, nfreq); ``anchor`` broadcastable to
    it; ``positions`` (nant, 3) metres (any Cartesian frame: ITRF or local).
    """
    gains = np.asarray(gains, dtype=np.complex128)
    diff = gains * np.conj(np.broadcast_to(anchor, gains.shape))
    ok = np.isfinite(diff) & (np.abs(diff) > 0)
    phase = np.angle(np.where(ok, diff, 1.0))  # (nint, nant, nfreq)
    pos = np.asarray(positions, dtype=np.float64)
    rel = pos - pos.mean(axis=0)
    design = np.column_stack([np.ones(pos.shape[0]), rel])
    out = gains.copy()
    for t in range(gains.shape[0]):
        for f in range(gains.shape[2]):
            use = ok[t, :, f]
            if use.sum() < design.shape[1] + 1:
                continue
            coef = np.linalg.lstsq(design[use], phase[t, use, f], rcond=1e-9)[0]
            out[t, :, f] *= np.exp(-1j * (rel @ coef[1:]))
    return out
