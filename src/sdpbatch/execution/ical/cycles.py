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
import psutil

from sdpbatch.execution.ical.calibrate import solve, solve_sky_model
from sdpbatch.execution.ical.calibrate_directions import group_directions
from sdpbatch.execution.ical.combine import (
    add_model,
    block_moments,
    clean_cycle,
    clean_stats,
    increment_of,
    pack,
    psf_beam,
    psf_taylor,
    sum_arrays,
)
from sdpbatch.execution.ical.group import group_density, group_summary, load_group, prepare_group
from sdpbatch.execution.ical.plan import spills, worker_loads
from sdpbatch.execution.ical.results import CycleRecord
from sdpbatch.execution.ical.settings import CleanSettings, ImagingSetup
from sdpbatch.execution.ical.solve_tasks import interval_owners
from sdpbatch.execution.ical.state import CycleState, Imaging, Run
from sdpbatch.execution.ical.tasks import (
    group_predict,
    group_psf,
    group_residual,
    merge_block_images,
)
from sdpbatch.execution.ical.tiles import tiled_minor_cycle
from sdpbatch.parameters import ParameterError
from sdpbatch.science.image_size import ADVICE_MEMORY_FRACTION, check_image_fits
from sdpbatch.science.imaging import (
    DOUBLE_PRECISION_EPSILON,
    advise_image,
    small_inversion_size,
)
from sdpbatch.science.skymodel import SkyModel
from sdpbatch.science.solve import TERMS

LOG = logging.getLogger("sdpbatch.execution.ical")


def _image_size(run: Run, summaries: list) -> tuple[int, float]:
    """The image (npixel, cellsize rad): as asked when it fits, else advised from the data
    within the memory there is, the choice and its reasons logged; an image that cannot fit is
    refused (``ParameterError`` naming npixel) before any gridding."""
    params = run.params
    held = max(worker_loads(run.groups, len(run.runner.slots)))
    sizes = dict(
        nmoment=params.nmoment,
        nscales=len(params.scales),
        nwindows=len(run.blocks),
        visibilities=min(held, run.settings.chunk_visibilities),
        double_precision=min(params.epsilon, params.grid_epsilon) <= DOUBLE_PRECISION_EPSILON,
    )
    available = psutil.virtual_memory().available
    npixel, cellsize = params.npixel, params.cellsize
    if npixel is None or cellsize is None:
        frequencies = run.frequencies
        try:
            advice = advise_image(
                max(s.uvw_max for s in summaries),
                float(frequencies.min()),
                float(frequencies.max()),
                run.infos[0].antenna_diameter,
                max_bytes=ADVICE_MEMORY_FRACTION * available,
                **sizes,
            )
        except ValueError as err:
            raise ParameterError(
                "npixel", f"cannot be advised from the data ({err}); give it"
            ) from err
        for reason in advice.reasons:
            LOG.info("Image advice: %s", reason)
        npixel, cellsize = npixel or advice.npixel, cellsize or advice.cellsize
        LOG.info("Image: %d pixels of %.3g rad (%s)", npixel, cellsize, _asked(params))
    need = check_image_fits(npixel, available_bytes=available, **sizes)
    LOG.info(
        "Image: %d pixels need about %.2f GiB per worker, %.1f GiB available",
        npixel,
        need / 2**30,
        available / 2**30,
    )
    return npixel, cellsize


def _asked(params) -> str:
    if params.npixel is None and params.cellsize is None:
        return "advised"
    kept = "npixel" if params.npixel is not None else "cellsize"
    return f"{kept} as asked, the other advised"


