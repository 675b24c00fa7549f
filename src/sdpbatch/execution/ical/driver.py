"""``run_ical``: the story of one ICAL run (the seed's ICAL, see the science reference).

1. read: the windows (one MeasurementSet each) are cut into groups by their size, not by the
   workers (group g runs on worker g mod n, so the sums are the same on any layout); each
   group reads its MeasurementSets itself and keeps them as chunks (in memory, or spilled to
   scratch in time chunks when large).  Only small things (times, weight sums, solved cells,
   the sums of cells groups share, gains) and images travel.
2. cycle 0: PSF Taylor images; with a sky model, the first self-calibration cycle's terms
   solved against it; dirty Taylor images; multi-scale multi-frequency clean.
3. up to ``nmajor`` major cycles: update each group's model visibilities with the last minor
   cycle's increment -> solve the terms due (each group solves the intervals it alone
   holds, the shared ones are summed on the cluster; worker 0 finishes the term) -> correct
   fresh data and grid the Taylor residual per group -> sum -> clean.
   Once a minor cycle finds nothing and no new term is due, further cycles would repeat it:
   the run stops there.
4. the last pass: final residual per window (the Taylor residual follows from it), kept in a
   checkpoint; restore with the clean beam fitted to the PSF.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from pathlib import Path

from sdpbatch.execution.ical.checkpoint import capture, fingerprint, restore, restore_ending
from sdpbatch.execution.ical.cycles import (
    back_to_best,
    diverging,
    first_cycle,
    major_cycle,
    read,
    settled,
)
from sdpbatch.execution.ical.finish import Ending, finish, last_pass
from sdpbatch.execution.ical.plan import (
    assign,
    channel_blocks,
    resolve_channel_blocks,
    work_items,
)
from sdpbatch.execution.ical.results import IcalResult
from sdpbatch.execution.ical.scratch import remove_scratch
from sdpbatch.execution.ical.settings import CalibrationSchedule, IcalSettings, resolve_threads
from sdpbatch.execution.ical.state import CycleState, Run
from sdpbatch.execution.progress import NoProgress, Progress
from sdpbatch.execution.runner import InProcess, Runner, describe_slots
from sdpbatch.io.checkpoint import Checkpoint, write_checkpoint
from sdpbatch.io.ms_read import MeasurementSetInfo
from sdpbatch.io.ms_set import check_measurement_sets
from sdpbatch.parameters import Parameters
from sdpbatch.science.skymodel import SkyModel

LOG = logging.getLogger("sdpbatch.execution.ical")


def run_ical(
    ms_paths: Sequence[str | Path],
    params: Parameters,
    *,
    runner: Runner | None = None,
    settings: IcalSettings | None = None,
    progress: Progress | None = None,
    sky_model: SkyModel | None = None,
    infos: list[MeasurementSetInfo] | None = None,
    checkpoint: Path | None = None,
    resume: Checkpoint | None = None,
) -> IcalResult:
    """Self-calibrate and image MeasurementSets (one per frequency window); write nothing.

    Parameters
    ----------
    ms_paths : the MeasurementSets, in frequency-window order; each window may hold several
        channels.  All must share the phase centre and the antennas.
    params : imaging, deconvolution and calibration parameters (npixel/cellsize None: advised
        from the data).
    runner : where tasks run (:func:`sdpbatch.execution.cluster.open_runner`); default this
        process with ``params.threads_per_worker`` threads.  On a cluster the windows are
        spread over groups, one per ``settings.group_visibilities``, whatever the workers.
    settings : execution knobs (chunk and group sizes); results do not depend on them.
    progress : receives a step per cycle (log lines per cycle are always written).
    sky_model : components (apparent fluxes) to calibrate against before the first image: the
        terms due in the first self-calibration cycle are solved against them, so the image
        sits where the catalogue says; None: self-calibration alone, whose images carry the
        common shift of the phase gradient it cannot determine.
    infos : the MeasurementSets' metadata from :func:`check_measurement_sets`, if already read.
    checkpoint : where to keep the run's checkpoint (:mod:`~.checkpoint`), written after
        each major cycle; None: no checkpoint.
    resume : a checkpoint to go on from (its fingerprint checked by the caller): the cycles
        it holds are not made again, and the results are those of the run it came from.
    """
    run = _start(ms_paths, params, runner, settings or IcalSettings(), progress, infos)
    saved = _Checkpoints(run, checkpoint, resume)
    try:
        started = time.perf_counter()
        taken_up = None if resume is None else restore_ending(run, resume)
        if taken_up is None:
            imaging = read(run)
            state, first = _begin(run, imaging, sky_model, resume, saved)
            _major_cycles(run, imaging, state, first, saved)
            started = time.perf_counter()
            ending = last_pass(run, imaging, state)
            saved.write(state, next_cycle=params.nmajor + 1, ending=ending)
        else:
            LOG.info("ICAL resumed after its last pass: only the products are left")
            state, ending = taken_up
        result = finish(run, state, ending, started=started)
        result.resumed_from = saved.resumed_from
        return result
    finally:
        run.runner.run_everywhere(remove_scratch, run.run_id)


def _begin(run: Run, imaging, sky_model, resume, saved) -> tuple[CycleState, int]:
    """Cycle 0 (then a checkpoint), or the state ``resume`` holds; the next major cycle."""
    if resume is None:
        state = first_cycle(run, imaging, sky_model)
        saved.write(state, next_cycle=1)
        return state, 1
    state, first = restore(run, imaging, resume)
    LOG.info(
        "ICAL resumed after cycle %d: %s",
        first - 1,
        "the finish is left" if first > run.params.nmajor else f"cycle {first} is next",
    )
    return state, first


def _major_cycles(run: Run, imaging, state: CycleState, first: int, saved) -> None:
    """Major cycles from ``first`` until ``nmajor``, or until they settle or make the image
    worse (then back to the best cycle); a checkpoint after each."""
    nmajor = run.params.nmajor
    for cycle in range(first, nmajor + 1):
        major_cycle(run, imaging, state, cycle)
        ended = diverging(state)
        if ended:
            back_to_best(run, state)
        elif cycle < nmajor and settled(run, state, cycle):
            LOG.info(
                "ICAL settled after cycle %d of %d: nothing left above the clean "
                "threshold and no new gain term due, so further cycles would repeat it",
                cycle,
                nmajor,
            )
            ended = True
        saved.write(state, next_cycle=nmajor + 1 if ended else cycle + 1)
        if ended:
            return


class _Checkpoints:
    """Writes the run's checkpoint at each major-cycle boundary, when it has a place."""

    def __init__(self, run: Run, path: Path | None, resume: Checkpoint | None):
        self.run, self.path = run, path
        self.resumed_from = (  # the cycles this run and those before it were taken up after
            [] if resume is None else [*resume.meta["resumed_from"], resume.meta["next_cycle"] - 1]
        )
        self.fingerprint = None if path is None else fingerprint(run.params, run.infos)

    def write(self, state, *, next_cycle: int, ending: Ending | None = None) -> None:
        if self.path is None:
            return
        content = capture(
            self.run,
            state,
            next_cycle=next_cycle,
            identity=self.fingerprint,
            resumed_from=self.resumed_from,
            ending=ending,
        )
        write_checkpoint(self.path, content)
        self.run.clock.lap("checkpoint")


