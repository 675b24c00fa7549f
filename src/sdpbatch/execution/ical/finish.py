"""The end of an ICAL run: the final residuals, cubes, restored images and the result."""

from __future__ import annotations

import logging
import time

import numpy as np

from sdpbatch.execution.ical.combine import FinalImages, final_images
from sdpbatch.execution.ical.cycles import predict, residual_of
from sdpbatch.execution.ical.results import FinalRecord, GainSolution, IcalResult
from sdpbatch.execution.ical.state import CycleState, Imaging, Run
from sdpbatch.science.solve import TERMS

LOG = logging.getLogger("sdpbatch.execution.ical")


def finish(run: Run, imaging: Imaging, state: CycleState) -> IcalResult:
    """The final residual of every channel block (one more pass), its Taylor residual, the
    per-block cubes and the restored images."""
    started, runner = time.perf_counter(), run.runner
    predict(run, imaging, state, "predict-final")
    residual = residual_of(run, imaging, state, "residual-final")
    # the products are wanted here anyway: finish them in this process
    model, psf, residual = runner.gather([state.model, state.psf, residual])
    state.model_vis = imaging.groups = None  # release the data on the workers
    final = final_images(
        model,
        state.beam,
        residual,
        imaging.moments,
        cellsize=imaging.setup.cellsize,
        nthreads=run.params.threads_per_worker,
    )
    run.clock.lap("restore")
    weights = np.array([residual.weights.get(b, 0.0) for b in range(len(run.blocks))])
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
    return _result(run, imaging, state, model, psf[0], final, record, weights)


def _result(run, imaging, state, model, psf, final: FinalImages, record, weights):
    frequencies = run.frequencies
    reference = imaging.setup.reference_frequency
    solutions = {
        term: GainSolution(
            gains=g,
            times=imaging.intervals[term][1],
            frequencies=frequencies.copy() if TERMS[term].per_channel else np.array([reference]),
            boundaries=imaging.intervals[term][0],
            per_channel=TERMS[term].per_channel,
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
        frequencies=np.array([b.frequency for b in run.blocks]),
        bandwidths=np.array([b.bandwidth for b in run.blocks]),
        block_weights=weights,
        channel_frequencies=frequencies,
        reference_frequency=reference,
        cellsize=float(imaging.setup.cellsize),
        npixel=int(imaging.setup.npixel),
        phase_centre=(float(first.phase_centre[0]), float(first.phase_centre[1])),
        solutions=solutions,
        antenna_names=list(first.antenna_names),
        antenna_positions=np.asarray(first.antenna_positions),
        cycles=state.cycles,
        final=record,
        undone=state.undone,
        timings=run.clock.timings,
        stage_intervals=run.clock.intervals,
    )
