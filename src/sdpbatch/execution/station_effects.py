"""The simulation's direction-dependent station gains: station beams and the ionosphere.

Parameter ``beam``: 'airy' puts one analytic power beam into the apparent fluxes (no gains
here), 'none' no beam; 'everybeam' a voltage beam per station, time, source and channel, the
station's array factor (:mod:`sdpbatch.science.aperture_array`, 256 elements, each station
turned by its own angle) times EveryBeam's SKA-Low element pattern
(:mod:`sdpbatch.io.everybeam_element`), 1 at the pointing (the phase centre).  Its mean power
over stations and times becomes the apparent flux (so the truth sky model holds what an
average station sees) and the gains are the beam divided by its root.

``ionosphere_rms_phase`` > 0: a von Karman/Kolmogorov screen (:mod:`sdpbatch.science.
ionosphere`) drifting east, the gain ``exp(i phi_ps(t) 100 MHz / nu)`` of station p towards
source s, ``phi`` at the pierce point.  Random numbers: station turns ``SeedSequence(seed,
spawn_key=(3,))``, screen ``SeedSequence(seed, spawn_key=(4,))``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from sdpbatch.io.everybeam_element import EveryBeamUnavailable, element_voltage
from sdpbatch.parameters import ParameterError, Parameters
from sdpbatch.science.aperture_array import (
    array_factor,
    horizon_directions,
    theta_phi,
    vogel_layout,
)
from sdpbatch.science.constants import SITE_LAT
from sdpbatch.science.ionosphere import ionosphere_gains, screen_phases, von_karman_screen
from sdpbatch.science.observation import hour_angles
from sdpbatch.science.skymodel import SkyModel, station_beam

POWER_FLOOR = 1e-30
"""Mean beam power below which a source counts as in a null (gains divided by this root)."""


@dataclass
class StationBeams:
    """What the EveryBeam station beams of a block of times need."""

    elements: np.ndarray  # (nel, 2) m, an unrotated station
    rotations: np.ndarray  # (nant,) rad
    directions: np.ndarray  # (ntime, nsrc, 3) east-north-up
    pointing: np.ndarray  # (ntime, 3)
    element_gain: np.ndarray  # (ntime, nsrc, nfreq): element voltage / its value at pointing
    power: np.ndarray  # (nsrc, nfreq) mean power over stations and times

    def voltage(self, times: slice, channels: slice, frequencies: np.ndarray) -> np.ndarray:
        """(ntime, nant, nsrc, nchan) station voltage beams at ``frequencies[channels]``."""
        af = array_factor(
            self.elements,
            self.rotations,
            self.directions[times],
            self.pointing[times],
            frequencies[channels],
        )
        return af * self.element_gain[times, None, :, channels]


@dataclass
class DirectionGains:
    """The direction-dependent gains of a simulation (beam, ionosphere or both)."""

    beams: StationBeams | None
    ionosphere: np.ndarray | None  # (ntime, nant, nsrc) rad at 100 MHz

    def block(self, times: slice, channels: slice, frequencies: np.ndarray) -> np.ndarray:
        """(ntime, nant, nsrc, nchan) complex gains of a block of times and channels."""
        nu = frequencies[channels]
        gains = 1.0
        if self.beams is not None:
            root = np.sqrt(np.maximum(self.beams.power[:, channels], POWER_FLOOR))
            gains = self.beams.voltage(times, channels, frequencies) / root
        if self.ionosphere is not None:
            gains = gains * ionosphere_gains(self.ionosphere[times], nu)
        return np.asarray(gains, dtype=np.complex128)


def power_response(params: Parameters, gains: DirectionGains | None) -> np.ndarray | None:
    """The power response that goes into the apparent fluxes: None for the Airy beam
    (``apparent_sky``'s own), ones for no beam, the EveryBeam mean power."""
    if params.beam == "airy":
        return None
    if gains is None or gains.beams is None:
        return 1.0
    return gains.beams.power


def average_power(
    params: Parameters,
    ra: np.ndarray,
    dec: np.ndarray,
    *,
    phase_centre: tuple[float, float],
    nstations: int,
    frequencies: np.ndarray,
) -> np.ndarray:
    """(n, nfreq) the station power beam the simulation of ``params`` applied towards (ra, dec)
    rad at ``frequencies`` Hz, averaged over its ``nstations`` stations and its times: what
    the apparent fluxes of its truth hold (:func:`power_response`, the Airy beam of
    ``apparent_sky``), here at any direction (ICAL's primary-beam image)."""
    ra, dec = np.asarray(ra, dtype=np.float64), np.asarray(dec, dtype=np.float64)
    freqs = np.atleast_1d(np.asarray(frequencies, dtype=np.float64))
    if params.beam == "none":
        return np.ones((ra.size, freqs.size))
    if params.beam == "airy":
        return station_beam(ra, dec, phase_centre, freqs)
    directions = horizon_directions(ra, dec, phase_centre, hour_angles(params.ntimes), SITE_LAT)
    return _station_beams(params, directions, phase_centre, nstations, freqs).power


def direction_gains(
    params: Parameters,
    sky: SkyModel,
    *,
    phase_centre: tuple[float, float],
    enu: np.ndarray,
    frequencies: np.ndarray,
    times: np.ndarray,
) -> DirectionGains | None:
    """The gains for ``params`` (None when neither EveryBeam beams nor an ionosphere)."""
    beam = params.beam == "everybeam"
    if not beam and params.ionosphere_rms_phase == 0:
        return None
    directions = horizon_directions(
        sky.ra, sky.dec, phase_centre, hour_angles(params.ntimes), SITE_LAT
    )
    beams = (
        _station_beams(params, directions, phase_centre, enu.shape[0], frequencies)
        if beam
        else None
    )
    screen = None
    if params.ionosphere_rms_phase > 0:
        rng = np.random.default_rng(np.random.SeedSequence(params.seed, spawn_key=(4,)))
        screen = screen_phases(
            von_karman_screen(
                rng,
                rms_phase=params.ionosphere_rms_phase,
                diffractive_scale=params.ionosphere_scale_km * 1e3,
            ),
            enu[:, :2],
            directions,
            times - times[0],
            speed=params.ionosphere_speed * 1e3,
        )
    return DirectionGains(beams=beams, ionosphere=screen)


def _station_beams(params, directions, phase_centre, nstations, frequencies) -> StationBeams:
    pointing = horizon_directions(
        np.array([phase_centre[0]]), np.array([phase_centre[1]]), phase_centre,
        hour_angles(params.ntimes), SITE_LAT,
    )[:, 0]  # fmt: skip
    try:
        theta, phi = theta_phi(directions)
        element = element_voltage(theta, phi, frequencies)
        at_pointing = element_voltage(*theta_phi(pointing), frequencies)
    except (EveryBeamUnavailable, RuntimeError) as err:
        raise ParameterError("beam", f"'everybeam' cannot be used here: {err}") from err
    rng = np.random.default_rng(np.random.SeedSequence(params.seed, spawn_key=(3,)))
    beams = StationBeams(
        elements=vogel_layout(),
        rotations=rng.uniform(0.0, 2.0 * np.pi, nstations),
        directions=directions,
        pointing=pointing,
        element_gain=element / at_pointing[:, None, :],
        power=np.zeros((directions.shape[1], frequencies.size)),
    )
    for t in range(directions.shape[0]):
        for c in range(frequencies.size):
            v = beams.voltage(slice(t, t + 1), slice(c, c + 1), frequencies)
            beams.power[:, c] += np.mean(np.abs(v[0, :, :, 0]) ** 2, axis=0)
    beams.power /= directions.shape[0]
    return beams
