"""The calibration steps of an ICAL run: solve the gain terms, against a sky model or the clean
model, with the checks that keep them sane.

Each term is solved where its data are: every group solves the solution intervals only it
holds (:mod:`~sdpbatch.execution.ical.solve_tasks`: damped StEFCal, a minimum signal-to-noise,
outliers among a cell's stations), the sums of the intervals groups share are added up on the
cluster, and worker 0 solves those and finishes the term from the cells' solutions
(:func:`sdpbatch.science.solve.finish_term`: a station's outliers over its cells flagged and
given the previous gain, the reference station, amplitudes normalised when the model's flux
scale is not to be trusted); only the gains and their statistics come back.
Against a sky model (a catalogue) the flux scale and the phase gradient are those of the
catalogue; later self-calibration keeps both.
"""

from __future__ import annotations

import logging

import numpy as np

from sdpbatch.execution.ical.calibrate_directions import group_directions, solve_d
from sdpbatch.execution.ical.solve_tasks import (
    LocalCells,
    PartialSolve,
    group_sky_model_solve,
    group_solve,
    merge_partial,
)
from sdpbatch.execution.ical.state import CycleState, Imaging, Run
from sdpbatch.science.anchor import anchor_phase_gradient, keep_amplitude_scale
from sdpbatch.science.skymodel import SkyModel, gaussian_taper_matrix, lmn
from sdpbatch.science.solve import (
    TERMS,
    GainSolution,
    SolverOptions,
    finish_term,
    join_cells,
    solve_cells,
)

LOG = logging.getLogger("sdpbatch.execution.ical")


def calibration_sky(sky: SkyModel, phase_centre: tuple[float, float]):
    """(components above the horizon, their direction cosines (nsrc, 3), their Gaussian
    shapes (nsrc, 2, 3) for the direct-sum predictor)."""
    directions = lmn(sky.ra, sky.dec, phase_centre)
    above = directions[:, 2] > 0  # components below the horizon of the phase centre are out
    sky = sky.select(above)
    return sky, directions[above], gaussian_taper_matrix(sky, phase_centre)


def solve_sky_model(
    run: Run, imaging: Imaging, state: CycleState, sky: SkyModel
) -> tuple[list[str], dict[str, dict]]:
    """Solve the terms of the first self-calibration cycle against the sky model; (the terms
    solved, their statistics)."""
    terms = [t for t in run.schedule.first_terms() if not TERMS[t].per_direction]
    components = calibration_sky(sky, run.infos[0].phase_centre)
    if not terms or len(components[0]) == 0:
        LOG.warning(
            "Calibration model not used: %s",
            "no gain term is due in the first cycle" if not terms else "no component is up",
        )
        return [], {}
    LOG.info(
        "Calibrating %s against the sky model: %d components, %.4g Jy in all",
        "".join(terms),
        len(components[0]),
        float(components[0].flux_at(imaging.setup.reference_frequency).sum()),
    )
    return terms, solve(run, imaging, state, 0, terms, sky=components)


def _solved(
    partial: PartialSolve,
    term: str,
    initial: np.ndarray,
    normalise: bool,
    options: SolverOptions,
) -> GainSolution:
    """The term from the groups' solved cells and the sums of the cells they share."""
    cells = partial.cells
    if partial.sums is not None:
        phase_only = TERMS[term].phase_only
        shared = solve_cells(partial.sums, initial=initial, phase_only=phase_only, options=options)
        cells = join_cells(cells, shared)
    return finish_term(cells, term=term, initial=initial, normalise=normalise, options=options)


def _local_cells(imaging: Imaging, term: str) -> list[LocalCells]:
    """What each group solves of ``term``: the intervals it alone holds."""
    boundaries, owners = imaging.intervals[term][0], imaging.owners[term]
    return [LocalCells(boundaries, owners == g) for g in range(len(imaging.groups))]


def _solve_term(run: Run, imaging: Imaging, state: CycleState, name: str, term: str, sky):
    """One term's solution: cells solved per group, the shared ones summed on the cluster,
    finished on worker 0."""
    local = _local_cells(imaging, term)
    options = run.schedule.solver
    if sky is None:
        handles = run.per_group(
            group_solve,
            f"solve-part-{name}",
            imaging.groups,
            state.model_vis,
            local,
            group_directions(run, imaging, state),
            shared=(state.gains, term, options),
        )
    else:
        shared = (*sky, state.gains, term, options)
        handles = run.per_group(
            group_sky_model_solve, f"sky-solve-part-{name}", imaging.groups, local, shared=shared
        )
    partial = run.tree(merge_partial, f"solve-merge-{name}", handles)
    normalise = sky is None  # a catalogue's flux is the scale; self-calibration has none
    task = run.one(_solved, f"solve-{name}", partial, term, state.gains[term], normalise, options)
    return run.runner.gather(task)


def _initial(run: Run, imaging: Imaging, term: str) -> np.ndarray:
    nint = imaging.intervals[term][0].size - 1
    nfreq = run.frequencies.size if TERMS[term].per_channel else 1
    return np.ones((nint, run.infos[0].nant, nfreq), dtype=np.complex128)


def solve(
    run: Run, imaging: Imaging, state: CycleState, cycle: int, terms, sky=None
) -> dict[str, dict]:
    """Solve each term in turn against the clean model's visibilities, or the components
    ``sky`` (from :func:`calibration_sky`); the statistics of each solution.  A term per
    direction (D) is solved against the clean model's facets (:func:`solve_d`)."""
    stats = {}
    for term in terms:
        if TERMS[term].per_direction:  # the clean model's facets, not the catalogue
            stats[term] = solve_d(run, imaging, state, cycle)
            continue
        state.gains.setdefault(term, _initial(run, imaging, term))
        solution = _solve_term(run, imaging, state, f"{term}-{cycle}", term, sky)
        gains = solution.gains
        if sky is not None:
            state.anchors[term] = gains
        elif term in state.anchors or state.anchors:
            anchor = state.anchors.get(term)
            if anchor is not None and not TERMS[term].phase_only:
                gains = keep_amplitude_scale(gains, anchor, solution.flags)
            positions = run.infos[0].antenna_positions
            gains = anchor_phase_gradient(
                gains, 1.0 if anchor is None else anchor, positions, flags=solution.flags
            )
        state.gains = {**state.gains, term: gains}
        stats[term] = solution.stats.as_dict()
        _log_solution(term, cycle, solution)
    run.clock.lap("solve")
    return stats


def _log_solution(term: str, cycle: int, solution: GainSolution) -> None:
    s = solution.stats
    LOG.info(
        "ICAL cycle %d: %s solved, %.1f %% flagged, amplitude spread %.3g, median SNR %.3g%s",
        cycle,
        term,
        100 * s.flagged_fraction,
        s.amplitude_spread,
        s.median_snr,
        "" if s.converged else ", NOT converged",
    )
