"""Writing the product set of an ICAL run: staged beside ``out_dir``, then moved in.

Products in ``out_dir``, named by :func:`sdpbatch.vocabulary.product_files` from the ``prefix``
parameter (WSClean's ``-name``; by default ``ska_pipeline_ical``):

- ``<prefix>_restored.fits`` (MFS, Jy/beam, BMAJ/BMIN/BPA), ``<prefix>_residual.fits``
  (MFS Taylor-0 residual, Jy/beam), ``<prefix>_deconvolved.fits`` (Taylor-0 model, Jy/pixel);
- ``<prefix>_{restored,residual,deconvolved}_cube.fits``: one plane per channel block;
- ``<prefix>_gains.h5``: solved gains in the H5parm layout
  (:mod:`sdpbatch.io.gaintable`); term k of the calibration context in soltabs
  ``phase00k`` / ``amplitude00k`` (attribute ``TERM`` = "T", "G" or "B"; "none", unit gains,
  without self-calibration); the D term last, with its directions on the ``dir`` axis
  (``Dir00``, ... in the source table with their ra, dec);
- ``qa.json``: the parameters (so the ``prefix`` the others were named with), image
  statistics, per-cycle statistics, timings and, with the simulation's truth, the
  solved-vs-true gain phase error and the brightest sources' recovered flux and position
  (and their corrected flux against the intrinsic sky, with primary-beam correction);
  moved in after the files above, so it always describes a complete set;
- ``<prefix>_restored.png``: a preview;
- with primary-beam correction (:mod:`sdpbatch.execution.primary_beam`): ``<prefix>_beam.fits``
  (the average station power beam, dimensionless) and ``<prefix>_restored_pb.fits`` (the
  restored image divided by it, NaN where the beam is below ``PB_LIMIT``), and the clean model as
  component lists, ``<prefix>_sources.txt`` (apparent fluxes) and ``<prefix>_sources_pb.txt``
  (intrinsic fluxes) (:mod:`sdpbatch.science.components`);
- ``provenance.json`` (:mod:`sdpbatch.io.provenance`): where every file came from, written
  and moved in after the others.
"""

from __future__ import annotations

import os
import shutil
import time
import uuid
from pathlib import Path
from typing import Any

import numpy as np

from sdpbatch.execution.ical import IcalResult
from sdpbatch.execution.primary_beam import PrimaryBeam, components, primary_beam
from sdpbatch.execution.runner import InProcess, runner_record
from sdpbatch.io.atomic import TEMP_MARK
from sdpbatch.io.fits_image import write_fits_image
from sdpbatch.io.gaintable import GainTable, write_gain_terms
from sdpbatch.io.ms_observation import read_telescope_name
from sdpbatch.io.ms_read import MeasurementSetInfo
from sdpbatch.io.preview import write_preview_png
from sdpbatch.io.provenance import environment, metadata_identity, write_manifest
from sdpbatch.io.qa import write_qa
from sdpbatch.io.skymodel_file import write_sky_model
from sdpbatch.parameters import PB_LIMIT, Parameters
from sdpbatch.science.assess import (
    brightest_sources,
    gain_phase_error,
    gains_on,
    gradient_image_shift,
    image_statistics,
    measure_source,
    sky_to_pixel,
    source_offsets_summary,
)
from sdpbatch.vocabulary import PROVENANCE, TRUTH_INTRINSIC_FILE, product_files

NBRIGHTEST = 10


