"""The steps of an ICAL run: read, the first cycle, the major cycles and their parts.

Each step submits tasks to the run's runner (one per group, then a tree that combines them on
the cluster, then one task on worker 0) and keeps the handles in the explicit state objects
of :mod:`sdpbatch.execution.ical.state`.  The client only gathers small things: summaries,
clean statistics, the blocks' Taylor moments and the gains.
"""

from __future__ import annotations

import logging
import time

import numpy as np

from sdpbatch.execution.ical.combine import (
    add_model,
    block_moments,
    clean_cycle,
    clean_stats,
    increment_of,
    psf_beam,
    psf_taylor,
    sum_arrays,
)
from sdpbatch.execution.ical.group import group_density, group_summary, load_group, prepare_group
from sdpbatch.execution.ical.results import CycleRecord
from sdpbatch.execution.ical.settings import CleanSettings, ImagingSetup
from sdpbatch.execution.ical.state import CycleState, Imaging, Run
from sdpbatch.execution.ical.tasks import (
    group_predict,
    group_psf,
    group_residual,
    group_sky_model_sums,
    group_solve_sums,
    merge_block_images,
)
from sdpbatch.science.imaging import advise_image, small_inversion_size
from sdpbatch.science.skymodel import SkyModel, lmn
from sdpbatch.science.solve import TERMS, anchor_phase_gradient, combine_sums, solve_gains

LOG = logging.getLogger("sdpbatch.execution.ical")


def _image_size(run: Run, summaries: list) -> tuple[int, float]:
    params = run.params
    npixel, cellsize = params.npixel, params.cellsize
    if npixel is None or cellsize is None:
        frequencies = run.frequencies
        advised = advise_image(
            max(s.uvw_max for s in summaries),
            float(frequencies.min()),
            float(frequencies.max()),
            run.infos[0].antenna_diameter,
        )
        npixel, cellsize = npixel or advised[0], cellsize or advised[1]
        LOG.info("Advised image: %d pixels of %.3g rad", npixel, cellsize)
    return npixel, cellsize


def read(run: Run) -> Imaging:
    """Each group reads its work items; image size, intervals and weights are settled."""
    params, settings = run.params, run.settings
    limit = settings.chunk_visibilities
    raw = run.per_group(load_group, "read", run.groups, shared=(run.run_id, limit))
    summaries = run.runner.gather(run.per_group(group_summary, "summary", raw))
    if any(s.spilled for s in summaries):
        LOG.info("ICAL spills work items of <= %d visibilities to worker scratch", limit)
    npixel, cellsize = _image_size(run, summaries)
    LOG.info("ICAL image %d pixels of %.4g rad", npixel, cellsize)
    intervals = run.schedule.intervals(np.unique(np.concatenate([s.times for s in summaries])))
    grid_npixel = npixel
    if params.small_inversion:
        uvw_max = max(s.uvw_max for s in summaries)
        grid_npixel = small_inversion_size(npixel, cellsize, uvw_max, run.frequencies.max())
    setup = ImagingSetup(
        npixel=npixel,
        cellsize=cellsize,
        epsilon=params.epsilon,
        grid_npixel=grid_npixel,
        grid_epsilon=params.grid_epsilon,
        nmoment=min(params.nmoment, len(run.blocks)),
        reference_frequency=float(run.frequencies.mean()),
        weighting=params.weighting,
        robust=params.robust,
        boundaries={t: b for t, (b, _) in intervals.items()},
        nthreads=run.threads.group,
        sparse_pixels=settings.sparse_pixels_per_term * params.nmoment,
        run_id=run.run_id,
    )
    density = None
    if params.weighting != "natural":
        partial = run.per_group(group_density, "density-part", raw, shared=(npixel, cellsize))
        density = run.tree(sum_arrays, "density", partial)
    groups = run.per_group(prepare_group, "prepare", raw, shared=(setup, density))
    run.runner.wait(groups)
    clean = CleanSettings.from_parameters(params, nthreads=run.threads.alone)
    run.clock.lap("read")
    return Imaging(groups, setup, clean, intervals)


