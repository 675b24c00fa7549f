"""The observation: hour angles, times, frequency windows and baselines.

As in the seed's library: ``ntimes`` hour angles over -30..+30 deg around the transit of the
phase centre, ``nfreqwin`` single-channel windows over ``freq_min..freq_max``.
"""

from __future__ import annotations

import math

import numpy as np
from casacore.measures import measures

from sdpbatch.science.constants import SIDEREAL_RATE, SITE_HEIGHT, SITE_LAT, SITE_LON

SINGLE_WINDOW_WIDTH = 1e6
"""Channel width (Hz) of a single window whose freq_min equals freq_max."""

SINGLE_TIME_INTERVAL = 10.0
"""Integration time (s) of a single time sample."""

HOUR_ANGLE_SPAN = math.radians(30.0)


def hour_angles(ntimes: int) -> np.ndarray:
    """(ntimes,) hour angles (rad): linspace(-30, +30 deg); a single sample is at transit (0)."""
    if ntimes == 1:
        return np.zeros(1)
    return np.linspace(-HOUR_ANGLE_SPAN, HOUR_ANGLE_SPAN, ntimes)


def integration_time(ntimes: int) -> float:
    """Integration time (s): the spacing of the samples in time, or 10 s for a single sample."""
    if ntimes == 1:
        return SINGLE_TIME_INTERVAL
    return float(2 * HOUR_ANGLE_SPAN / (ntimes - 1) / SIDEREAL_RATE)


def frequency_windows(
    freq_min: float, freq_max: float, nfreqwin: int
) -> tuple[np.ndarray, np.ndarray]:
    """Window centre frequencies and channel widths (Hz), each (nfreqwin,).

    ``linspace(freq_min, freq_max, nfreqwin)`` with width = the window spacing (the seed's
    choice: 90..110 MHz in 8 windows are 2.857 MHz wide).  A single window sits at the band
    centre with width ``freq_max - freq_min`` (or 1 MHz when they are equal).
    """
    if nfreqwin == 1:
        width = freq_max - freq_min if freq_max > freq_min else SINGLE_WINDOW_WIDTH
        return np.array([0.5 * (freq_min + freq_max)]), np.array([width])
    freqs = np.linspace(freq_min, freq_max, nfreqwin)
    return freqs, np.full(nfreqwin, freqs[1] - freqs[0])


def transit_time(
    ra: float,
    dec: float,
    obs_date: str,
    *,
    lon: float = SITE_LON,
    lat: float = SITE_LAT,
    height: float = SITE_HEIGHT,
) -> float:
    """MJD seconds (UTC) of the first transit on ``obs_date`` (YYYY-MM-DD) of (ra, dec) J2000 (rad).

    Found with casacore measures: the apparent hour angle of the direction is zero then.
    """
    me = measures()
    me.do_frame(me.position("WGS84", f"{lon}rad", f"{lat}rad", f"{height}m"))
    direction = me.direction("J2000", f"{ra}rad", f"{dec}rad")
    t = me.epoch("UTC", f"{obs_date}T00:00:00")["m0"]["value"] * 86400.0
    start = t
    for _ in range(4):
        me.do_frame(me.epoch("UTC", f"{t}s"))
        ha = me.measure(direction, "HADEC")["m0"]["value"]
        step = -math.remainder(ha, 2 * math.pi) / SIDEREAL_RATE
        t += step
        if abs(step) < 1e-4:
            break
    day = 2 * math.pi / SIDEREAL_RATE
    while t < start:
        t += day
    while t >= start + day:
        t -= day
    return t


def observation_times(transit: float, ntimes: int) -> np.ndarray:
    """(ntimes,) MJD seconds of the samples at :func:`hour_angles` around ``transit``."""
    return transit + hour_angles(ntimes) / SIDEREAL_RATE


def baselines(nant: int) -> tuple[np.ndarray, np.ndarray]:
    """Cross-correlation station pairs (antenna1 < antenna2), each (nant*(nant-1)/2,) int32."""
    a1, a2 = np.triu_indices(nant, k=1)
    return a1.astype(np.int32), a2.astype(np.int32)
