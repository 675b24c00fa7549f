"""Solving the cells of a gain term, each on its own: damped StEFCal and the checks of one cell.

A *cell* is one solution interval and solution channel.  Cells share nothing, so they can be
solved wherever their solve sums are complete (where their data are, on a cluster) and the
results (:class:`CellSolutions`, a few numbers per station) joined afterwards; the checks
across cells (a station's outliers over its cells, the reference station, normalisation) come
after that, in :func:`sdpbatch.science.solve.finish_term`.

Per cell: StEFCal (Salvini & Wijnholds 2014) damped, with a convergence test; the
signal-to-noise of each solution; solutions flagged with a reason (:data:`REASONS`): no data,
low signal-to-noise, diverged, or an amplitude outlier among the cell's stations (the cell is
then solved once more without them).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from sdpbatch.parameters import FIELDS, Parameters
from sdpbatch.science.solution_checks import (
    DIVERGED_CHANGE,
    REASONS,
    amplitude_outliers,
    solution_snr,
)
from sdpbatch.science.solve_sums import VALUES, SolveSums


@dataclass(frozen=True, kw_only=True)
class SolverOptions:
    """How the cells of a term are solved and judged: the schema's ``solve_*`` parameters
    (their defaults are the schema's), the reference station and the memory of a batch.

    tolerance, max_iterations, step : of :func:`stefcal`.
    min_snr : solutions below this signal-to-noise are flagged (0 flags none).
    outlier_sigma : amplitudes beyond this many robust standard deviations of ``log |g|``
        among a cell's stations are flagged and the cell solved again without them, and a
        cell's beyond them from the station's other cells (inf: none).  With 30 % amplitude
        scatter a station is an outlier beyond a factor ~11 from the median at 8 (the robust
        spread of 30 stations is itself uncertain by ~25 %, so a genuine 3-sigma station must
        not be caught); with alike stations, beyond a factor exp(8 x 0.1) = 2.2
        (:data:`~sdpbatch.science.solution_checks.OUTLIER_FLOOR`).
    reference : the preferred reference station (another is taken if it has fewer unflagged
        solutions than the best station).
    max_batch_bytes : memory of the cells solved together (results do not depend on it).
    """

    tolerance: float = FIELDS["solve_tolerance"].default
    max_iterations: int = FIELDS["solve_max_iterations"].default
    step: float = FIELDS["solve_step"].default
    min_snr: float = FIELDS["solve_min_snr"].default
    outlier_sigma: float = FIELDS["solve_outlier_sigma"].default
    reference: int = 0
    max_batch_bytes: int = 64 * 2**20

    @classmethod
    def from_parameters(cls, params: Parameters) -> SolverOptions:
        """The options the parameters ask for (the others at their defaults)."""
        return cls(
            tolerance=params.solve_tolerance,
            max_iterations=params.solve_max_iterations,
            step=params.solve_step,
            min_snr=params.solve_min_snr,
            outlier_sigma=params.solve_outlier_sigma,
        )


NO_DATA = 1 + REASONS.index("no_data")
"""The flag reason of a cell without data (reasons are 0 = good, else 1 + index in REASONS)."""


@dataclass(frozen=True)
class CellSolutions:
    """The solutions of some cells of a term, before the checks across cells.

    Attributes
    ----------
    cells : (ncell,) int, distinct cell indices ``interval * nfreq + channel``.
    gains : (ncell, nant) complex, the solved gains (finite).
    snr : (ncell, nant) float, signal-to-noise of each solution (0 without data).
    reasons : (ncell, nant) int8, 0 = good, else 1 + index in ``REASONS``.
    iterations : the most StEFCal iterations any cell took.
    converged : whether every cell with data converged.
    """

    cells: np.ndarray
    gains: np.ndarray
    snr: np.ndarray
    reasons: np.ndarray
    iterations: int = 0
    converged: bool = True

    @classmethod
    def none(cls, nant: int) -> CellSolutions:
        """No cell solved (for ``nant`` stations)."""
        return cls(
            np.zeros(0, np.int64),
            np.zeros((0, nant), complex),
            np.zeros((0, nant)),
            np.zeros((0, nant), np.int8),
        )

    def spread(self, initial: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(gains, snr, reasons) of shape ``initial`` (nint, nant, nfreq); the cells not solved
        keep ``initial`` with no signal and reason "no data"."""
        nfreq = initial.shape[2]
        gains = np.array(initial, dtype=np.complex128)
        snr = np.zeros(initial.shape)
        reasons = np.full(initial.shape, NO_DATA, dtype=np.int8)
        it, ch = np.divmod(self.cells, nfreq)
        gains[it, :, ch], snr[it, :, ch], reasons[it, :, ch] = self.gains, self.snr, self.reasons
        return gains, snr, reasons


def join_cells(*parts: CellSolutions) -> CellSolutions:
    """The solutions of several sets of distinct cells, as one."""
    cells = np.concatenate([p.cells for p in parts])
    if np.unique(cells).size != cells.size:
        raise ValueError("join_cells: a cell was solved twice (its sums were split)")
    return CellSolutions(
        cells,
        np.concatenate([p.gains for p in parts]),
        np.concatenate([p.snr for p in parts]),
        np.concatenate([p.reasons for p in parts]),
        max(p.iterations for p in parts),
        all(p.converged for p in parts),
    )


def solve_cells(
    sums: SolveSums,
    *,
    initial: np.ndarray,
    phase_only: bool,
    options: SolverOptions,
) -> CellSolutions:
    """Solve every cell that has solve sums, batch by batch.

    Parameters
    ----------
    sums : the complete :class:`SolveSums` of the cells to solve (all their data).
    initial : (nint, nant, nfreq) complex starting gains of the whole term (its shape sets the
        numbers of intervals, stations and solution channels).
    phase_only : keep |g| = 1 (the "T" term).
    options : tolerance, iterations and damping of :func:`stefcal`, the minimum signal-to-noise,
        the outliers among a cell's stations, the memory of a batch.
    """
    initial = np.asarray(initial, dtype=np.complex128)
    _check_fit(sums, initial.shape)
    nant, nfreq = initial.shape[1:]
    parts = [CellSolutions.none(nant)]
    for cells, dense in _batches(sums, nant, nfreq, options.max_batch_bytes):
        it, ch = np.divmod(cells, nfreq)
        solved = _solve_batch(dense, initial[it, :, ch], phase_only, options)
        parts.append(CellSolutions(cells, *solved))
    return join_cells(*parts)


def stefcal(
    a: np.ndarray,
    b: np.ndarray,
    initial: np.ndarray,
    *,
    phase_only: bool,
    options: SolverOptions,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Damped StEFCal for a batch of independent solutions.

    Parameters
    ----------
    a : (nsol, nant, nant) complex Hermitian, ``A[p, q] = sum w V_pq conj(M_pq)``.
    b : (nsol, nant, nant) real symmetric, ``B[p, q] = sum w |M_pq|^2``.
    initial : (nsol, nant) complex starting gains.
    phase_only : keep |g| = 1.
    options : its ``step``: each iteration moves the gains this fraction of the way to the new
        estimate (0 < step <= 1); the undamped update overshoots the solution by about as
        much as the error (Salvini & Wijnholds 2014), so 0.5 cancels that to first order.
        Its ``max_iterations``, ``tolerance``: a cell stops once the largest change of its
        gains relative to its largest gain falls below ``tolerance``.

    Each iteration sets ``g_p = sum_q A_pq g_q / sum_q B_pq |g_q|^2`` (the least-squares gain of
    station p with the others fixed), or its phase for phase-only gains.  Stations without data
    keep their initial gain.  Returns gains (nsol, nant), iterations (nsol,) int and the last
    relative change (nsol,) of each cell (``< tolerance`` if it converged).
    """
    step, tolerance = options.step, options.tolerance
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
    for iteration in range(1, options.max_iterations + 1):
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


def _solve_batch(
    dense: dict[str, np.ndarray], initial: np.ndarray, phase_only: bool, options: SolverOptions
):
    """Solve a batch of cells; flag, drop the outlier stations and solve once more if any.

    Returns gains, snr, reasons (0 = good, else 1 + index in REASONS), the most iterations
    taken, and whether every cell converged.
    """
    outlier_sigma = options.outlier_sigma
    most, all_converged = 0, True
    dropped = np.zeros(initial.shape, dtype=bool)
    for _ in range(2):
        g, iterations, change = stefcal(
            dense["a"],
            dense["b"],
            initial,
            phase_only=phase_only,
            options=options,
        )
        has_data = dense["b"].sum(axis=2) > 0
        snr = solution_snr(**dense, gains=g, phase_only=phase_only)
        most = max(most, int(iterations.max(initial=0)))
        converged = (change < options.tolerance) | ~has_data.any(axis=1)
        all_converged = all_converged and bool(np.all(converged))
        reasons = np.zeros(g.shape, dtype=np.int8)
        diverged = ~(change <= DIVERGED_CHANGE)[:, None] | ~np.isfinite(g)
        for name, bad in (
            ("diverged", diverged),
            ("low_snr", snr < options.min_snr),
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
