"""The truth written beside the simulated MeasurementSets, for ICAL and for tests.

Files in the output directory:

- ``truth_skymodel.txt``: the APPARENT (beam-attenuated) point sources exactly as the
  visibilities contain them, WSClean/DP3 format (:mod:`sdpbatch.io.skymodel_file`);
- ``truth_intrinsic_skymodel.txt``: the same sources before the station beam (INTRINSIC
  fluxes and spectra), same order and names: what a primary-beam corrected image shows;
- ``catalogue_skymodel.txt``: the same sources as a survey catalogue records them (flux and
  position errors, ``catalogue_*_error`` parameters), apparent fluxes, same format: what ICAL
  calibrates against first (``calibration_model`` 'catalogue'), so that it is not the truth;
- ``truth_gains.h5``: the true station gains, H5parm layout (:mod:`sdpbatch.io.gaintable`),
  axes time x station x window, ``DATA_pq = g_p conj(g_q) TRUE_pq``;
- ``truth_ionosphere.h5`` (only with ``ionosphere_rms_phase`` > 0): dataset ``phase`` (time x
  station x source) rad at 100 MHz, the screen's phase at each station's pierce point towards
  each source; ``DATA_pq`` holds ``exp(i phase_ps 1e8/nu) conj(exp(i phase_qs 1e8/nu))`` for
  source s; datasets ``time`` (MJD s), ``station``, ``source``, ``ra``, ``dec`` (rad), the
  screen's parameters as attributes;
- ``simulation.json``: the parameters used, station/baseline/time counts, the products.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from sdpbatch.io.atomic import atomic_path
from sdpbatch.io.gaintable import GainTable, read_gain_table, write_gain_table
from sdpbatch.io.skymodel_file import read_sky_model, write_sky_model
from sdpbatch.science.skymodel import SkyModel
from sdpbatch.vocabulary import (
    CATALOGUE_FILE,
    SIMULATION_FILE,
    TRUTH_GAINS_FILE,
    TRUTH_INTRINSIC_FILE,
    TRUTH_IONOSPHERE_FILE,
    TRUTH_SKYMODEL_FILE,
)

BEAM_HEADERS = {
    "airy": (
        "Truth of an sdpbatch simulation: APPARENT fluxes (intrinsic x SKA1-Low station beam",
        "pointed at the phase centre), i.e. exactly what the visibilities contain (no gains).",
    ),
    "none": (
        "Truth of an sdpbatch simulation: INTRINSIC fluxes (no station beam), i.e. what the",
        "visibilities contain before any gains.",
    ),
    "everybeam": (
        "Truth of an sdpbatch simulation: APPARENT fluxes (intrinsic x the mean over stations",
        "and times of the EveryBeam station power beams); each station and time sees its own.",
    ),
}
"""The first lines of the truth sky model's header, by parameter ``beam``."""


@dataclass
class Truth:
    """What a simulation put into its data."""

    sky: SkyModel
    gains: GainTable
    summary: dict[str, Any]
    intrinsic: SkyModel | None = None  # before the station beam (absent in older truths)


def write_truth(
    out_dir: str | Path,
    *,
    apparent_sky: SkyModel,
    intrinsic_sky: SkyModel,
    catalogue: SkyModel,
    gains: np.ndarray,
    times: np.ndarray,
    antenna_names: list[str],
    antenna_positions: np.ndarray,
    frequencies: np.ndarray,
    phase_centre: tuple[float, float],
    summary: dict[str, Any],
    ionosphere: np.ndarray | None = None,
    ionosphere_attributes: dict[str, float] | None = None,
) -> list[Path]:
    """Write the truth files and the catalogue (each atomically) and return their paths.

    ``gains`` are (ntimes, nant) (the same for every window) or (ntimes, nant, nfreq);
    ``ionosphere`` (ntimes, nant, nsrc) phases at 100 MHz of the sources of ``apparent_sky``,
    or None (no file), with the screen's parameters ``ionosphere_attributes``.
    """
    out = Path(out_dir)
    gains = np.asarray(gains)
    freqs = np.atleast_1d(np.asarray(frequencies, dtype=np.float64))
    if gains.ndim == 2:
        gains = np.repeat(gains[:, :, None], freqs.size, axis=2)
    header, catalogue_header = _headers(
        freqs, phase_centre, summary.get("parameters", {}).get("beam", "airy"), ionosphere
    )
    paths = [
        write_sky_model(out / TRUTH_SKYMODEL_FILE, apparent_sky, header=header),
        write_sky_model(out / TRUTH_INTRINSIC_FILE, intrinsic_sky, header=INTRINSIC_HEADER),
        write_sky_model(out / CATALOGUE_FILE, catalogue, header=catalogue_header),
        write_gain_table(
            out / TRUTH_GAINS_FILE,
            gains=gains,
            times=times,
            antenna_names=antenna_names,
            antenna_positions=antenna_positions,
            frequencies=freqs,
            source_direction=phase_centre,
        ),
    ]
    if ionosphere is not None:
        paths.append(
            write_ionosphere(
                out / TRUTH_IONOSPHERE_FILE,
                phase=ionosphere,
                times=times,
                antenna_names=antenna_names,
                sky=apparent_sky,
                attributes=ionosphere_attributes or {},
            )
        )
    return [*paths, _write_summary(out / SIMULATION_FILE, summary)]


