"""Checks that keep gain solutions from diverging: signal-to-noise, outliers, amplitude scale.

Applied by :func:`sdpbatch.science.solve.solve_term` to each batch of solution cells (one cell =
one solution interval and solution channel; ``nsol`` cells of ``nant`` stations):

- **signal-to-noise** of each station's gain from the solve sums alone.  With the residual
  ``chi2 = sum w |V - g_p conj(g_q) M|^2`` of the cell (expanded in the sums ``A``, ``B``,
  ``C = sum w |V|^2``), the noise scale ``s2 = chi2 / (N - K)`` (N complex samples, K complex
  unknowns) makes the weights' absolute scale irrelevant; the gain's variance is
  ``s2 / sum_q B_pq |g_q|^2`` and ``SNR_p = |g_p| sqrt(sum_q B_pq |g_q|^2 / s2)``.  A model that
  misses flux raises ``chi2`` and so lowers the SNR: a bad model is flagged, not fitted.
- **outliers**: amplitudes whose ``log |g|`` lies more than ``sigma`` robust standard
  deviations (1.4826 x the median absolute deviation, at least :data:`OUTLIER_FLOOR`) from the
  median of the stations of their cell, or whose amplitude relative to the median of their cell
  is an outlier among the cells of their station (a spike in time or frequency; the common
  shape of all stations, e.g. the mean bandpass, is not judged).
- **normalisation** to unit mean amplitude over the unflagged stations of each cell, when the
  sky model's flux scale is not to be trusted (self-calibration).
- **statistics** for the quality report (:class:`SolutionStats`).
"""

from __future__ import annotations

import dataclasses
import warnings
from dataclasses import dataclass

import numpy as np

OUTLIER_FLOOR = 0.1
"""Smallest robust spread of ``log |g|`` used by the outlier test: with ``sigma`` 8, amplitudes
within a factor exp(0.8) = 2.2 of the median are never outliers, however alike the others."""

DIVERGED_CHANGE = 1e-3
"""A cell whose last iteration still changed its gains by more than this (relative) did not
settle: its solutions are flagged as diverged."""

REASONS = ("no_data", "low_snr", "diverged", "outlier")
"""Why a solution is flagged; one flagged for several reasons counts under the first."""


@dataclass(frozen=True)
class SolutionStats:
    """Statistics of one solved gain term, for the quality report (``qa.json``).

    Attributes
    ----------
    term : "T", "G" or "B".
    solutions : gain entries (interval x station x solution channel).
    flagged_fraction : fraction of the entries flagged (any reason).
    flagged_no_data, flagged_low_snr, flagged_diverged, flagged_outlier : entries flagged
        for each reason (each counted once, under the first reason in that order).
    amplitude_spread : standard deviation of ``|g|`` over the unflagged entries divided by
        their mean (0 when none is left).
    median_snr : median signal-to-noise of the unflagged entries (0 when none is left).
    iterations : the most iterations any cell took.
    converged : every cell with data met the tolerance.
    reference : the station whose phase is zero.
    normalised : amplitudes normalised to unit mean per cell (no flux scale trusted).
    """

    term: str
    solutions: int
    flagged_fraction: float
    flagged_no_data: int
    flagged_low_snr: int
    flagged_diverged: int
    flagged_outlier: int
    amplitude_spread: float
    median_snr: float
    iterations: int
    converged: bool
    reference: int
    normalised: bool

    def as_dict(self) -> dict[str, str | int | float | bool]:
        """Plain values for JSON."""
        return dataclasses.asdict(self)


def solution_snr(
    a: np.ndarray,
    b: np.ndarray,
    c: np.ndarray,
    n: np.ndarray,
    gains: np.ndarray,
    *,
    phase_only: bool,
) -> np.ndarray:
    """Signal-to-noise (nsol, nant) of each gain, 0 where a station has no data.

    Parameters
    ----------
    a : (nsol, nant, nant) complex Hermitian, ``sum w V conj(M)`` (both triangles filled).
    b, c, n : (nsol, nant, nant) symmetric, ``sum w |M|^2``, ``sum w |V|^2``, sample counts.
    gains : (nsol, nant) complex.
    phase_only : the gains have one real unknown per station instead of two.
    """
    gg = gains[:, :, None] * np.conj(gains[:, None, :])
    chi2 = 0.5 * np.sum(c - 2.0 * np.real(np.conj(gg) * a) + (gg.real**2 + gg.imag**2) * b, (1, 2))
    samples = 0.5 * n.sum(axis=(1, 2))
    info = np.einsum("spq,sq->sp", b, gains.real**2 + gains.imag**2)
    stations = (info > 0).sum(axis=1)
    dof = samples - stations * (0.5 if phase_only else 1.0)
    floor = 1e-24 * 0.5 * c.sum(axis=(1, 2)) / np.maximum(samples, 1.0)
    with np.errstate(divide="ignore", invalid="ignore"):
        s2 = np.where(dof > 0, np.maximum(chi2, 0.0) / dof, np.inf)
        s2 = np.maximum(s2, floor)
        snr = np.abs(gains) * np.sqrt(np.where(info > 0, info, 0.0) / s2[:, None])
    return np.where(np.isfinite(snr), snr, 0.0)


