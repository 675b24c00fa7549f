"""Primary-beam correction of ICAL's products: which station beam applies, and its image.

A MeasurementSet does not say which station beam its data were observed with.  sdpbatch's
simulation records its parameters in ``simulation.json`` beside the MeasurementSets it writes
(:func:`sdpbatch.io.truth.simulation_record`): its ``beam``, and what the EveryBeam station
beams depend on (the seed that turns the stations, the hour angles of ``ntimes``, the number
of stations).  That beam is the one ICAL corrects with, whatever ``beam`` ICAL's own
parameters hold.  Parameter ``pb_correct``: null (auto) corrects when the record names a beam
other than 'none'; true corrects with the recorded beam (all ones for 'none') and is refused
when there is no record; false never corrects.

The beam image is the station power beam averaged over stations and times
(:func:`sdpbatch.execution.station_effects.average_power`, the one the apparent fluxes of the
simulation's truth hold) at the frequencies of ICAL's channel blocks, averaged with the blocks'
imaging weights as the MFS (Taylor-0) images are, on a coarse grid interpolated to every pixel
(:mod:`sdpbatch.science.primary_beam`).  Not the beam at the band's centre: a source at 30 %
of the beam sees it change by -+25 % across a +-10 % band, and the band's mean beam is about
1 % above the centre's there.  What stays is the correlation of the source's spectrum with
the beam's (the MFS image holds the beam-weighted mean of the spectrum): in
``tests/test_ical_primary_beam.py`` (3 channels, 90-110 MHz) the corrected fluxes are within
0.6 % of the intrinsic ones down to 45 % of the Airy beam, 0.8 % at 39 % of the narrower
EveryBeam beam and 2.5 % at 18 %.
"""

from __future__ import annotations

import math
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from sdpbatch.execution.runner import Runner
from sdpbatch.execution.station_effects import average_power
from sdpbatch.io.truth import simulation_record
from sdpbatch.parameters import FIELDS, PB_LIMIT, ParameterError, Parameters, parse_parameters
from sdpbatch.science.components import model_components, model_pixels
from sdpbatch.science.primary_beam import CoarseBeam, coarse_beam, corrected
from sdpbatch.science.skymodel import SkyModel
from sdpbatch.vocabulary import SIMULATION_FILE


@dataclass(frozen=True)
class ObservedBeam:
    """The station beam of a simulation's MeasurementSets."""

    simulation: Parameters  # the simulation's parameters (beam, seed, ntimes, ra, dec)
    nstations: int
    record: Path  # the simulation.json it was read from

    @property
    def pointing(self) -> tuple[float, float]:
        return math.radians(self.simulation.ra), math.radians(self.simulation.dec)


def observed_beam(ms_paths) -> ObservedBeam | None:
    """The beam the simulation that wrote ``ms_paths`` applied, or None when not known."""
    found = simulation_record(ms_paths)
    if found is None:
        return None
    path, record = found
    try:
        simulation = recorded_parameters(record)
        nstations = int(record["nstations"])
    except (KeyError, TypeError, ValueError):
        return None
    return ObservedBeam(simulation=simulation, nstations=nstations, record=path)


def recorded_parameters(record: dict) -> Parameters:
    """The parameters a ``simulation.json`` records (of an older sdpbatch: the fields this one
    knows); ValueError (a ParameterError) when they are not valid here."""
    recorded = record.get("parameters", {}) if isinstance(record, dict) else None
    if not isinstance(recorded, dict):
        raise ValueError("no parameters recorded")
    return parse_parameters({k: v for k, v in recorded.items() if k in FIELDS})


def beam_to_apply(params: Parameters, ms_paths) -> tuple[ObservedBeam | None, str]:
    """(the beam ICAL corrects with or None, why: a sentence for the log) by ``pb_correct``.

    Raises ParameterError naming ``pb_correct`` when it is true and no beam is known."""
    if params.pb_correct is False:
        return None, "No primary-beam correction (pb_correct false)"
    found = observed_beam(ms_paths)
    if found is None:
        if params.pb_correct:
            raise ParameterError(
                "pb_correct",
                f"true, but the station beam of these MeasurementSets is not known (no "
                f"{SIMULATION_FILE} beside them lists them); allowed here: false or null (auto)",
            )
        return None, (
            f"No primary-beam correction (pb_correct auto): the station beam of these "
            f"MeasurementSets is not known (no {SIMULATION_FILE} beside them lists them)"
        )
    beam = found.simulation.beam
    if beam == "none" and params.pb_correct is None:
        return None, (
            f"No primary-beam correction (pb_correct auto): the simulation applied no station "
            f"beam (beam 'none' in {found.record})"
        )
    return found, f"Primary-beam correction with the simulation's '{beam}' beam ({found.record})"