def _start(ms_paths, params, runner, settings, progress, infos) -> Run:
    """The fixed part of a run: channel blocks, work items, their groups on the runner's
    workers, threads."""
    if infos is None:
        infos = check_measurement_sets(
            ms_paths, data_column=params.data_column, field=params.field, spw=params.spw
        )
    runner = runner if runner is not None else InProcess(params.threads_per_worker)
    nblocks, why = resolve_channel_blocks(infos, params.channel_blocks, params.nmoment)
    LOG.info("ICAL: %d channel block(s), %s", nblocks, why)
    blocks = channel_blocks(infos, nblocks)
    items = work_items(infos, blocks, settings.chunk_visibilities, params.data_column)
    nvis = sum(item.nvis for item in items)
    ngroups = min(len(items), -(-nvis // settings.group_visibilities))  # not the workers
    groups = assign(items, max(1, ngroups))
    threads = resolve_threads(runner, len(groups))
    LOG.info(
        "ICAL: %d channel block(s), %d work item(s) in %d group(s) on %s; "
        "a group computes with %d thread(s)",
        len(blocks),
        len(items),
        len(groups),
        describe_slots(runner.slots),
        threads.group,
    )
    bar = progress or NoProgress()
    bar.begin("ICAL", params.nmajor + 2)
    schedule = CalibrationSchedule.from_parameters(params)
    return Run(runner, params, settings, schedule, infos, blocks, groups, threads, bar)
