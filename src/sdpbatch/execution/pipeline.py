"""The ICAL products pipeline and the whole batch imaging workflow (simulate, then ICAL).

:func:`ical_pipeline` reads as the story: check every MeasurementSet (nothing is written if
one is bad) -> run ICAL (:func:`sdpbatch.execution.ical.run_ical`) -> write the products into a
staging folder beside ``out_dir`` -> move them in.  A failure anywhere leaves ``out_dir`` as it
was (earlier products are kept).

The products (:mod:`sdpbatch.execution.products`) are named by
:func:`sdpbatch.vocabulary.product_files` from the ``prefix`` parameter.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sdpbatch.execution.ical import run_ical
from sdpbatch.execution.ical.checkpoint import check_fingerprint
from sdpbatch.execution.primary_beam import beam_to_apply
from sdpbatch.execution.products import write_products
from sdpbatch.execution.progress import Progress
from sdpbatch.execution.runner import Runner
from sdpbatch.execution.writeback import write_back
from sdpbatch.io.checkpoint import (
    CheckpointError,
    checkpoint_dir,
    read_checkpoint,
    remove_checkpoint,
    remove_checkpoint_partials,
)
from sdpbatch.io.ms_read import MeasurementSetInfo
from sdpbatch.io.ms_set import check_measurement_sets
from sdpbatch.io.provenance import record_change
from sdpbatch.io.skymodel_file import SkyModelFileError, read_sky_model
from sdpbatch.parameters import CATALOGUE, NO_MODEL, ParameterError, Parameters
from sdpbatch.vocabulary import (
    CATALOGUE_FILE,
    TRUTH_GAINS_FILE,
    TRUTH_SKYMODEL_FILE,
)

LOG = logging.getLogger(__name__)
WORKFLOW_LOG = logging.getLogger("batch_imaging")


@dataclass
class IcalProducts:
    """What :func:`ical_pipeline` wrote."""

    out_dir: Path
    paths: dict[str, Path]  # role (restored, residual, ..., qa, preview) -> file
    qa: dict[str, Any]
    seconds: float = 0.0
    stage_intervals: list[tuple[str, float, float]] = field(default_factory=list)
    """(stage, start, end) on the ``time.perf_counter`` clock, ICAL's stages and the write."""


@dataclass
class BatchImagingProducts:
    """What :func:`batch_imaging_pipeline` wrote."""

    simulation: Any  # sdpbatch.execution.simulate.SimulationProducts
    ical: IcalProducts
    extra: dict = field(default_factory=dict)


# ---------------------------------------------------------------------------------------------
# checks before anything runs
# ---------------------------------------------------------------------------------------------


def truth_present(truth_dir: Path | None) -> bool:
    return truth_dir is not None and all(
        (Path(truth_dir) / name).is_file() for name in (TRUTH_SKYMODEL_FILE, TRUTH_GAINS_FILE)
    )


def calibration_model(params: Parameters, truth_dir: Path | None):
    """(file, SkyModel) that ICAL calibrates against first, or None (self-calibration alone).

    ``calibration_model`` 'catalogue' is the simulation's catalogue of the field in
    ``truth_dir`` (``catalogue_skymodel.txt``: the sources with catalogue errors, not the
    truth) when it is there; a file path must name a readable component list, else
    ParameterError (callers check it before any work).
    """
    choice = params.calibration_model
    if choice == NO_MODEL:
        return None
    if choice == CATALOGUE:
        path = None if truth_dir is None else Path(truth_dir) / CATALOGUE_FILE
        if path is None or not path.is_file():
            return None
    else:
        path = Path(choice)
    try:
        return path, read_sky_model(path)
    except (OSError, SkyModelFileError) as err:
        raise ParameterError(
            "calibration_model", f"{err}; allowed: 'catalogue', 'none' or a component list file"
        ) from err


# ---------------------------------------------------------------------------------------------
# the pipeline
# ---------------------------------------------------------------------------------------------


def ical_pipeline(
    ms_paths: Sequence[str | Path],
    out_dir: str | Path,
    params: Parameters,
    *,
    runner: Runner | None = None,
    truth_dir: str | Path | None = None,
    progress: Progress | None = None,
    infos: list[MeasurementSetInfo] | None = None,
    resume: bool = False,
) -> IcalProducts:
    """Self-calibrate and image ``ms_paths``; write the products into ``out_dir`` atomically.

    ``runner``: where the work runs (default this process); ``truth_dir``: a simulation output
    folder; when it holds ``truth_skymodel.txt`` and ``truth_gains.h5`` the QA compares the
    results with that truth; ``infos``: the metadata from :func:`check_measurement_sets`
    when the caller has checked the MeasurementSets already; ``resume``: go on from the
    checkpoint beside ``out_dir`` that a stopped run of the same inputs and parameters left
    (:mod:`sdpbatch.execution.ical.checkpoint`), if there is one.  The checkpoint is kept
    after each major cycle and removed once the products are written.
    """
    start = time.perf_counter()
    paths = [Path(p) for p in ms_paths]
    infos = infos or check_measurement_sets(
        paths, data_column=params.data_column, field=params.field, spw=params.spw
    )
    truth, model = _references(params, Path(truth_dir) if truth_dir else None)
    observed, why = beam_to_apply(params, paths)  # pb_correct true without a beam: refused
    LOG.info("%s", why)
    saved = checkpoint_dir(out_dir)
    taken_up = _checkpoint_to_resume(saved, params, infos) if resume else None
    _log_inputs(infos)
    result = run_ical(
        paths,
        params,
        runner=runner,
        progress=progress,
        sky_model=None if model is None else model[1],
        infos=infos,
        checkpoint=saved,
        resume=taken_up,
    )
    write_start, (final, qa) = _write(
        Path(out_dir), result, params, infos, truth=truth, beam=observed, model=model,
        runner=runner, started=start,
    )  # fmt: skip
    remove_checkpoint(saved)
    seconds = time.perf_counter() - start
    LOG.info("ICAL products in %s (%.1f s)", out_dir, seconds)
    intervals = [*result.stage_intervals, ("write", write_start, time.perf_counter())]
    return IcalProducts(
        out_dir=Path(out_dir), paths=final, qa=qa, seconds=seconds, stage_intervals=intervals
    )