def _write_summary(path: Path, summary: dict[str, Any]) -> Path:
    """The simulation's parameters and figures (``simulation.json``), atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(summary, indent=2, sort_keys=True) + "\n")
    return path


INTRINSIC_HEADER = [
    "Truth of an sdpbatch simulation: INTRINSIC fluxes, the sky before the station",
    f"beam; {TRUTH_SKYMODEL_FILE} holds the same sources as the visibilities do.",
]
"""The header lines of the intrinsic truth sky model."""


def _headers(freqs, phase_centre, beam: str, ionosphere) -> tuple[list[str], list[str]]:
    """The header lines of the truth sky model and of the catalogue."""
    header = [
        *BEAM_HEADERS[beam],
        "Spectra: S(nu) = I * (nu/nu0)**(c0 + c1*x + ...), x = log10(nu/nu0), fitted to the",
        f"beam-attenuated spectrum at the {freqs.size} simulated frequencies.",
        f"Phase centre (J2000): ra {np.degrees(phase_centre[0]):.9f} deg, "
        f"dec {np.degrees(phase_centre[1]):.9f} deg.",
        *([f"Ionospheric phases per time, station and source: {TRUTH_IONOSPHERE_FILE}."]
          if ionosphere is not None else []),
    ]  # fmt: skip
    catalogue_header = [
        "Catalogue of an sdpbatch simulation's field, as a survey would give it: the sources of",
        f"{TRUTH_SKYMODEL_FILE} with flux and position errors (APPARENT fluxes, the same beam).",
        *header[2:],
    ]
    return header, catalogue_header


def write_ionosphere(
    path: Path,
    *,
    phase: np.ndarray,
    times: np.ndarray,
    antenna_names: list[str],
    sky: SkyModel,
    attributes: dict[str, float],
) -> Path:
    """Write the true screen phases (see the module's description) atomically."""
    with atomic_path(path) as tmp, h5py.File(tmp, "w") as f:
        f.create_dataset("phase", data=np.asarray(phase, dtype=np.float64))
        f.create_dataset("time", data=np.asarray(times, dtype=np.float64))
        f.create_dataset("station", data=np.array(antenna_names, dtype="S"))
        f.create_dataset("source", data=np.array(list(sky.names), dtype="S"))
        f.create_dataset("ra", data=np.asarray(sky.ra, dtype=np.float64))
        f.create_dataset("dec", data=np.asarray(sky.dec, dtype=np.float64))
        f.attrs["unit"] = "rad at 100 MHz; phase(nu) = phase * 1e8 / nu"
        for key, value in attributes.items():
            f.attrs[key] = value
    return path


def read_ionosphere(path: str | Path) -> dict[str, np.ndarray]:
    """The datasets of a ``truth_ionosphere.h5`` (names decoded to str)."""
    with h5py.File(path, "r") as f:
        out = {k: f[k][()] for k in f}
    for key in ("station", "source"):
        out[key] = np.array([v.decode() for v in out[key]])
    return out


def read_truth(directory: str | Path) -> Truth:
    """Read the truth files of a simulation output directory."""
    d = Path(directory)
    summary_path = d / SIMULATION_FILE
    try:
        summary = json.loads(summary_path.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise ValueError(f"{summary_path}: cannot read the simulation summary ({err})") from err
    intrinsic = d / TRUTH_INTRINSIC_FILE
    return Truth(
        sky=read_sky_model(d / TRUTH_SKYMODEL_FILE),
        gains=read_gain_table(d / TRUTH_GAINS_FILE),
        summary=summary,
        intrinsic=read_sky_model(intrinsic) if intrinsic.is_file() else None,
    )


def simulation_record(ms_paths) -> tuple[Path, dict[str, Any]] | None:
    """(its path, its content) of the one ``simulation.json`` that lists every MeasurementSet of
    ``ms_paths`` (beside them, by name), or None: MeasurementSets sdpbatch did not simulate,
    or from several simulations, or a record that cannot be read."""
    folders = {Path(p).resolve().parent for p in ms_paths}
    if len(folders) != 1:
        return None
    path = folders.pop() / SIMULATION_FILE
    try:
        record = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None
    listed = set(record.get("measurement_sets", [])) if isinstance(record, dict) else set()
    if not ms_paths or any(Path(p).name not in listed for p in ms_paths):
        return None
    return path, record
