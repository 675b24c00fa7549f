"""Gains per direction solved jointly, as DP3's DDECal does: the directional iteration.

The data are modelled as ``V_pq = sum_d g_dp conj(g_dq) M_dpq`` with one model ``M_d`` per
direction (the visibilities of that direction's facet of the sky model) and one gain per
station, solution cell and direction.  Each iteration solves every direction d against
``M_d`` with the others held at the last gains, on the residual
``R_d = V - sum_{e != d} g_e M_e g_e^H``, with the one scalar solver of
:mod:`sdpbatch.science.solve` (damped StEFCal and its checks), then moves all directions a
``step`` of the way to their new gains (DDECal's step size), until the gains settle.

The residual is never formed: gains are constant over a solve cell (interval, baseline,
solution channel), so the solve sums of ``R_d`` against ``M_d`` follow exactly from
per-direction sums of the data (:class:`DirectionSums`): ``sum w V conj(M_d)`` and the
cross sums ``sum w M_e conj(M_d)`` of every pair of directions, computed once with
:func:`sdpbatch.science.solve_sums.compress` and added up across blocks like any solve sums.

Each direction's gains carry an arbitrary phase (the sky of one facet fixes only phase
differences): they are referenced to one station, as the direction-independent terms are.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from sdpbatch.science.solution_checks import SolutionStats, choose_reference, solution_stats
from sdpbatch.science.solve import reference_phases
from sdpbatch.science.solve_cells import SolverOptions, solve_cells
from sdpbatch.science.solve_sums import SolveSums, combine_sums, compress

DIRECTION_STEP = 0.5
"""Default fraction of the way each directional iteration moves the gains (DDECal's step)."""
DIRECTION_ITERATIONS = 100
"""Default most directional iterations."""


@dataclass
class DirectionSums:
    """Solve sums of ``ndir`` directions over the same cells (interval, baseline, channel).

    Attributes
    ----------
    data : ndir :class:`SolveSums` of the data against each direction's model: ``a`` =
        ``sum w V conj(M_d)``, ``b`` = ``sum w |M_d|^2``, ``c`` = ``sum w |V|^2``, ``n``.
    cross : {(e, d): SolveSums} for e < d, whose ``a`` is ``sum w M_e conj(M_d)``.
    """

    data: tuple[SolveSums, ...]
    cross: dict[tuple[int, int], SolveSums]

    @property
    def ndir(self) -> int:
        return len(self.data)

    def select(self, mask: np.ndarray) -> DirectionSums:
        """The cells where ``mask`` (n,) bool is True."""
        return DirectionSums(
            tuple(s.select(mask) for s in self.data),
            {k: s.select(mask) for k, s in self.cross.items()},
        )

    def pair(self, e: int, d: int) -> np.ndarray:
        """(n,) complex ``sum w M_e conj(M_d)`` (``sum w |M_d|^2`` for e == d)."""
        if e == d:
            return self.data[d].b.astype(np.complex128)
        return self.cross[(e, d)].a if e < d else np.conj(self.cross[(d, e)].a)


def compress_directions(
    vis: np.ndarray,
    models: np.ndarray,
    weight: np.ndarray,
    *,
    antenna1: np.ndarray,
    antenna2: np.ndarray,
    interval: np.ndarray,
    channel: np.ndarray | None = None,
    flag: np.ndarray | None = None,
) -> DirectionSums:
    """:class:`DirectionSums` of one block of data.

    vis : (nrow, nchan) complex observed visibilities (Jy).
    models : (ndir, nrow, nchan) complex model visibilities of each direction (already
        corrupted by any direction-independent gains held fixed).
    weight, antenna1, antenna2, interval, channel, flag : as for
        :func:`~sdpbatch.science.solve_sums.compress`; a sample unusable in ``vis`` is left
        out of every sum.
    """
    vis, weight = np.asarray(vis), np.asarray(weight)
    bad = ~(np.isfinite(vis) & np.isfinite(weight) & (weight > 0))
    bad = bad if flag is None else bad | flag
    cells = dict(antenna1=antenna1, antenna2=antenna2, interval=interval, channel=channel,
                 flag=bad)  # fmt: skip
    data = tuple(compress(vis, model, weight, **cells) for model in models)
    ndir = len(models)
    cross = {
        (e, d): compress(models[e], models[d], weight, **cells)
        for e in range(ndir)
        for d in range(e + 1, ndir)
    }
    return DirectionSums(data, cross)


def combine_direction_sums(parts: list[DirectionSums]) -> DirectionSums:
    """The sums of several blocks added up (cell by cell)."""
    ndir = parts[0].ndir
    data = tuple(combine_sums([p.data[d] for p in parts]) for d in range(ndir))
    cross = {k: combine_sums([p.cross[k] for p in parts]) for k in parts[0].cross}
    return DirectionSums(data, cross)


def residual_sums(sums: DirectionSums, gains: np.ndarray, d: int) -> SolveSums:
    """Solve sums of ``R_d = V - sum_{e != d} g_e M_e g_e^H`` against ``M_d``.

    gains : (ndir, nint, nant, nfreq) complex, the current gains of every direction.
    Exact: with ``G_e = g_ep conj(g_eq)`` of each cell and ``X_ef = sum w M_e conj(M_f)``,
    ``sum w R_d conj(M_d) = A_d - sum_{e != d} G_e X_ed``, and with the misfit of all
    directions ``chi = sum w |V - sum_e G_e M_e|^2``,
    ``sum w |R_d|^2 = chi + 2 Re conj(G_d) (sum w R_d conj(M_d) - G_d X_dd) + |G_d|^2 X_dd``.
    """
    products = cell_products(sums, gains)
    return _residual(sums, products, _misfit(sums, products), d)


def cell_products(sums: DirectionSums, gains: np.ndarray) -> list[np.ndarray]:
    """Per direction, (n,) ``g_p conj(g_q)`` of each cell; gains (ndir, nint, nant, nfreq)."""
    cells = sums.data[0]
    return [
        g[cells.interval, cells.antenna1, cells.channel]
        * np.conj(g[cells.interval, cells.antenna2, cells.channel])
        for g in gains
    ]


def _misfit(sums: DirectionSums, products: list[np.ndarray]) -> np.ndarray:
    """(n,) ``sum w |V - sum_e G_e M_e|^2`` of each cell (ndir^2 terms, once per iteration)."""
    chi = sums.data[0].c.astype(np.float64)
    for e, ge in enumerate(products):
        chi = chi - 2.0 * np.real(np.conj(ge) * sums.data[e].a) + np.abs(ge) ** 2 * sums.data[e].b
    for (e, f), cross in sums.cross.items():
        chi = chi + 2.0 * np.real(products[e] * np.conj(products[f]) * cross.a)
    return chi


def _residual(sums: DirectionSums, products: list[np.ndarray], misfit: np.ndarray, d: int):
    """:func:`residual_sums` of direction ``d`` from the cells' products and misfit."""
    base = sums.data[d]
    a = base.a.copy()
    for e, ge in enumerate(products):
        if e != d:
            a -= ge * sums.pair(e, d)
    gd = products[d]
    c = misfit + 2.0 * np.real(np.conj(gd) * (a - gd * base.b)) + np.abs(gd) ** 2 * base.b
    return SolveSums(base.interval, base.antenna1, base.antenna2, base.channel,
                     a, base.b, np.maximum(c, 0.0), base.n)  # fmt: skip


@dataclass(frozen=True)
class DirectionSolution:
    """The gains of every direction.

    gains : (ndir, nint, nant, nfreq) complex, ``V ~= sum_d g_dp conj(g_dq) M_d``, phases
        referenced to station ``reference``; flagged entries hold the initial gain.
    flags : (ndir, nint, nant, nfreq) bool, solutions not to be trusted (no data, low SNR, ...).
    snr : (ndir, nint, nant, nfreq) signal-to-noise of each solution (last iteration).
    iterations : directional iterations taken.
    converged : the largest change of the last iteration was below the tolerance.
    stats : one :class:`SolutionStats` per direction (term "D").
    """

    gains: np.ndarray
    flags: np.ndarray
    snr: np.ndarray
    iterations: int
    converged: bool
    stats: tuple[SolutionStats, ...]


def solve_directions(
    sums: DirectionSums,
    *,
    initial: np.ndarray,
    options: SolverOptions,
    phase_only: bool = True,
    step: float = DIRECTION_STEP,
    max_iterations: int = DIRECTION_ITERATIONS,
    tolerance: float | None = None,
) -> DirectionSolution:
    """Solve the gains of every direction jointly (the directional iteration above).

    Parameters
    ----------
    sums : the complete :class:`DirectionSums` of the data.
    initial : (ndir, nint, nant, nfreq) complex starting gains (e.g. the last solution).
    options : of the scalar solve of each direction (:func:`solve_cells`: tolerance, damping,
        minimum SNR) and the preferred reference station.
    phase_only : scalar phases (the "D" term); False also solves amplitudes.
    step : each iteration moves the gains this fraction of the way (0 < step <= 1).
    max_iterations, tolerance : stop once the largest change of any gain in an iteration is
        below ``tolerance`` (default ``options.tolerance``), or after ``max_iterations``.
    """
    if not 0.0 < step <= 1.0:
        raise ValueError(f"direction step must be in (0, 1], got {step}")
    if max_iterations < 1:
        raise ValueError(f"max_iterations must be at least 1, got {max_iterations}")
    tolerance = options.tolerance if tolerance is None else tolerance
    initial = np.asarray(initial, dtype=np.complex128)
    g = initial.copy()
    change, iterations = np.inf, 0
    while iterations < max_iterations and not change < tolerance:
        iterations += 1
        products = cell_products(sums, g)
        misfit = _misfit(sums, products)
        cells = [
            solve_cells(_residual(sums, products, misfit, d), initial=g[d],
                        phase_only=phase_only, options=options)
            for d in range(sums.ndir)
        ]  # fmt: skip
        new = np.stack([c.spread(g[d])[0] for d, c in enumerate(cells)])
        new = g + step * (new - g)
        if phase_only:
            new = new / np.where(np.abs(new) > 0, np.abs(new), 1.0)
        change = float(np.max(np.abs(new - g), initial=0.0))
        g = new
    return _finish(cells, g, initial, options, iterations, change < tolerance)


def _finish(cells, g, initial, options, iterations, converged) -> DirectionSolution:
    """Flags, the reference station and the statistics of the last iteration's cells."""
    parts = [c.spread(g[d]) for d, c in enumerate(cells)]
    snr = np.stack([p[1] for p in parts])
    reasons = np.stack([p[2] for p in parts])
    flags = reasons > 0
    ref = choose_reference(np.concatenate(list(flags), axis=0), options.reference)
    gains = np.stack([reference_phases(g[d], ref, flags[d]) for d in range(len(cells))])
    gains = np.where(flags, initial, gains)
    stats = tuple(
        solution_stats("D", gains[d], reasons[d], snr[d], iterations=iterations,
                       converged=converged, reference=ref, normalised=False)
        for d in range(len(cells))
    )  # fmt: skip
    return DirectionSolution(gains, flags, snr, iterations, converged, stats)
