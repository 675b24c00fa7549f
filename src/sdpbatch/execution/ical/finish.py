"""The end of an ICAL run: the final residuals, cubes, restored images and the result."""

from __future__ import annotations

import logging
import time

import numpy as np

from sdpbatch.execution.ical.combine import FinalImages, final_images
from sdpbatch.execution.ical.cycles import predict, residual_of
from sdpbatch.execution.ical.results import FinalRecord, GainSolution, IcalResult
from sdpbatch.execution.ical.state import CycleState, Imaging, Run
from sdpbatch.execution.ical.tasks import group_window_residuals
from sdpbatch.science.beam import restore
from sdpbatch.science.solve import TERMS

LOG = logging.getLogger("sdpbatch.execution.ical")


def finish(run: Run, imaging: Imaging, state: CycleState) -> IcalResult:
    """Final residual per window (and the Taylor residual from it), cubes, restore.

    With several channels per window, the Taylor residual is gridded exactly (per-channel
    factors) rather than combined from the windows'.
    """
    started, runner = time.perf_counter(), run.runner
    predict(run, imaging, state, "predict-final")
    windows = run.per_group(
        group_window_residuals,
        "window-residuals",
        imaging.groups,
        state.model_vis,
        shared=(state.gains, imaging.setup),
    )
    runner.wait(windows)
    run.clock.lap("grid")
    exact = None
    if any(i.nchan > 1 for i in run.infos):
        exact = residual_of(run, imaging, state, "residual-final")
    # the products are wanted here anyway: finish them in this process
    model, psf, exact = runner.gather([state.model, state.psf, exact])
    state.model_vis = imaging.groups = None  # release the data on the workers
    threads = run.params.threads_per_worker
    final = final_images(
        model,
        state.beam,
        (runner.gather(w) for w in windows),  # one group's window images at a time
        nwin=len(run.windows),
        cellsize=imaging.setup.cellsize,
        nthreads=threads,
    )
    del windows
    if exact is not None:
        final.residual_taylor = exact[0]
        final.restored = (
            restore(model[0], state.beam, imaging.setup.cellsize, nthreads=threads) + exact[0][0]
        )
    run.clock.lap("restore")
    residual = final.residual_taylor[0]
    record = FinalRecord(
        peak=float(np.abs(residual).max()),
        rms=float(np.sqrt(np.mean(residual**2))),
        seconds=time.perf_counter() - started,
    )
    LOG.info("ICAL %s", record.message())
    run.progress.step(record.message())
    run.clock.timings["total"] = time.perf_counter() - run.started
    run.progress.end()
    return _result(run, imaging, state, model, psf[0][0], final, record)


def _result(run, imaging, state, model, psf, final: FinalImages, record) -> IcalResult:
    frequencies = run.frequencies
    reference = imaging.setup.reference_frequency
    solutions = {
        term: GainSolution(
            gains=g,
            times=imaging.intervals[term][1],
            frequencies=frequencies.copy() if TERMS[term].per_channel else np.array([reference]),
        )
        for term, g in state.gains.items()
    }
    first = run.infos[0]
    return IcalResult(
        model_taylor=model,
        residual_taylor=final.residual_taylor,
        restored=final.restored,
        model_cube=final.model_cube,
        residual_cube=final.residual_cube,
        restored_cube=final.restored_cube,
        psf=psf,
        clean_beam=state.beam,
        frequencies=np.array([float(i.frequency.mean()) for i in run.infos]),
        bandwidths=np.array([float(i.channel_width.sum()) for i in run.infos]),
        reference_frequency=reference,
        cellsize=float(imaging.setup.cellsize),
        npixel=int(imaging.setup.npixel),
        phase_centre=(float(first.phase_centre[0]), float(first.phase_centre[1])),
        solutions=solutions,
        antenna_names=list(first.antenna_names),
        antenna_positions=np.asarray(first.antenna_positions),
        cycles=state.cycles,
        final=record,
        timings=run.clock.timings,
        stage_intervals=run.clock.intervals,
    )