def make_psf(run: Run, imaging: Imaging) -> CycleState:
    """The PSF of every channel block (once per run), the blocks' Taylor moments and the
    Taylor PSFs; the cycle state starts from it."""
    setup = imaging.setup
    nchan = run.frequencies.size
    parts = run.per_group(group_psf, "psf-part", imaging.groups, shared=(setup, nchan))
    blocks = run.tree(merge_block_images, "psf-sum", parts)
    channel_weights = run.runner.gather(run.one(_channel_weights, "channel-weights", blocks))
    taylor = (run.frequencies - setup.reference_frequency) / setup.reference_frequency
    imaging.moments = block_moments(channel_weights, taylor, run.blocks, 2 * setup.nmoment - 1)
    psf = run.one(psf_taylor, "psf", blocks, imaging.moments, setup.nmoment, setup.npixel)
    state = CycleState(psf=psf)
    run.runner.wait(state.psf)
    run.clock.lap("grid")
    return state


def _channel_weights(blocks) -> np.ndarray:
    return blocks.channel_weights


def residual_of(run: Run, imaging: Imaging, state: CycleState, name: str):
    """The summed block residual images of the groups against the current model and gains
    (a handle, on worker 0)."""
    parts = run.per_group(
        group_residual,
        f"{name}-part",
        imaging.groups,
        state.model_vis,
        shared=(state.gains, imaging.setup),
    )
    residual = run.tree(merge_block_images, f"{name}-sum", parts)
    run.runner.wait(residual)
    run.clock.lap("grid")
    return residual


def _clean(run: Run, imaging: Imaging, state: CycleState, cycle: int, residual, solved, started):
    """Minor cycle on the summed residual; the model and its increment stay where they are."""
    result = run.one(
        clean_cycle, f"clean-{cycle}", residual, state.psf, imaging.moments, imaging.clean
    )
    state.model = run.one(add_model, f"model-{cycle}", state.model, result)
    state.increment = run.one(increment_of, f"increment-{cycle}", result)
    stats = run.runner.gather(run.one(clean_stats, f"stats-{cycle}", result))
    run.clock.lap("clean")
    record = CycleRecord(
        cycle=cycle,
        solved=tuple(solved),
        peak=stats.peak,
        peak_end=stats.peak_end,
        rms=stats.rms,
        components=stats.components,
        stop_reason=stats.stop_reason,
        seconds=time.perf_counter() - started,
    )
    state.cycles.append(record)
    LOG.info("ICAL %s", record.message())
    run.progress.step(record.message())


def first_cycle(run: Run, imaging: Imaging, sky_model: SkyModel | None) -> CycleState:
    """Cycle 0: PSF, calibration against ``sky_model`` if given, dirty image, clean."""
    started = time.perf_counter()
    state = make_psf(run, imaging)
    solved = _solve_sky_model(run, imaging, state, sky_model) if sky_model is not None else []
    state.model_vis = [None] * run.ngroups
    residual = residual_of(run, imaging, state, "dirty")
    # fit the clean beam now: an undersampled beam fails before the long part
    state.beam = run.runner.gather(run.one(psf_beam, "beam", state.psf, imaging.setup.cellsize))
    _clean(run, imaging, state, 0, residual, solved, started)
    return state