def write_products(
    out_dir: Path, result, params, infos, *, truth, beam, extra, timings, started, runner
):
    """Images, gains, preview and qa.json (with ``extra`` entries) staged beside ``out_dir``,
    then moved in; (paths by role, the qa record).  ``beam``: the station beam the data were
    observed with (its image on the grid and the corrected restored image are written), or
    None."""
    write_start = time.perf_counter()
    if runner is None:
        runner = InProcess(params.threads_per_worker)
    pb = None if beam is None else primary_beam(beam, result, runner)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = out_dir.parent / f"{out_dir.name}{TEMP_MARK}{uuid.uuid4().hex[:8]}"
    staging.mkdir()
    names = product_files(params.prefix)
    try:
        written = _write_images(staging, result, infos, params, pb)
        if pb is not None:
            written.update(_write_components(staging, result, params, pb))
        written["gains"] = _write_gains(staging / names["gains"], result)
        written["preview"] = write_preview_png(
            staging / names["preview"],
            result.restored,
            cellsize=result.cellsize,
            phase_centre=result.phase_centre,
            beam=result.clean_beam,
            title=f"ICAL restored image ({len(infos)} window(s), "
            f"{result.reference_frequency / 1e6:.1f} MHz)",
        )
        now = time.perf_counter()
        beam_time = {} if pb is None else {"primary_beam": pb.seconds}
        timings = {**timings, **beam_time, "write": now - write_start, "total": now - started}
        qa = {**build_qa(result, params, infos, truth=truth, pb=pb, timings=timings), **extra}
        written["qa"] = write_qa(staging / names["qa"], qa)
        manifest = write_manifest(
            staging,
            files=list(written.values()),
            record=_provenance_record(params, infos, runner=runner, timings=timings, result=result),
        )
        return _move_into(staging, out_dir, written, manifest=manifest), qa
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _provenance_record(params, infos, *, runner, timings, result) -> dict[str, Any]:
    """What the manifest says of the run beside the software: parameters as resolved, the
    inputs' identities, the engine and its workers, the stage times."""
    return {
        "parameters": params.to_dict(),
        "inputs": [metadata_identity(info) for info in infos],
        "engine": runner_record(runner),
        "stages": timings,
        "resumed_from": result.resumed_from,
    }


def _move_into(
    staging: Path, out_dir: Path, written: dict[str, Path], *, manifest: Path
) -> dict[str, Path]:
    """Rename the staged files into ``out_dir`` (same filesystem: each rename is atomic) in
    the order of ``written`` (qa.json, the record that names the set, last of them), then
    the manifest: an earlier manifest goes first, so it never describes a mix of files."""
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / manifest.name).unlink(missing_ok=True)
    final = {}
    for role, path in written.items():
        target = out_dir / path.name
        os.replace(path, target)
        final[role] = target
    final["provenance"] = out_dir / manifest.name
    os.replace(manifest, final["provenance"])
    return final


def _write_images(
    staging: Path, result, infos: list[MeasurementSetInfo], params: Parameters, pb
) -> dict[str, Path]:
    common = dict(
        phase_centre=result.phase_centre,
        cellsize=result.cellsize,
        obs_start=min(i.time_range[0] for i in infos),  # MJD s of the first integration
        telescope=read_telescope_name(infos[0].path),
        history=[
            f"sdpbatch ICAL of {len(infos)} MeasurementSet(s): "
            + ", ".join(i.path.name for i in infos),
            f"nmajor {params.nmajor} niter {params.niter} gain {params.clean_gain} "
            f"scales {params.scales} nmoment {params.nmoment} selfcal {params.selfcal} "
            f"context {params.calibration_context} weighting {params.weighting}",
            *_software_history(),
        ],
    )
    freqs = np.asarray(result.frequencies, dtype=np.float64)
    widths = np.asarray(result.bandwidths, dtype=np.float64)
    mfs = dict(frequencies=[result.reference_frequency], bandwidths=[float(widths.sum())])
    cube_freqs = _even_axis(freqs)
    cube = dict(frequencies=cube_freqs, bandwidths=widths)
    beam = result.clean_beam
    model0 = np.asarray(result.model_taylor)[0]
    residual0 = np.asarray(result.residual_taylor)[0]
    items = {
        "restored": (result.restored, "Jy/beam", beam, mfs),
        "residual": (residual0, "Jy/beam", None, mfs),
        "deconvolved": (model0, "Jy/pixel", None, mfs),
        "restored_cube": (result.restored_cube, "Jy/beam", beam, cube),
        "residual_cube": (result.residual_cube, "Jy/beam", None, cube),
        "deconvolved_cube": (result.model_cube, "Jy/pixel", None, cube),
    }
    if pb is not None:  # WSClean's -beam-0.fits (dimensionless) and -image-pb.fits
        items.update(beam=(pb.beam, "", None, mfs), restored_pb=(pb.restored, "Jy/beam", beam, mfs))
    names = product_files(params.prefix)
    written = {}
    for role, (image, bunit, beam_, axis) in items.items():
        extra = {}
        if axis is cube and not np.allclose(cube_freqs, freqs):
            extra["HISTORY"] = "window frequencies (Hz): " + " ".join(f"{f:.1f}" for f in freqs)
        written[role] = write_fits_image(
            staging / names[role],
            np.asarray(image),
            bunit=bunit,
            beam=beam_,
            extra_header=extra,
            **axis,
            **common,
        )
    return written


