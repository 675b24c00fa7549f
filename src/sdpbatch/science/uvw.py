"""UVW coordinates.

:func:`antenna_uvw` is what the MeasurementSet gets: casacore measures converts each station's
ITRF offset from the array centre into (u, v, w) in the J2000 frame of the phase centre at each
time (``measures.to_uvw``), the same machinery DP3 (``UVWCalculator``) and CASA use, so the
numbers match other tools.  casacore's ITRF -> J2000 conversion of a baseline includes precession,
nutation and the annual aberration of the direction (~1e-4 rad): a purely geometric computation
differs from it by a rigid rotation of up to ~8 cm on 1.3 km baselines (see the tests).
Baseline UVW follow the MeasurementSet convention ``uvw(antenna2) - uvw(antenna1)``.

:func:`xyz_to_uvw` is the seed's (RASCIL's) purely geometric formula, kept for comparison.
"""

from __future__ import annotations

import numpy as np
from casacore import quanta as qa
from casacore.measures import measures


def antenna_uvw(
    itrf: np.ndarray, times: np.ndarray, phase_centre: tuple[float, float], centre: np.ndarray
) -> np.ndarray:
    """Per-station UVW (ntimes, nant, 3) metres, J2000, relative to the array ``centre``.

    Parameters
    ----------
    itrf : (nant, 3) station positions, ITRF metres.
    times : (ntimes,) MJD seconds (UTC).
    phase_centre : (ra, dec) J2000, radians.
    centre : (3,) ITRF metres of the array reference position (sets the observer's frame).
    """
    me = measures()
    me.do_frame(me.position("ITRF", *[qa.quantity(float(v), "m") for v in centre]))
    me.do_frame(me.direction("J2000", f"{phase_centre[0]!r}rad", f"{phase_centre[1]!r}rad"))
    rel = np.asarray(itrf, dtype=np.float64) - np.asarray(centre, dtype=np.float64)
    baseline = me.baseline("ITRF", *[qa.quantity(rel[:, k].tolist(), "m") for k in range(3)])
    out = np.empty((len(times), rel.shape[0], 3))
    for i, t in enumerate(np.asarray(times, dtype=np.float64)):
        me.do_frame(me.epoch("UTC", qa.quantity(float(t), "s")))
        out[i] = np.asarray(me.to_uvw(baseline)["xyz"].get_value()).reshape(-1, 3)
    return out


def baseline_uvw(ant_uvw: np.ndarray, antenna1: np.ndarray, antenna2: np.ndarray) -> np.ndarray:
    """Baseline UVW (ntimes*nbl, 3) m, time-major, from per-station UVW (ntimes, nant, 3).

    Row ``t * nbl + k`` holds ``ant_uvw[t, antenna2[k]] - ant_uvw[t, antenna1[k]]``.
    """
    return (ant_uvw[:, antenna2, :] - ant_uvw[:, antenna1, :]).reshape(-1, 3)


def enu_to_local_xyz(enu: np.ndarray, latitude: float) -> np.ndarray:
    """Local equatorial x, y, z (m) of east/north/up offsets at ``latitude`` (rad).

    x points to the meridian on the equator (hour angle 0), y east, z to the celestial pole.
    """
    e, n, u = np.moveaxis(np.asarray(enu, dtype=np.float64), -1, 0)
    sl, cl = np.sin(latitude), np.cos(latitude)
    return np.stack([-n * sl + u * cl, e, n * cl + u * sl], axis=-1)


def xyz_to_uvw(xyz: np.ndarray, hour_angle: float, dec: float) -> np.ndarray:
    """Geometric UVW (..., 3) m of local equatorial vectors ``xyz`` (..., 3) m (seed's formula).

    Thompson, Moran & Swenson eq. 4.1 (RASCIL's ``xyz_to_uvw`` up to its axis naming):
    u = x sin h + y cos h, v = -x sin d cos h + y sin d sin h + z cos d,
    w = x cos d cos h - y cos d sin h + z sin d, for hour angle h and declination d (rad).
    With the apparent (of date) h and d this is UVW in the apparent frame of date.
    """
    x, y, z = np.moveaxis(np.asarray(xyz, dtype=np.float64), -1, 0)
    sh, ch = np.sin(hour_angle), np.cos(hour_angle)
    sd, cd = np.sin(dec), np.cos(dec)
    u = x * sh + y * ch
    v = -x * sd * ch + y * sd * sh + z * cd
    w = x * cd * ch - y * cd * sh + z * sd
    return np.stack([u, v, w], axis=-1)
