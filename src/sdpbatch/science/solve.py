"""Per-station complex gain solutions with StEFCal (Salvini & Wijnholds 2014).

Convention: the solved gains model the corruption, ``DATA_pq ~= g_p conj(g_q) MODEL_pq`` with
p = antenna1; data are corrected as ``DATA_pq / (g_p conj(g_q))`` (for phase-only gains,
``DATA_pq conj(g_p) g_q``).  Phases are referenced to one station (0 unless it is flagged).

The data are first compressed to solve sums (:mod:`sdpbatch.science.solve_sums`), which add up
across rows, channels and windows; only these small arrays meet for the solve
(:func:`solve_term`).  The solve is damped StEFCal with a convergence test, followed by the
checks of :mod:`sdpbatch.science.solution_checks` (signal-to-noise, outliers, normalisation):
flagged solutions get a fallback gain and are reported in :class:`GainSolution`.

The gain terms ("T" phase-only per integration, "G", "B"; what each solves and over which
intervals) are the one table :data:`sdpbatch.parameters.gain_terms.TERMS`; how the cells are
solved and judged, :class:`SolverOptions` (the schema's ``solve_*`` parameters).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from sdpbatch.parameters.gain_terms import TERMS, GainTerm
from sdpbatch.science.solution_checks import (
    REASONS,
    SolutionStats,
    amplitude_outliers,
    choose_reference,
    normalise_amplitudes,
    relative_amplitudes,
    solution_stats,
)
from sdpbatch.science.solve_cells import (
    CellSolutions,
    SolverOptions,
    join_cells,
    solve_cells,
    stefcal,
)
from sdpbatch.science.solve_sums import (
    SolveSums,
    accumulate,
    combine_sums,
    compress,
    row_slices,
)

__all__ = [  # the sums and cells are defined apart and used through this module
    "SolveSums", "accumulate", "combine_sums", "compress", "row_slices",
    "CellSolutions", "join_cells", "solve_cells", "SolverOptions",
    "GainSolution", "finish_term", "SolutionStats", "TERMS", "GainTerm",
    "baseline_flags", "baseline_gains", "correct",
    "interval_index", "reference_phases", "solution_intervals", "solve_term",
    "stefcal",
]  # fmt: skip


def reference_phases(
    gains: np.ndarray, reference: int, flags: np.ndarray | None = None
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


def solve_term(
    sums: SolveSums,
    *,
    term: str,
    initial: np.ndarray,
    normalise: bool,
    options: SolverOptions,
    fallback: np.ndarray | None = None,
) -> GainSolution:
    """Solve one gain term from its combined sums, with the checks that keep it sane:
    :func:`solve_cells` then :func:`finish_term` (which a cluster runs apart: the cells where
    their data are, the finish where their solutions meet).

    Parameters
    ----------
    sums : the combined :class:`SolveSums` of all data.
    term : "T" (phase-only), "G" or "B" (amplitude and phase).
    initial : (nint, nant, nfreq) complex starting gains (e.g. the previous solution); its shape
        sets the number of intervals, stations and solution channels.
    normalise, fallback : of :func:`finish_term`.
    options : of :func:`solve_cells` and :func:`finish_term`.
    """
    phase_only = _term(term).phase_only
    cells = solve_cells(sums, initial=initial, phase_only=phase_only, options=options)
    return finish_term(
        cells, term=term, initial=initial, normalise=normalise, options=options, fallback=fallback
    )


def finish_term(
    cells: CellSolutions,
    *,
    term: str,
    initial: np.ndarray,
    normalise: bool,
    options: SolverOptions,
    fallback: np.ndarray | None = None,
) -> GainSolution:
    """The term's solution from the solutions of its cells: the checks across cells.

    Parameters
    ----------
    cells : every solved cell of the term (:func:`join_cells` of the parts); cells missing keep
        ``initial`` and are flagged "no data".
    initial : (nint, nant, nfreq) complex, the starting gains the cells were solved from.
    normalise : amplitudes to unit mean over the unflagged stations of each (interval, channel)
        (self-calibration); False keeps the model's flux scale (a catalogue's).
    options : its ``outlier_sigma``: a cell whose relative amplitude lies beyond this many
        robust standard deviations from the station's other cells is flagged (inf: none);
        its ``reference``: the preferred reference station (another is taken if it has fewer
        unflagged solutions than the best station).
    fallback : (nint, nant, nfreq) gains given to flagged solutions; default ``initial``
        (pass ones to leave flagged stations uncorrected).
    """
    spec = _term(term)
    outlier_sigma = options.outlier_sigma
    initial = np.asarray(initial, dtype=np.complex128)
    fallback = initial if fallback is None else np.asarray(fallback, dtype=np.complex128)
    fallback = np.where(np.isfinite(fallback), fallback, 1.0)
    gains, snr, reasons = cells.spread(initial)
    if outlier_sigma < np.inf:
        reasons[_station_outliers(gains, reasons > 0, outlier_sigma)] = 1 + REASONS.index("outlier")
    flags = reasons > 0
    normalised = normalise and not spec.phase_only
    if normalised:  # over the stations of each (interval, channel)
        gains = normalise_amplitudes(gains.swapaxes(1, 2), flags.swapaxes(1, 2)).swapaxes(1, 2)
    ref = choose_reference(flags, options.reference)
    gains = np.where(flags, fallback, reference_phases(gains, ref, flags))
    stats = solution_stats(
        term,
        gains,
        reasons,
        snr,
        iterations=cells.iterations,
        converged=cells.converged,
        reference=ref,
        normalised=normalised,
    )
    return GainSolution(gains=gains, flags=flags, snr=snr, stats=stats)


def _station_outliers(gains: np.ndarray, flagged: np.ndarray, sigma: float) -> np.ndarray:
    """Cells whose relative amplitude is far from the station's other cells (mask)."""
    relative = relative_amplitudes(gains.transpose(0, 2, 1), flagged.transpose(0, 2, 1))
    relative = np.nan_to_num(relative.transpose(0, 2, 1), nan=0.0)
    return amplitude_outliers(relative, flagged, axis=(0, 2), sigma=sigma)


def _term(term: str) -> GainTerm:
    if term not in TERMS:
        raise ValueError(f"gain term {term!r} is not known; allowed: {', '.join(TERMS)}")
    return TERMS[term]


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
    """Corrected visibilities ``vis / (g_p conj(g_q))``: zero where the gain product is zero or
    not finite.  ``baseline_gain`` broadcasts against ``vis`` (e.g. (nrow, nchan, 1) for every
    correlation of a row)."""
    usable = np.isfinite(baseline_gain) & (baseline_gain != 0)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(usable, vis / baseline_gain, 0.0)