def _write_components(staging: Path, result, params: Parameters, pb) -> dict[str, Path]:
    """The clean model as component lists, apparent and intrinsic fluxes apart."""
    apparent, intrinsic = components(result, pb)
    names = product_files(params.prefix)
    where = f"ICAL's clean model of {params.prefix}: one point component per model pixel,"
    return {
        "sources": write_sky_model(staging / names["sources"], apparent, header=[
            where, "APPARENT fluxes (as the data hold them: times the station beam)."]),
        "sources_pb": write_sky_model(staging / names["sources_pb"], intrinsic, header=[
            where, f"INTRINSIC fluxes (divided by the station beam of {names['beam']};",
            f"components where it is below {PB_LIMIT} left out)."]),
    }  # fmt: skip


def _software_history() -> list[str]:
    """FITS HISTORY lines naming the software (the manifest beside the file has the rest)."""
    env = environment()
    deps = " ".join(f"{name} {v}" for name, v in env["dependencies"].items() if v)
    return [f"sdpbatch {env['sdpbatch']} python {env['python']}", deps, f"provenance: {PROVENANCE}"]


def _even_axis(freqs: np.ndarray) -> np.ndarray:
    """The frequencies, or an evenly spaced axis through their ends if they are not even
    (a linear FITS FREQ axis cannot hold gaps; the true values go into HISTORY)."""
    if freqs.size < 3:
        return freqs
    even = np.linspace(freqs[0], freqs[-1], freqs.size)
    return freqs if np.allclose(freqs, even, rtol=1e-6, atol=1e-3) else even


def _write_gains(path: Path, result) -> Path:
    """All solved terms into one H5parm (term k -> soltabs phase00k / amplitude00k); unit gains
    (term "none") without self-calibration, so the product always exists."""
    stations = dict(
        antenna_names=list(result.antenna_names),
        antenna_positions=np.asarray(result.antenna_positions),
    )
    terms = {
        term: GainTable(gains=sol.gains, times=sol.times, frequencies=sol.frequencies, **stations)
        for term, sol in result.solutions.items()
    }
    found = result.directions
    if found is not None:  # (dir, time, ant, 1) -> (time, ant, freq 1, dir)
        terms["D"] = GainTable(
            gains=found.gains.transpose(1, 2, 3, 0),
            times=found.times,
            frequencies=[found.frequency],
            weights=(~found.flags).transpose(1, 2, 3, 0).astype(float),
            directions=found.names,
            direction_radec=found.radec,
            **stations,
        )
    if not terms:
        nant = len(result.antenna_names)
        unit = np.ones((1, nant, 1), complex)
        terms["none"] = GainTable(unit, [0.0], frequencies=[result.reference_frequency], **stations)
    return write_gain_terms(path, terms, source_direction=tuple(result.phase_centre))


# ---------------------------------------------------------------------------------------------
# quality assessment
# ---------------------------------------------------------------------------------------------


def build_qa(
    result,
    params: Parameters,
    infos: list[MeasurementSetInfo],
    *,
    truth=None,
    pb: PrimaryBeam | None = None,
    timings: dict[str, float],
) -> dict[str, Any]:
    """The QA record: inputs, image statistics, cycles, timings and the truth comparison
    (with the primary-beam corrected fluxes when there is a ``pb``)."""
    residual0 = np.asarray(result.residual_taylor)[0]
    beam = result.clean_beam
    qa: dict[str, Any] = {
        "inputs": [
            {"path": str(i.path), "nrow": i.nrow, "nchan": i.nchan, "correlations": i.correlations}
            for i in infos
        ],
        "parameters": params.to_dict(),
        "image": {
            "npixel": int(result.npixel),
            "cellsize_rad": float(result.cellsize),
            "reference_frequency_hz": float(result.reference_frequency),
            "phase_centre_deg": [float(np.degrees(v)) for v in result.phase_centre],
        },
        "clean_beam_deg": {
            "bmaj": float(np.degrees(beam.bmaj)),
            "bmin": float(np.degrees(beam.bmin)),
            "bpa": float(np.degrees(beam.bpa)),
        },
        "restored": image_statistics(result.restored, noise_image=residual0),
        "residual": image_statistics(residual0),
        "cycles": [c.to_dict() for c in result.cycles],
        "final": result.final.to_dict() if result.final else None,
        "selfcal_undone": list(result.undone),
        "primary_beam": None if pb is None else pb.record(),
        "timings_s": timings,
    }
    if result.directions is not None:
        found = result.directions
        qa["directions"] = [
            {"name": name, "ra_deg": float(np.degrees(rd[0])), "dec_deg": float(np.degrees(rd[1])),
             **stats}
            for name, rd, stats in zip(found.names, found.radec, found.stats, strict=True)
        ]  # fmt: skip
    if truth is not None:
        qa["truth"] = compare_with_truth(result, truth, pb=pb)
    return qa


