"""Station selection and local (east, north, up) to ITRF coordinates.

Pure numerics: the layout arrays come from :mod:`sdpbatch.io.layout_file`.
"""

from __future__ import annotations

import numpy as np
from casacore.measures import measures

from sdpbatch.science.constants import SITE_HEIGHT, SITE_LAT, SITE_LON


def station_distances(enu: np.ndarray) -> np.ndarray:
    """Distance (m) of each station from the layout centre (the mean position); enu (n, 3)."""
    enu = np.asarray(enu, dtype=np.float64)
    return np.linalg.norm(enu - enu.mean(axis=0), axis=1)


def select_stations(enu: np.ndarray, rmax: float) -> np.ndarray:
    """Indices of the stations within ``rmax`` metres of the layout centre (as RASCIL did).

    RASCIL kept ``r < rmax`` with r the 3-D distance from the mean position; so do we.
    """
    return np.flatnonzero(station_distances(enu) < rmax)


def smallest_useful_rmax(enu: np.ndarray) -> float:
    """Smallest rmax (m) keeping two stations: the next float above the 2nd distance."""
    d = np.sort(station_distances(enu))
    return float(np.nextafter(d[1], np.inf)) if d.size >= 2 else float("inf")


def site_itrf(
    lon: float = SITE_LON, lat: float = SITE_LAT, height: float = SITE_HEIGHT
) -> np.ndarray:
    """ITRF x, y, z (m) of a WGS84 geodetic position (rad, rad, m), via casacore measures."""
    me = measures()
    pos = me.position("WGS84", f"{lon}rad", f"{lat}rad", f"{height}m")
    itrf = me.measure(pos, "ITRF")
    return _to_xyz(itrf)


def enu_to_itrf(
    enu: np.ndarray, *, lon: float = SITE_LON, lat: float = SITE_LAT, height: float = SITE_HEIGHT
) -> np.ndarray:
    """ITRF positions (n, 3) m of stations at local east/north/up offsets ``enu`` (n, 3) m.

    The offsets are rotated from the local tangent plane at (lon, lat) (geodetic, rad) and added
    to the ITRF position of the site.
    """
    enu = np.asarray(enu, dtype=np.float64)
    sl, cl = np.sin(lon), np.cos(lon)
    sp, cp = np.sin(lat), np.cos(lat)
    # columns: unit vectors east, north, up in ITRF
    rot = np.array(
        [
            [-sl, -sp * cl, cp * cl],
            [cl, -sp * sl, cp * sl],
            [0.0, cp, sp],
        ]
    )
    return site_itrf(lon, lat, height) + enu @ rot.T


def _to_xyz(measure: dict) -> np.ndarray:
    """Cartesian x, y, z of a casacore ITRF position measure (geocentric lon, lat, radius)."""
    lon = measure["m0"]["value"]
    lat = measure["m1"]["value"]
    r = measure["m2"]["value"]
    return r * np.array([np.cos(lat) * np.cos(lon), np.cos(lat) * np.sin(lon), np.sin(lat)])
