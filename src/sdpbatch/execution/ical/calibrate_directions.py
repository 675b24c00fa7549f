"""Solving and applying the D term on the cluster (see :mod:`~.directions` for the method).

Work items: the directions chosen on worker 0 from the clean model; each facet's model
cut there; one predict task per group and direction; one sums task per group; the sums added
up pairwise on the cluster; the joint solve on worker 0.  Only the centres, the gains and their
statistics come back to the client.
"""

from __future__ import annotations

import logging

import numpy as np

from sdpbatch.execution.ical.directions import (
    SEPARATION_PIXELS,
    DirectionState,
    choose_directions,
    discard_facets,
    facet_map,
    facet_part,
)
from sdpbatch.execution.ical.solve_tasks import group_direction_sums
from sdpbatch.execution.ical.state import CycleState, Imaging, Run
from sdpbatch.execution.ical.tasks import group_predict
from sdpbatch.science.solve_cells import SolverOptions
from sdpbatch.science.solve_directions import (
    DirectionSolution,
    DirectionSums,
    combine_direction_sums,
    solve_directions,
)

LOG = logging.getLogger("sdpbatch.execution.ical")


def predict_facets(run: Run, imaging: Imaging, model, centres: np.ndarray, name: str) -> list:
    """Per group, the handles of its facets' model visibilities (one task per group and
    direction, each facet's model cut on worker 0)."""
    setup = imaging.setup
    labels = run.one(facet_map, f"{name}-facets", model, centres, setup.cellsize)
    facets = [run.one(facet_part, f"{name}-facet-{d}", model, labels, d)
              for d in range(len(centres))]  # fmt: skip
    per_direction = [
        run.per_group(group_predict, f"{name}-{d}", imaging.groups,
                      shared=(None, facet, imaging.moments, setup))
        for d, facet in enumerate(facets)
    ]  # fmt: skip
    return [list(handles) for handles in zip(*per_direction, strict=True)]


def group_directions(run: Run, imaging: Imaging, state: CycleState) -> list:
    """Per group, what its residual and solves need of the D term: (facet visibilities, D
    gains), or None without D; facets that are gone are predicted again."""
    found = state.directions
    if found is None:
        return [None] * run.ngroups
    if found.vis is None:
        found.vis = predict_facets(run, imaging, found.model, found.centres, "facets-again")
    return [(vis, found.gains) for vis in found.vis]


def merge_direction_sums(*parts: DirectionSums) -> DirectionSums:
    """Two groups' sums as one (a step of the tree on the cluster)."""
    return combine_direction_sums(list(parts))


def _solve(sums: DirectionSums, initial: np.ndarray, options: SolverOptions):
    return solve_directions(sums, initial=initial, options=options)


def solve_d(run: Run, imaging: Imaging, state: CycleState, cycle: int) -> dict:
    """Choose the directions from the current model, predict their facets, solve D jointly;
    the solution goes into ``state.directions``; its statistics (per direction) returned."""
    setup = imaging.setup
    chosen = run.one(choose_directions, f"directions-{cycle}", state.model,
                     run.params.ndirections, setup.cellsize)  # fmt: skip
    centres = run.runner.gather(chosen)
    if len(centres) == 0:
        LOG.warning("ICAL cycle %d: D not solved, the clean model is empty", cycle)
        return {"directions": [], "iterations": 0, "converged": False}
    name = f"predict-facets-{cycle}"
    vis = predict_facets(run, imaging, state.model, centres, name)
    parts = run.per_group(group_direction_sums, f"sums-D-{cycle}", imaging.groups, vis,
                          shared=(state.gains,))  # fmt: skip
    sums = run.tree(merge_direction_sums, f"sums-D-merge-{cycle}", parts)
    initial = _initial(run, imaging, state, centres, setup.cellsize)
    task = run.one(_solve, f"solve-D-{cycle}", sums, initial, run.schedule.solver)
    solution = run.runner.gather(task)
    stats = direction_stats(solution, centres)
    if state.directions is not None and state.directions.vis is not None:
        run.runner.wait(run.per_group(discard_facets, f"discard-facets-{cycle}",
                                      state.directions.vis))  # fmt: skip
    state.directions = DirectionState(
        centres, solution.gains, state.model, solution.flags, vis, stats
    )
    LOG.info(
        "ICAL cycle %d: D solved in %d directions, %d iterations%s; rms phase per direction "
        "%s rad", cycle, len(centres), solution.iterations,
        "" if solution.converged else " (NOT converged)",
        ", ".join(f"{s['rms_phase_rad']:.3f}" for s in stats),
    )  # fmt: skip
    run.clock.lap("solve")
    return {"directions": stats, "iterations": solution.iterations,
            "converged": solution.converged}  # fmt: skip


def _initial(run, imaging, state, centres, cellsize) -> np.ndarray:
    """The last D gains when the directions stayed where they were, else unit gains."""
    nint = imaging.intervals["D"][0].size - 1
    last = state.directions
    if last is not None and last.centres.shape == centres.shape:
        if np.max(np.hypot(*(last.centres - centres).T)) < 0.5 * SEPARATION_PIXELS * cellsize:
            return last.gains
    return np.ones((len(centres), nint, run.infos[0].nant, 1), dtype=np.complex128)


def direction_stats(solution: DirectionSolution, centres: np.ndarray) -> list[dict]:
    """Per direction: its centre, the rms of its unflagged phases (rad, about the reference
    station), median signal-to-noise and flagged fraction (qa.json)."""
    out = []
    for d, stats in enumerate(solution.stats):
        ok = ~solution.flags[d]
        phases = np.angle(solution.gains[d][ok])
        out.append({
            "l": float(centres[d, 0]),
            "m": float(centres[d, 1]),
            "rms_phase_rad": float(np.sqrt(np.mean(phases**2))) if phases.size else 0.0,
            "median_snr": stats.median_snr,
            "flagged_fraction": stats.flagged_fraction,
        })  # fmt: skip
    return out