def _write(out_dir: Path, result, params, infos, *, truth, beam, model, runner, started):
    """(when writing began, (the product files, qa)): MODEL_DATA/CORRECTED_DATA written back
    into the MeasurementSets, then the product set."""
    written_back = _write_back(infos, result, params, runner)
    write_start = time.perf_counter()
    timings = {**result.timings, "write_back": write_start - started - result.timings["total"]}
    return write_start, write_products(
        out_dir,
        result,
        params,
        infos,
        truth=truth,
        beam=beam,
        extra={"calibration_model": _model_record(model), "write_back": written_back},
        timings=timings,
        started=started,
        runner=runner,
    )


def _log_inputs(infos: list[MeasurementSetInfo]) -> None:
    nrow, nchan = sum(i.nrow for i in infos), sum(i.nchan for i in infos)
    LOG.info("ICAL of %d MeasurementSet(s): %d rows x %d channels in all", len(infos), nrow, nchan)


def _checkpoint_to_resume(path: Path, params: Parameters, infos):
    """The checkpoint at ``path`` when it fits this run (else ``ParameterError`` naming
    ``resume``); None, with a warning, when there is none."""
    remove_checkpoint_partials(path)
    try:
        found = read_checkpoint(path)
    except CheckpointError as err:
        raise ParameterError("resume", str(err)) from None
    if found is None:
        LOG.warning("resume: no checkpoint at %s, so the run starts from the beginning", path)
        return None
    check_fingerprint(found, params, infos, where=str(path))
    return found


def _write_back(infos, result, params: Parameters, runner) -> dict[str, list[str]]:
    """MODEL_DATA / CORRECTED_DATA as asked, logged and recorded in the manifest that lists
    the MeasurementSets (a simulation's); {window: columns written}."""
    written_back = write_back(infos, result, params, runner=runner)
    for window, columns in written_back.items():
        LOG.info("Wrote %s into %s", " and ".join(columns), window)
    columns = sorted({c for cols in written_back.values() for c in cols})
    if columns:  # every window is written with the same columns
        changed = sorted({info.path for info in infos})
        record_change(changed, what=f"ICAL wrote {' and '.join(columns)}")
    return written_back


def _model_record(model) -> dict | None:
    return None if model is None else {"file": str(model[0]), "components": len(model[1])}


def _references(params: Parameters, truth_dir: Path | None):
    """(the simulation's truth or None, the calibration model (file, SkyModel) or None)."""
    truth = None
    if truth_present(truth_dir):
        from sdpbatch.io.truth import read_truth

        truth = read_truth(truth_dir)
    model = calibration_model(params, truth_dir)
    if model is None:
        LOG.info(
            "No sky model to calibrate against (calibration_model %r): self-calibration alone; "
            "the image may carry a common shift of a fraction of a pixel",
            params.calibration_model,
        )
    return truth, model


# ---------------------------------------------------------------------------------------------
# the whole workflow
# ---------------------------------------------------------------------------------------------


def batch_imaging_pipeline(
    params: Parameters,
    vis_dir: str | Path,
    img_dir: str | Path,
    *,
    runner: Runner | None = None,
    progress: Progress | None = None,
    resume: bool = False,
) -> BatchImagingProducts:
    """The seed's batch imaging workflow: simulate into ``vis_dir``, then ICAL into ``img_dir``.

    ``resume``: a simulation already complete in ``vis_dir`` for these parameters is reused,
    and ICAL goes on from its checkpoint (see :func:`ical_pipeline`)."""
    from sdpbatch.execution.simulate import reusable_simulation, simulate

    calibration_model(params, None)  # a bad component list fails before simulating
    simulation = reusable_simulation(params, Path(vis_dir)) if resume else None
    if simulation is not None:
        WORKFLOW_LOG.info("Reusing the simulation in %s (complete: it verifies)", vis_dir)
    else:
        WORKFLOW_LOG.info("Running simulation pipeline")
        simulation = simulate(params, Path(vis_dir), runner=runner, progress=progress)
        WORKFLOW_LOG.info(
            "Simulated %d MeasurementSets in %s (%.1f s)",
            len(simulation.ms_paths),
            vis_dir,
            simulation.seconds,
        )
    WORKFLOW_LOG.info("Running ICAL pipeline")
    ical = ical_pipeline(
        simulation.ms_paths,
        img_dir,
        params,
        runner=runner,
        truth_dir=vis_dir,
        progress=progress,
        resume=resume,
    )
    WORKFLOW_LOG.info("ICAL products are in %s (%.1f s)", img_dir, ical.seconds)
    for role in ("restored", "residual", "deconvolved", "gains", "qa"):
        WORKFLOW_LOG.info("  %s: %s", role, ical.paths[role].name)
    return BatchImagingProducts(simulation=simulation, ical=ical)
