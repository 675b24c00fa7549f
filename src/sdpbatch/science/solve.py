"""Per-station complex gain solutions with StEFCal (Salvini & Wijnholds 2014).

Convention: the solved gains model the corruption, ``DATA_pq ~= g_p conj(g_q) MODEL_pq`` with
p = antenna1; data are corrected as ``DATA_pq / (g_p conj(g_q))`` (for phase-only gains,
``DATA_pq conj(g_p) g_q``).  Phases are referenced to one station (0 unless it is flagged).

The data are first compressed to solve sums (:mod:`sdpbatch.science.solve_sums`), which add up
across rows, channels and windows; only these small arrays meet for the solve
(:func:`solve_term`).  The solve is damped StEFCal with a convergence test, followed by the
checks of :mod:`sdpbatch.science.solution_checks` (signal-to-noise, outliers, normalisation):
flagged solutions get a fallback gain and are reported in :class:`GainSolution`.

Solution terms as in the seed's library: "T" phase-only per integration, "G" amplitude and phase
per interval (``timeslice_G`` seconds or the whole observation), "B" amplitude and phase per
channel over the whole observation.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from sdpbatch.science.solution_checks import (
    DIVERGED_CHANGE,
    REASONS,
    SolutionStats,
    amplitude_outliers,
    choose_reference,
    normalise_amplitudes,
    relative_amplitudes,
    solution_snr,
    solution_stats,
)
from sdpbatch.science.solve_sums import (
    VALUES,
    SolveSums,
    accumulate,
    combine_sums,
    compress,
    row_slices,
)

__all__ = [  # the sums are defined in solve_sums and used through this module
    "SolveSums", "accumulate", "combine_sums", "compress", "row_slices",
    "GainSolution", "SolutionStats", "TERMS",
    "SOLUTION_TERMS", "baseline_flags", "baseline_gains", "correct",
    "interval_index", "reference_phases", "solution_intervals", "solve_gains", "solve_term",
    "stefcal",
]  # fmt: skip

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


def stefcal(
    a: np.ndarray,
    b: np.ndarray,
    initial: np.ndarray,
    *,
    phase_only: bool,
    step: float = 0.5,
    max_iterations: int = 500,
    tolerance: float = 1e-12,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Damped StEFCal for a batch of independent solutions.

    Parameters
    ----------
    a : (nsol, nant, nant) complex Hermitian, ``A[p, q] = sum w V_pq conj(M_pq)``.
    b : (nsol, nant, nant) real symmetric, ``B[p, q] = sum w |M_pq|^2``.
    initial : (nsol, nant) complex starting gains.
    phase_only : keep |g| = 1.
    step : each iteration moves the gains this fraction of the way to the new estimate
        (0 < step <= 1).  The undamped update overshoots the solution by about as much as
        the error (Salvini & Wijnholds 2014), so 0.5 cancels that to first order.
    max_iterations, tolerance : a cell stops once the largest change of its gains relative
        to its largest gain falls below ``tolerance``.

    Each iteration sets ``g_p = sum_q A_pq g_q / sum_q B_pq |g_q|^2`` (the least-squares gain of
    station p with the others fixed), or its phase for phase-only gains.  Stations without data
    keep their initial gain.  Returns gains (nsol, nant), iterations (nsol,) int and the last
    relative change (nsol,) of each cell (``< tolerance`` if it converged).
    """
    if not 0.0 < step <= 1.0:
        raise ValueError(f"stefcal step must be in (0, 1], got {step}")
    g = np.array(initial, dtype=np.complex128)
    g = np.where(np.isfinite(g) & (g != 0), g, 1.0)
    if phase_only:
        g = _unit(g, np.ones_like(g))
    nsol = g.shape[0]
    has_data = b.sum(axis=2) > 0
    iterations = np.zeros(nsol, dtype=np.int64)
    change = np.zeros(nsol)
    active = np.flatnonzero(has_data.any(axis=1))
    sub_a, sub_b, sub_data = a[active], b[active], has_data[active]
    for iteration in range(1, max_iterations + 1):
        if active.size == 0:
            break
        old = g[active]
        new = _stefcal_update(sub_a, sub_b, old, phase_only)
        new = np.where(sub_data, old + step * (new - old), old)
        if phase_only:
            new = _unit(new, old)
        delta = np.max(np.abs(new - old), axis=1) / np.maximum(np.max(np.abs(new), axis=1), 1e-300)
        g[active] = new
        iterations[active] = iteration
        change[active] = delta
        done = ~(delta >= tolerance)  # converged, or not finite (flagged by the caller)
        if done.any():
            keep = ~done
            active, sub_a, sub_b, sub_data = active[keep], sub_a[keep], sub_b[keep], sub_data[keep]
    return g, iterations, change