def _solve_sky_model(run: Run, imaging: Imaging, state: CycleState, sky: SkyModel) -> list[str]:
    """Solve the terms of the first self-calibration cycle against the sky model."""
    terms = run.schedule.first_terms()
    directions = lmn(sky.ra, sky.dec, run.infos[0].phase_centre)
    above = directions[:, 2] > 0  # components below the horizon of the phase centre are out
    sky, directions = sky.select(above), directions[above]
    if not terms or len(sky) == 0:
        LOG.warning(
            "Calibration model not used: %s",
            "no gain term is due in the first cycle" if not terms else "no component is up",
        )
        return []
    LOG.info(
        "Calibrating %s against the sky model: %d components, %.4g Jy in all",
        "".join(terms),
        len(sky),
        float(sky.flux_at(imaging.setup.reference_frequency).sum()),
    )
    solve(run, imaging, state, 0, terms, sky=(sky, directions))
    return terms


def _solve_term(run: Run, imaging: Imaging, state: CycleState, name: str, term: str, sky):
    """The solution of one term: solve sums per group, combined on the cluster, solved on
    worker 0; only the gains come back."""
    if sky is None:
        handles = run.per_group(
            group_solve_sums,
            f"sums-{name}",
            imaging.groups,
            state.model_vis,
            shared=(state.gains, term),
        )
    else:
        shared = (sky[0], sky[1], state.gains, term)
        handles = run.per_group(
            group_sky_model_sums, f"sky-sums-{name}", imaging.groups, shared=shared
        )
    sums = run.tree(_combine, f"sums-{name}-sum", handles)
    initial = state.gains[term]
    return run.runner.gather(run.one(_solve, f"solve-{name}", sums, term, initial))


def _combine(*parts):
    return combine_sums(list(parts))


def _solve(sums, term: str, initial: np.ndarray) -> np.ndarray:
    return solve_gains(sums, term=term, initial=initial)


def solve(run: Run, imaging: Imaging, state: CycleState, cycle: int, terms, sky=None) -> None:
    """Solve each term in turn against the model visibilities of the clean model, or the
    components ``sky`` = (SkyModel, lmn) if given; once a sky model fixed the phase gradient,
    self-calibration keeps it."""
    nant = run.infos[0].nant
    for term in terms:
        if term not in state.gains:
            nint = imaging.intervals[term][0].size - 1
            nfreq = run.frequencies.size if TERMS[term].per_channel else 1
            state.gains[term] = np.ones((nint, nant, nfreq), dtype=np.complex128)
        solved = _solve_term(run, imaging, state, f"{term}-{cycle}", term, sky)
        if sky is not None:
            state.anchors[term] = solved
        elif state.anchors:
            positions = run.infos[0].antenna_positions
            solved = anchor_phase_gradient(solved, state.anchors.get(term, 1.0), positions)
        state.gains = {**state.gains, term: solved}
    run.clock.lap("solve")


def predict(run: Run, imaging: Imaging, state: CycleState, name: str) -> None:
    """Model visibilities of every group updated with the last minor cycle's increment."""
    state.model_vis = run.per_group(
        group_predict,
        name,
        imaging.groups,
        state.model_vis,
        shared=(state.increment, imaging.moments, imaging.setup),
    )
    run.runner.wait(state.model_vis)
    run.clock.lap("degrid")


def major_cycle(run: Run, imaging: Imaging, state: CycleState, cycle: int) -> None:
    """Predict, solve (from first_selfcal_<term> on), correct fresh data, residual, clean."""
    started = time.perf_counter()
    predict(run, imaging, state, f"predict-{cycle}")
    terms = run.schedule.terms_at(cycle - 1)
    solve(run, imaging, state, cycle, terms)
    residual = residual_of(run, imaging, state, f"residual-{cycle}")
    _clean(run, imaging, state, cycle, residual, terms, started)


def settled(run: Run, state: CycleState, cycle: int) -> bool:
    """True if major cycle ``cycle + 1`` would reproduce cycle ``cycle`` exactly.

    It would when the minor cycle added nothing (the model is the one this cycle solved
    against) and the next cycle solves the same terms: the same solve from the converged
    gains, the same residual, the same (empty) clean.
    """
    last = state.cycles[-1]
    return last.components == 0 and run.schedule.terms_at(cycle) == list(last.solved)