def beam_grid(beam: ObservedBeam, result, runner: Runner) -> tuple[CoarseBeam, np.ndarray]:
    """(the beam at the channel blocks' frequencies on the coarse grid of ICAL's ``result``,
    the blocks' imaging weights): the MFS beam is their weighted mean.  The grid's directions
    are split over the ``runner``'s threads (EveryBeam's cost: each direction is 256 element
    patterns per time, and an array factor per station, time and block)."""
    frequencies = np.asarray(result.frequencies, dtype=np.float64)
    weights = np.asarray(result.block_weights, dtype=np.float64)
    if weights.shape != frequencies.shape or not weights.sum() > 0:
        weights = np.ones(frequencies.size)
    token = uuid.uuid4().hex[:8]

    def power_at(ra: np.ndarray, dec: np.ndarray) -> np.ndarray:
        parts = np.array_split(np.arange(ra.size), sum(s.nthreads for s in runner.slots))
        handles = [
            runner.submit(_power, beam, ra[k], dec[k], frequencies, key=f"beam-{token}-{n}")
            for n, k in enumerate(parts)
            if k.size
        ]
        return np.concatenate(runner.gather(handles))

    grid = coarse_beam(
        power_at,
        npixel=int(result.npixel),
        cellsize=float(result.cellsize),
        phase_centre=tuple(result.phase_centre),
    )
    return grid, weights


def _power(beam: ObservedBeam, ra, dec, frequencies) -> np.ndarray:
    """A task: (n, nfreq) the average station power beam of ``beam`` towards (ra, dec)."""
    return average_power(
        beam.simulation, ra, dec,
        phase_centre=beam.pointing, nstations=beam.nstations, frequencies=frequencies,
    )  # fmt: skip


@dataclass(frozen=True)
class PrimaryBeam:
    """The primary beam on the image grid and the restored image divided by it (blank below
    the beam limit), the beam it is and how long it took."""

    beam: np.ndarray
    restored: np.ndarray
    observed: ObservedBeam
    grid: CoarseBeam  # per channel block, for the components' spectra
    weights: np.ndarray  # the channel blocks' imaging weights
    seconds: float

    def record(self) -> dict[str, Any]:
        """qa.json's note: the beam, where it was recorded, the limit, the blank fraction."""
        return {
            "beam": self.observed.simulation.beam,
            "record": str(self.observed.record),
            "limit": PB_LIMIT,
            "blank_fraction": float(np.mean(self.beam < PB_LIMIT)),
        }


def components(result, pb: PrimaryBeam) -> tuple[SkyModel, SkyModel]:
    """The clean model of ``result`` as (apparent, intrinsic) component lists: the intrinsic
    one divided by the beam at each component and channel block, without the components
    where the MFS beam is below :data:`PB_LIMIT` (blank in the corrected image too)."""
    common = dict(
        cellsize=float(result.cellsize),
        phase_centre=tuple(result.phase_centre),
        reference_frequency=float(result.reference_frequency),
        frequencies=np.asarray(result.frequencies, dtype=np.float64),
    )
    apparent = model_components(result.model_taylor, **common)
    power = pb.grid.at(*model_pixels(result.model_taylor))
    seen = power @ pb.weights / pb.weights.sum() >= PB_LIMIT
    power = np.where(seen[:, None] & (power > 0), power, 1.0)  # those left out: no division
    intrinsic = model_components(result.model_taylor, power=power, **common)
    return apparent, intrinsic.select(seen)


def primary_beam(observed: ObservedBeam, result, runner: Runner) -> PrimaryBeam:
    """The beam of ``observed`` on ``result``'s image grid and the corrected restored image."""
    start = time.perf_counter()
    grid, weights = beam_grid(observed, result, runner)
    beam = grid.image(weights)
    restored = corrected(result.restored, beam, limit=PB_LIMIT)
    return PrimaryBeam(beam, restored, observed, grid, weights, time.perf_counter() - start)