def read(run: Run) -> Imaging:
    """Each group reads its work items; image size, intervals and weights are settled."""
    params, settings = run.params, run.settings
    limit = settings.chunk_visibilities
    spilled = spills(run.groups, len(run.runner.slots), limit)
    raw = run.per_group(load_group, "read", run.groups, spilled, shared=(run.run_id,))
    summaries = run.runner.gather(run.per_group(group_summary, "summary", raw))
    if any(s.spilled for s in summaries):
        LOG.info("ICAL spills work items of <= %d visibilities to worker scratch", limit)
    npixel, cellsize = _image_size(run, summaries)
    LOG.info("ICAL image %d pixels of %.4g rad", npixel, cellsize)
    intervals = run.schedule.intervals(np.unique(np.concatenate([s.times for s in summaries])))
    owners = {
        t: interval_owners(b, [s.times for s in summaries]) for t, (b, _) in intervals.items()
    }
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
    return Imaging(groups, setup, clean, intervals, owners)


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
    psf = run.one(
        psf_taylor,
        "psf",
        blocks,
        imaging.moments,
        setup.nmoment,
        setup.npixel,
        imaging.clean.nthreads,
    )
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
        group_directions(run, imaging, state),
        shared=(state.gains, imaging.setup),
    )
    residual = run.tree(merge_block_images, f"{name}-sum", parts)
    run.runner.wait(residual)
    run.clock.lap("grid")
    return residual


def _clean(run: Run, imaging: Imaging, state: CycleState, cycle: int, residual, solved, started):
    """Minor cycle on the summed residual; the model and its increment stay where they are.
    ``solved``: (terms solved before it, their statistics)."""
    clean = imaging.clean
    if clean.tile_size:
        result = tiled_minor_cycle(run, state.psf, imaging.moments, clean, residual, cycle)
    else:
        result = run.one(clean_cycle, f"clean-{cycle}", residual, state.psf, imaging.moments, clean)
    state.model = run.one(add_model, f"model-{cycle}", state.model, result)
    state.increment = run.one(increment_of, f"increment-{cycle}", result)
    setup = imaging.setup
    task = run.one(clean_stats, f"stats-{cycle}", result, state.model, state.beam, setup.cellsize)
    stats = run.runner.gather(task)
    run.clock.lap("clean")
    record = CycleRecord(
        cycle=cycle,
        solved=tuple(solved[0]),
        peak=stats.peak,
        peak_end=stats.peak_end,
        rms=stats.rms,
        components=stats.components,
        stop_reason=stats.stop_reason,
        seconds=time.perf_counter() - started,
        dynamic_range=stats.dynamic_range,
        solutions=solved[1],
    )
    state.cycles.append(record)
    if record.dynamic_range > state.best.get("dynamic_range", -1.0):
        state.best = {
            "cycle": cycle,
            "dynamic_range": record.dynamic_range,
            "model": state.model,
            "gains": dict(state.gains),
            "directions": None if state.directions is None else state.directions.without_vis(),
        }
    LOG.info("ICAL %s", record.message())
    run.progress.step(record.message())


def first_cycle(run: Run, imaging: Imaging, sky_model: SkyModel | None) -> CycleState:
    """Cycle 0: PSF, calibration against ``sky_model`` if given, dirty image, clean."""
    started = time.perf_counter()
    state = make_psf(run, imaging)
    state.model_vis = [None] * run.ngroups
    solved, stats = [], {}
    if sky_model is not None:
        solved, stats = solve_sky_model(run, imaging, state, sky_model)
    residual = residual_of(run, imaging, state, "dirty")
    # fit the clean beam now: an undersampled beam fails before the long part
    state.beam = run.runner.gather(run.one(psf_beam, "beam", state.psf, imaging.setup.cellsize))
    _clean(run, imaging, state, 0, residual, (solved, stats), started)
    return state