def _stefcal_update(a: np.ndarray, b: np.ndarray, g: np.ndarray, phase_only: bool) -> np.ndarray:
    num = np.einsum("spq,sq->sp", a, g)
    if phase_only:
        return _unit(num, g)
    den = np.einsum("spq,sq->sp", b, g.real**2 + g.imag**2)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(den > 0, num / den, g)


def _unit(z: np.ndarray, fallback: np.ndarray) -> np.ndarray:
    """z / |z|, with ``fallback`` where z == 0."""
    mag = np.abs(z)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(mag > 0, z / mag, fallback)


def reference_phases(
    gains: np.ndarray, reference: int = 0, flags: np.ndarray | None = None
) -> np.ndarray:
    """Gains (..., nant, nfreq) rotated so that station ``reference`` has phase zero.

    With ``flags`` (gains' shape), flagged gains are left as they are, and so are cells whose
    reference gain is flagged.
    """
    ref = gains[..., reference : reference + 1, :]
    mag = np.abs(ref)
    ok = mag > 0
    if flags is not None:
        ok = ok & ~flags[..., reference : reference + 1, :]
    rot = np.where(ok, np.conj(ref) / np.where(ok, mag, 1.0), 1.0)
    if flags is None:
        return gains * rot
    return np.where(flags, gains, gains * rot)


@dataclass(frozen=True)
class GainSolution:
    """One solved gain term.

    Attributes
    ----------
    gains : (nint, nant, nfreq) complex, ``DATA ~= g_p conj(g_q) MODEL``; flagged entries hold
        the fallback gain.
    flags : (nint, nant, nfreq) bool, solutions that must not be trusted (no data, low
        signal-to-noise, outlier, diverged).
    snr : (nint, nant, nfreq) float, signal-to-noise of each solution (0 without data).
    stats : the term's statistics for the quality report.
    """

    gains: np.ndarray
    flags: np.ndarray
    snr: np.ndarray
    stats: SolutionStats


MIN_SNR = 3.0
"""Default minimum signal-to-noise of a solution (CASA gaincal's ``minsnr``)."""

OUTLIER_SIGMA = 8.0
"""Default outlier threshold, in robust standard deviations of ``log |g|``: with 30 %
amplitude scatter a station is an outlier beyond a factor ~11 from the median (the robust
spread of 30 stations is itself uncertain by ~25 %, so a genuine 3-sigma station must not be
caught); with alike stations, beyond a factor exp(8 x 0.1) = 2.2 (:data:`OUTLIER_FLOOR`)."""


def _starting_gains(
    sums: SolveSums, initial: np.ndarray, fallback: np.ndarray | None
) -> tuple[np.ndarray, np.ndarray]:
    """(initial, fallback) gains as complex arrays that fit ``sums``; fallback finite."""
    initial = np.asarray(initial, dtype=np.complex128)
    _check_fit(sums, initial.shape)
    fallback = initial if fallback is None else np.asarray(fallback, dtype=np.complex128)
    return initial, np.where(np.isfinite(fallback), fallback, 1.0)


