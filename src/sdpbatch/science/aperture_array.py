"""The SKA-Low station as an aperture array: element layout, directions, array factor.

A station is 256 elements in a 38 m circle (a Vogel spiral: even density, no grating
lobes), each station turned by its own angle (SKA-Low rotates its stations so that their
sidelobes differ).  Its voltage beam towards a direction ``s`` (east-north-up unit vector),
phased to the pointing ``s0``, is the array factor

    AF_p(s) = (1/N) sum_e exp(-2j pi nu/c  r_pe . (s - s0))

(1 at the pointing) times the element's voltage pattern.  The directions of sources at each
time follow from the hour angle of the phase centre (:func:`horizon_directions`).
"""

from __future__ import annotations

import numpy as np

from sdpbatch.science.constants import C

ELEMENTS = 256
STATION_APERTURE = 38.0
"""Metres: diameter of the circle the elements fill."""
_GOLDEN_ANGLE = np.pi * (3.0 - np.sqrt(5.0))


def vogel_layout(n: int = ELEMENTS, diameter: float = STATION_APERTURE) -> np.ndarray:
    """(n, 2) east/north metres of ``n`` elements on a Vogel spiral filling ``diameter``."""
    k = np.arange(n)
    r = 0.5 * diameter * np.sqrt((k + 0.5) / n)
    return np.stack([r * np.cos(k * _GOLDEN_ANGLE), r * np.sin(k * _GOLDEN_ANGLE)], axis=-1)


def horizon_directions(
    ra: np.ndarray,
    dec: np.ndarray,
    phase_centre: tuple[float, float],
    hour_angles: np.ndarray,
    latitude: float,
) -> np.ndarray:
    """(ntime, nsrc, 3) east-north-up unit vectors of sources (ra, dec rad) when the phase
    centre is at ``hour_angles`` (ntime,) rad, seen from ``latitude`` (rad)."""
    h = np.asarray(hour_angles, dtype=np.float64)[:, None] + phase_centre[0] - np.asarray(ra)
    d = np.broadcast_to(np.asarray(dec, dtype=np.float64), h.shape)
    sl, cl = np.sin(latitude), np.cos(latitude)
    east = -np.cos(d) * np.sin(h)
    north = np.sin(d) * cl - np.cos(d) * np.cos(h) * sl
    up = np.sin(d) * sl + np.cos(d) * np.cos(h) * cl
    return np.stack([east, north, up], axis=-1)


def theta_phi(directions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Zenith angle and azimuth from east towards north (rad) of east-north-up vectors."""
    d = np.asarray(directions, dtype=np.float64)
    return np.arccos(np.clip(d[..., 2], -1.0, 1.0)), np.arctan2(d[..., 1], d[..., 0])


def array_factor(
    elements: np.ndarray,
    rotations: np.ndarray,
    directions: np.ndarray,
    pointing: np.ndarray,
    frequency: np.ndarray,
) -> np.ndarray:
    """(ntime, nant, nsrc, nchan) complex array factors, 1 at the pointing.

    elements (nel, 2) east/north metres of an unrotated station; rotations (nant,) rad, each
    station's turn (anticlockwise seen from above); directions (ntime, nsrc, 3) and pointing
    (ntime, 3) east-north-up unit vectors; frequency (nchan,) Hz.
    """
    frequency = np.atleast_1d(np.asarray(frequency, dtype=np.float64))
    delta = (directions - pointing[:, None, :])[..., :2]  # (ntime, nsrc, 2)
    ntime, nsrc = delta.shape[:2]
    out = np.empty((ntime, rotations.size, nsrc, frequency.size), dtype=np.complex128)
    for p, angle in enumerate(np.asarray(rotations, dtype=np.float64)):
        c, s = np.cos(angle), np.sin(angle)
        turned = elements @ np.array([[c, s], [-s, c]])  # (nel, 2): rows rotated by +angle
        path = np.einsum("ek,tsk->tse", turned, delta)  # metres
        for ch, nu in enumerate(frequency):
            out[:, p, :, ch] = np.exp((-2j * np.pi * nu / C) * path).mean(axis=-1)
    return out