def amplitude_outliers(
    gains: np.ndarray, flags: np.ndarray, *, axis: int | tuple[int, ...], sigma: float
) -> np.ndarray:
    """Unflagged gains whose ``log |g|`` is an outlier along ``axis`` (bool, gains' shape).

    The centre is the median over the unflagged entries along ``axis``, the spread
    1.4826 x their median absolute deviation, at least :data:`OUTLIER_FLOOR`; an entry is an
    outlier beyond ``sigma`` spreads.  Groups with fewer than three unflagged entries are not
    judged.
    """
    ok = ~flags & (np.abs(gains) > 0) & np.isfinite(gains)
    log_amp = np.where(ok, np.log(np.where(ok, np.abs(gains), 1.0)), np.nan)
    enough = ok.sum(axis=axis, keepdims=True) >= 3
    with warnings.catch_warnings(action="ignore", category=RuntimeWarning):
        centre = np.nanmedian(log_amp, axis=axis, keepdims=True)
        spread = 1.4826 * np.nanmedian(np.abs(log_amp - centre), axis=axis, keepdims=True)
    spread = np.maximum(np.nan_to_num(spread), OUTLIER_FLOOR)
    deviation = np.abs(np.nan_to_num(log_amp - centre))
    return ok & enough & (deviation > sigma * spread)


def relative_amplitudes(gains: np.ndarray, flags: np.ndarray) -> np.ndarray:
    """``|g|`` (..., nant) divided by the median ``|g|`` of the unflagged stations of its cell
    (NaN where flagged or where a cell has no unflagged station)."""
    amp = np.where(flags, np.nan, np.abs(gains))
    with warnings.catch_warnings(action="ignore", category=RuntimeWarning):
        return amp / np.nanmedian(amp, axis=-1, keepdims=True)


def normalise_amplitudes(gains: np.ndarray, flags: np.ndarray) -> np.ndarray:
    """``gains`` (..., nant) divided per cell by the mean ``|g|`` of its unflagged stations.

    Cells with no unflagged station are returned unchanged.
    """
    amp = np.where(flags, 0.0, np.abs(gains))
    count = (~flags).sum(axis=-1, keepdims=True)
    total = amp.sum(axis=-1, keepdims=True)
    mean = np.divide(total, count, out=np.ones_like(total), where=count > 0)
    mean = np.where(mean > 0, mean, 1.0)
    return gains / mean


def choose_reference(flags: np.ndarray, preferred: int) -> int:
    """The reference station: ``preferred`` unless another has more unflagged solutions.

    ``flags`` (nint, nant, nfreq).
    """
    good = (~flags).sum(axis=(0, 2))
    if good[preferred] == good.max():
        return int(preferred)
    return int(np.argmax(good))


def solution_stats(
    term: str,
    gains: np.ndarray,
    reasons: np.ndarray,
    snr: np.ndarray,
    *,
    iterations: int,
    converged: bool,
    reference: int,
    normalised: bool,
) -> SolutionStats:
    """The :class:`SolutionStats` of a term; ``reasons`` holds 0 for unflagged entries, else
    1 + the index in :data:`REASONS`."""
    ok = reasons == 0
    amp = np.abs(gains[ok])
    mean = float(amp.mean()) if amp.size else 0.0
    counts = {r: int(np.sum(reasons == k + 1)) for k, r in enumerate(REASONS)}
    return SolutionStats(
        term=term,
        solutions=int(gains.size),
        flagged_fraction=float(1.0 - ok.mean()) if gains.size else 0.0,
        flagged_no_data=counts["no_data"],
        flagged_low_snr=counts["low_snr"],
        flagged_diverged=counts["diverged"],
        flagged_outlier=counts["outlier"],
        amplitude_spread=float(amp.std() / mean) if mean > 0 else 0.0,
        median_snr=float(np.median(snr[ok])) if ok.any() else 0.0,
        iterations=int(iterations),
        converged=bool(converged),
        reference=int(reference),
        normalised=bool(normalised),
    )