def predict(run: Run, imaging: Imaging, state: CycleState, name: str) -> None:
    """Model visibilities of every group updated with the last minor cycle's increment (kept,
    packed, in ``state.predicted``: a resumed run predicts them again in this order)."""
    state.predicted.append(run.one(pack, f"{name}-packed", state.increment))
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
    """Predict, solve (from first_selfcal_<term> on), correct fresh data, residual, clean.

    A term solved for the first time must not make the image worse: when the dynamic range
    after this cycle falls below :data:`UNDO_FRACTION` of the last cycle's, the term is
    undone (its gains dropped, not solved again) with a warning, and the cycle is made again
    without it from the model it started with."""
    started = time.perf_counter()
    predict(run, imaging, state, f"predict-{cycle}")
    terms = terms_due(run, state, cycle)
    new = [t for t in terms if not solved_before(state, t)]
    start_model, start_increment = state.model, state.increment
    stats = solve(run, imaging, state, cycle, terms)
    residual = residual_of(run, imaging, state, f"residual-{cycle}")
    _clean(run, imaging, state, cycle, residual, (terms, stats), started)
    previous, now = state.cycles[-2].dynamic_range, state.cycles[-1].dynamic_range
    if not new or now >= UNDO_FRACTION * previous:
        return
    LOG.warning(
        "ICAL cycle %d: self-calibration with %s made the image worse (dynamic range %.0f "
        "after it, %.0f before): undone, %s is not solved any more",
        cycle,
        "".join(new),
        now,
        previous,
        "".join(new),
    )
    state.undone.append(
        {"cycle": cycle, "terms": new, "dynamic_range_with": now, "dynamic_range_before": previous}
    )
    state.disabled |= set(new)
    state.gains = {k: v for k, v in state.gains.items() if k not in new}
    if any(TERMS[t].per_direction for t in new):
        state.directions = None
    state.model, state.increment = start_model, start_increment
    state.cycles.pop()
    residual = residual_of(run, imaging, state, f"residual-{cycle}-undone")
    kept = [t for t in terms if t not in new]
    _clean(run, imaging, state, cycle, residual, (kept, stats), started)


def solved_before(state: CycleState, term: str) -> bool:
    """Whether ``term`` has gains from an earlier cycle."""
    if TERMS[term].per_direction:
        return state.directions is not None
    return term in state.gains


def terms_due(run: Run, state: CycleState, cycle: int) -> list[str]:
    """The gain terms solved in major cycle ``cycle`` (those not undone)."""
    return [t for t in run.schedule.terms_at(cycle - 1) if t not in state.disabled]


def diverging(state: CycleState) -> bool:
    """True when the last cycle's dynamic range fell below :data:`UNDO_FRACTION` of the best
    so far: the cycles are making the image worse (a clean or calibration diverging)."""
    return state.cycles[-1].dynamic_range < UNDO_FRACTION * state.best["dynamic_range"]


def back_to_best(run: Run, state: CycleState) -> None:
    """Return to the model and gains of the best cycle (the final residual is made from
    them: the whole model is predicted again) and stop the major cycles, with a warning."""
    best, last = state.best, state.cycles[-1]
    LOG.warning(
        "ICAL cycle %d made the image worse (dynamic range %.0f, %.0f after cycle %d): the "
        "major cycles stop and the result is that of cycle %d",
        last.cycle,
        last.dynamic_range,
        best["dynamic_range"],
        best["cycle"],
        best["cycle"],
    )
    state.undone.append(
        {
            "cycle": last.cycle,
            "terms": [],
            "dynamic_range_with": last.dynamic_range,
            "dynamic_range_before": best["dynamic_range"],
            "back_to_cycle": best["cycle"],
        }
    )
    state.model = state.increment = best["model"]
    state.gains = dict(best["gains"])
    state.directions = best["directions"]
    state.model_vis = [None] * run.ngroups
    state.predicted = []


UNDO_FRACTION = 0.9
"""A new gain term is undone when the dynamic range after its first cycle is below this
fraction of the last cycle's."""


def settled(run: Run, state: CycleState, cycle: int) -> bool:
    """True if major cycle ``cycle + 1`` would reproduce cycle ``cycle`` exactly.

    It would when the minor cycle added nothing (the model is the one this cycle solved
    against) and the next cycle solves the same terms: the same solve from the converged
    gains, the same residual, the same (empty) clean.
    """
    last = state.cycles[-1]
    return last.components == 0 and terms_due(run, state, cycle + 1) == list(last.solved)