def solve_term(
    sums: SolveSums,
    *,
    term: str,
    initial: np.ndarray,
    normalise: bool,
    fallback: np.ndarray | None = None,
    min_snr: float = MIN_SNR,
    outlier_sigma: float = OUTLIER_SIGMA,
    step: float = 0.5,
    reference: int = 0,
    max_iterations: int = 500,
    tolerance: float = 1e-10,
    max_batch_bytes: int = 64 * 2**20,
) -> GainSolution:
    """Solve one gain term from its combined sums, with the checks that keep it sane.

    Parameters
    ----------
    sums : the combined :class:`SolveSums` of all data.
    term : "T" (phase-only), "G" or "B" (amplitude and phase).
    initial : (nint, nant, nfreq) complex starting gains (e.g. the previous solution); its shape
        sets the number of intervals, stations and solution channels.
    normalise : amplitudes to unit mean over the unflagged stations of each (interval, channel)
        (self-calibration); False keeps the model's flux scale (a catalogue's).
    fallback : (nint, nant, nfreq) gains given to flagged solutions; default ``initial``
        (pass ones to leave flagged stations uncorrected).
    min_snr : solutions below this signal-to-noise are flagged (0 flags none).
    outlier_sigma : amplitudes beyond this many robust standard deviations are flagged among a
        cell's stations (the cell is solved again without them) and a station's cells (inf: none).
    step, max_iterations, tolerance : of :func:`stefcal`.
    reference : the preferred reference station (another is taken if it has fewer unflagged
        solutions than the best station).
    max_batch_bytes : memory of the cells solved together.
    """
    spec = _term_spec(term)
    initial, fallback = _starting_gains(sums, initial, fallback)
    checks = _Checks(spec.phase_only, min_snr, outlier_sigma, step, max_iterations, tolerance)
    gains, snr, reasons, iterations, converged = _solve_all_cells(
        sums, initial, checks, max_batch_bytes
    )
    if outlier_sigma < np.inf:
        reasons[_station_outliers(gains, reasons > 0, outlier_sigma)] = 1 + REASONS.index("outlier")
    flags = reasons > 0
    normalised = normalise and not spec.phase_only
    if normalised:  # over the stations of each (interval, channel)
        gains = normalise_amplitudes(gains.swapaxes(1, 2), flags.swapaxes(1, 2)).swapaxes(1, 2)
    ref = choose_reference(flags, reference)
    gains = np.where(flags, fallback, reference_phases(gains, ref, flags))
    stats = solution_stats(
        term,
        gains,
        reasons,
        snr,
        iterations=iterations,
        converged=converged,
        reference=ref,
        normalised=normalised,
    )
    return GainSolution(gains=gains, flags=flags, snr=snr, stats=stats)


def _solve_all_cells(sums: SolveSums, initial: np.ndarray, checks, max_batch_bytes: int):
    """(gains, snr, flag reasons, most iterations, all converged) of every solution cell,
    batch by batch; cells without data keep ``initial`` with reason "no data"."""
    nint, nant, nfreq = initial.shape
    gains = initial.copy()
    snr = np.zeros(initial.shape)
    reasons = np.full(initial.shape, 1, dtype=np.int8)  # no data until solved
    iterations, converged = 0, True
    for cells, dense in _batches(sums, nant, nfreq, max_batch_bytes):
        it, ch = np.divmod(cells, nfreq)
        g, s, r, used, ok = _solve_cells(dense, initial[it, :, ch], checks)
        gains[it, :, ch], snr[it, :, ch], reasons[it, :, ch] = g, s, r
        iterations, converged = max(iterations, used), converged and ok
    return gains, snr, reasons, iterations, converged


def _station_outliers(gains: np.ndarray, flagged: np.ndarray, sigma: float) -> np.ndarray:
    """Cells whose relative amplitude is far from the station's other cells (mask)."""
    relative = relative_amplitudes(gains.transpose(0, 2, 1), flagged.transpose(0, 2, 1))
    relative = np.nan_to_num(relative.transpose(0, 2, 1), nan=0.0)
    return amplitude_outliers(relative, flagged, axis=(0, 2), sigma=sigma)


def _term_spec(term: str) -> TermSpec:
    if term not in TERMS:
        raise ValueError(f"gain term {term!r} is not known; allowed: {', '.join(SOLUTION_TERMS)}")
    return TERMS[term]


def _check_fit(sums: SolveSums, shape: tuple[int, ...]) -> None:
    nint, nant, nfreq = shape
    if sums.size and (
        sums.interval.max() >= nint or sums.channel.max() >= nfreq or sums.antenna2.max() >= nant
    ):
        raise ValueError(
            f"solve sums do not fit gains of shape {shape} (intervals, stations, channels)"
        )