def compare_with_truth(result: IcalResult, truth, *, pb: PrimaryBeam | None = None) -> dict:
    """Solved-vs-true phase error and the brightest true sources measured in the restored image.

    Self-calibration cannot determine a linear phase gradient across the array: what it
    leaves moves the whole image by a fraction of a pixel.  That common shift is reported
    beside the shift the solved-vs-true gains predict, and the source offsets both as
    measured and after removing the common shift (the relative astrometry).
    """
    out: dict[str, Any] = {}
    true = truth.gains
    if result.solutions:
        index = {n: k for k, n in enumerate(result.antenna_names)}
        missing = [n for n in true.antenna_names if n not in index]
        if missing:
            raise ValueError(f"truth stations {missing[:3]} are not among the solved stations")
        solved = gains_on(
            [(s.gains, s.times, s.frequencies) for s in result.solutions.values()],
            stations=np.array([index[n] for n in true.antenna_names]),
            times=true.times,
            frequencies=true.frequencies,
        )
        out["gain_phase_rms_error_rad"] = gain_phase_error(
            solved, true.gains, true.antenna_positions
        )
        out["gain_phase_rms_true_rad"] = float(np.std(np.angle(true.gains)))
        out["gradient_shift_pixels"] = list(
            gradient_image_shift(
                solved,
                true.gains,
                true.antenna_positions,
                frequencies=np.asarray(result.frequencies),
                cellsize=float(result.cellsize),
            )
        )
    sky = truth.sky
    # Taylor term 0 at nu0 = mean frequency is the intercept of a straight-line fit over
    # t = (nu - nu0)/nu0 with sum(t) = 0: the band-averaged flux, not I(nu0) (they differ by
    # the spectral curvature, several per cent for sources in the beam's skirt).
    sources = brightest_sources(
        result.restored,
        ra=sky.ra,
        dec=sky.dec,
        flux=sky.flux_at(np.asarray(result.channel_frequencies)).mean(axis=1),
        phase_centre=result.phase_centre,
        cellsize=result.cellsize,
        count=NBRIGHTEST,
    )
    if pb is not None:
        out.update(_pb_fluxes(sources, pb.restored, truth, result))
    for s in sources:
        k = s.pop("index")
        s.update(
            name=sky.names[k] if k < len(sky.names) else str(k),
            ra_deg=float(np.degrees(sky.ra[k])),
            dec_deg=float(np.degrees(sky.dec[k])),
        )
    out["brightest_sources"] = sources
    out.update(source_offsets_summary(sources))
    return out


def _pb_fluxes(sources: list[dict], restored_pb: np.ndarray, truth, result) -> dict[str, Any]:
    """The measured sources' intrinsic fluxes (the truth's sky before the station beam) beside
    their flux in the primary-beam corrected image, added to each source; the worst error."""
    sky = truth.intrinsic
    if sky is None:
        return {"pb_flux_comparison": f"no {TRUTH_INTRINSIC_FILE} in the truth"}
    flux = sky.flux_at(np.asarray(result.channel_frequencies)).mean(axis=1)
    n, image = restored_pb.shape[0], np.nan_to_num(restored_pb)
    errors = []
    for s in sources:
        k = s["index"]
        ix, iy = sky_to_pixel(sky.ra[k], sky.dec[k], result.phase_centre, result.cellsize, n)
        measured = measure_source(image, float(ix), float(iy))[0]
        s.update(intrinsic_flux_jy=float(flux[k]), pb_corrected_flux_jy=measured,
                 pb_flux_ratio=measured / float(flux[k]))  # fmt: skip
        errors.append(abs(measured / float(flux[k]) - 1.0))
    return {"max_pb_flux_error": max(errors)} if errors else {}
