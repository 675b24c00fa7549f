"""The end of an ICAL run: the last pass (final residuals), then cubes, restored images and
the result."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

import numpy as np

from sdpbatch.execution.ical.combine import FinalImages, final_images
from sdpbatch.execution.ical.cycles import predict, residual_of
from sdpbatch.execution.ical.results import (
    DirectionGains,
    FinalRecord,
    GainSolution,
    IcalResult,
)
from sdpbatch.execution.ical.state import CycleState, Imaging, Run
from sdpbatch.execution.ical.tasks import BlockImages
from sdpbatch.science.beam import CleanBeam
from sdpbatch.science.directions import radec_of
from sdpbatch.science.solve import TERMS

LOG = logging.getLogger("sdpbatch.execution.ical")


@dataclass
class Ending:
    """What the products are made from once the last pass over the data is done; a checkpoint
    keeps it (no visibilities), so a run stopped while writing its products resumes here.

    model : (nmoment, N, N) Jy/pixel; psf : (N, N) term-0 PSF, peak 1; beam : the clean beam;
    residual : the final residual of every channel block (unnormalised, with weight sums);
    moments : (nblocks, 2 nmoment - 1) Taylor moments of the blocks; intervals : solution
    (boundaries, centres) per term; cellsize (rad), npixel; reference_frequency (Hz).
    """

    model: np.ndarray
    psf: np.ndarray
    beam: CleanBeam
    residual: BlockImages
    moments: np.ndarray
    intervals: dict[str, tuple[np.ndarray, np.ndarray]]
    cellsize: float
    npixel: int
    reference_frequency: float


def last_pass(run: Run, imaging: Imaging, state: CycleState) -> Ending:
    """The final residual of every channel block (one more pass over the data), then the
    data released on the workers."""
    predict(run, imaging, state, "predict-final")
    residual = residual_of(run, imaging, state, "residual-final")
    # the products are wanted here anyway: finish them in this process
    model, psf, residual = run.runner.gather([state.model, state.psf, residual])
    state.model_vis = imaging.groups = None
    setup = imaging.setup
    return Ending(
        model=model,
        psf=psf[0],
        beam=state.beam,
        residual=residual,
        moments=imaging.moments,
        intervals=imaging.intervals,
        cellsize=float(setup.cellsize),
        npixel=int(setup.npixel),
        reference_frequency=float(setup.reference_frequency),
    )


def finish(run: Run, state: CycleState, ending: Ending, *, started: float) -> IcalResult:
    """The Taylor residual, the per-block cubes and the restored images; the result."""
    final = final_images(
        ending.model,
        ending.beam,
        ending.residual,
        ending.moments,
        cellsize=ending.cellsize,
        nthreads=run.params.threads_per_worker,
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
    return _result(run, state, ending, final, record)


def _result(run, state, ending: Ending, final: FinalImages, record) -> IcalResult:
    frequencies = run.frequencies
    reference = ending.reference_frequency
    solutions = {
        term: GainSolution(
            gains=g,
            times=ending.intervals[term][1],
            frequencies=frequencies.copy() if TERMS[term].per_channel else np.array([reference]),
            boundaries=ending.intervals[term][0],
            per_channel=TERMS[term].per_channel,
        )
        for term, g in state.gains.items()
    }
    first = run.infos[0]
    found = state.directions
    directions = None if found is None else DirectionGains(
        gains=found.gains,
        flags=found.flags,
        times=ending.intervals["D"][1],
        centres=found.centres,
        radec=radec_of(*found.centres.T, first.phase_centre),
        frequency=reference,
        stats=found.stats,
    )  # fmt: skip
    return IcalResult(
        directions=directions,
        model_taylor=ending.model,
        residual_taylor=final.residual_taylor,
        restored=final.restored,
        model_cube=final.model_cube,
        residual_cube=final.residual_cube,
        restored_cube=final.restored_cube,
        psf=ending.psf,
        clean_beam=ending.beam,
        frequencies=np.array([b.frequency for b in run.blocks]),
        bandwidths=np.array([b.bandwidth for b in run.blocks]),
        block_weights=np.array(
            [ending.residual.weights.get(b, 0.0) for b in range(len(run.blocks))]
        ),
        channel_frequencies=frequencies,
        reference_frequency=reference,
        cellsize=ending.cellsize,
        npixel=ending.npixel,
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