def _batches(sums: SolveSums, nant: int, nfreq: int, max_bytes: int):
    """Yield (cells, dense sums) for batches of solution cells: ``dense`` maps a, b, c, n to
    (ncell, nant, nant) arrays with both triangles filled."""
    cell = sums.interval * nfreq + sums.channel  # solution cell of each entry
    cells = np.unique(cell)
    batch = max(1, max_bytes // (40 * nant * nant))
    for start in range(0, cells.size, batch):
        chunk = cells[start : start + batch]
        pick = np.isin(cell, chunk)
        slot = np.searchsorted(chunk, cell[pick])
        p, q = sums.antenna1[pick], sums.antenna2[pick]
        dense = {}
        for name in VALUES:
            value = getattr(sums, name)[pick]
            m = np.zeros((chunk.size, nant, nant), dtype=value.dtype)
            m[slot, p, q] = value
            m[slot, q, p] = np.conj(value) if np.iscomplexobj(value) else value
            dense[name] = m
        yield chunk, dense


@dataclass(frozen=True)
class _Checks:
    """How :func:`_solve_cells` solves and judges a batch (the arguments of solve_term)."""

    phase_only: bool
    min_snr: float
    outlier_sigma: float
    step: float
    max_iterations: int
    tolerance: float


def _solve_cells(dense: dict[str, np.ndarray], initial: np.ndarray, checks: _Checks):
    """Solve a batch of cells; flag, drop the outlier stations and solve once more if any.

    Returns gains, snr, reasons (0 = good, else 1 + index in REASONS), the most iterations
    taken, and whether every cell converged.
    """
    phase_only, outlier_sigma = checks.phase_only, checks.outlier_sigma
    most, all_converged = 0, True
    dropped = np.zeros(initial.shape, dtype=bool)
    for _ in range(2):
        g, iterations, change = stefcal(
            dense["a"],
            dense["b"],
            initial,
            phase_only=phase_only,
            step=checks.step,
            max_iterations=checks.max_iterations,
            tolerance=checks.tolerance,
        )
        has_data = dense["b"].sum(axis=2) > 0
        snr = solution_snr(**dense, gains=g, phase_only=phase_only)
        most = max(most, int(iterations.max(initial=0)))
        converged = (change < checks.tolerance) | ~has_data.any(axis=1)
        all_converged = all_converged and bool(np.all(converged))
        reasons = np.zeros(g.shape, dtype=np.int8)
        diverged = ~(change <= DIVERGED_CHANGE)[:, None] | ~np.isfinite(g)
        for name, bad in (
            ("diverged", diverged),
            ("low_snr", snr < checks.min_snr),
            ("no_data", ~has_data),
        ):  # the last set wins: an entry keeps its first reason in REASONS
            reasons[bad] = 1 + REASONS.index(name)
        reasons[dropped] = 1 + REASONS.index("outlier")
        if outlier_sigma == np.inf or phase_only:
            break
        outliers = amplitude_outliers(g, reasons > 0, axis=1, sigma=outlier_sigma)
        reasons[outliers] = 1 + REASONS.index("outlier")
        if dropped.any() or not outliers.any():
            break
        dropped = outliers  # solve again without them
        drop = outliers[:, :, None] | outliers[:, None, :]
        dense = {name: np.where(drop, 0, m) for name, m in dense.items()}
    g = np.where(np.isfinite(g), g, 1.0)
    return g, snr, reasons, most, all_converged


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
    """The gains of :func:`solve_term` without its checks (no normalisation, no SNR or
    outlier flags; solutions without data keep ``initial``): the interface of the driver
    until it takes the :class:`GainSolution`.  Returns (nint, nant, nfreq) complex.
    """
    return solve_term(
        sums,
        term=term,
        initial=initial,
        normalise=False,
        min_snr=0.0,
        outlier_sigma=np.inf,
        reference=reference,
        max_iterations=max_iterations,
        tolerance=tolerance,
        max_batch_bytes=max_batch_bytes,
    ).gains


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
    gp = gains[interval, np.asarray(antenna1)]  # (nrow, nfreq)
    gq = gains[interval, np.asarray(antenna2)]
    return (gp * np.conj(gq))[:, np.asarray(channel)]


def baseline_flags(
    flags: np.ndarray,
    *,
    interval: np.ndarray,
    antenna1: np.ndarray,
    antenna2: np.ndarray,
    channel: np.ndarray,
) -> np.ndarray:
    """(nrow, nchan) bool: True where either station's solution is flagged.

    flags : (nint, nant, nfreq) of a :class:`GainSolution`; the other arguments as for
    :func:`baseline_gains`.
    """
    fp = flags[interval, np.asarray(antenna1)]  # (nrow, nfreq)
    fq = flags[interval, np.asarray(antenna2)]
    return (fp | fq)[:, np.asarray(channel)]


def correct(vis: np.ndarray, baseline_gain: np.ndarray) -> np.ndarray:
    """Corrected visibilities ``vis / (g_p conj(g_q))`` (zero where the gain product is zero)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(baseline_gain != 0, vis / baseline_gain, 0.0)
