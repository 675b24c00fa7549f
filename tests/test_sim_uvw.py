"""UVW: casacore measures (what the MeasurementSet gets) against independent routes.

1. The geometric (seed's) formula with casacore's apparent hour angle and declination gives
   the same w to < 1 mm, and the same (u, v) after one rotation about w: the J2000 and
   frame-of-date north directions differ by precession.  The angle is checked against astropy.
2. astropy (ITRS -> GCRS baselines projected on the GCRS-apparent, i.e. aberrated, phase
   centre) differs from casacore by a rigid rotation of ~1e-5 rad (~2 cm on 2 km, the
   uv-plane orientation convention of the aberrated frame): after removing one best-fit
   rotation the two agree to < 1 mm.
"""

from __future__ import annotations

import math

import astropy.units as u
import numpy as np
from astropy.coordinates import GCRS, ICRS, ITRS, TETE, CartesianRepresentation, SkyCoord
from astropy.time import Time
from casacore.measures import measures

from sdpbatch.io.layout_file import load_layout
from sdpbatch.science.layouts import enu_to_itrf, select_stations, site_itrf
from sdpbatch.science.observation import baselines, transit_time
from sdpbatch.science.uvw import antenna_uvw, baseline_uvw, xyz_to_uvw

PC = (0.3, math.radians(-30.0))


def _setup(offset_s: float = 1800.0):
    enu, _ = load_layout("ska1-low-central")
    itrf = enu_to_itrf(enu[select_stations(enu, 2000.0)])
    centre = site_itrf()
    t = transit_time(*PC, "2020-01-01") + offset_s
    return itrf, centre, t, antenna_uvw(itrf, np.array([t]), PC, centre)[0]


def _rotation_fit(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Best orthogonal R with a @ R ~ b (Kabsch)."""
    uu, _, vt = np.linalg.svd(a.T @ b)
    return uu @ vt


def test_geometric_formula_in_frame_of_date():
    itrf, centre, t, cu = _setup()
    me = measures()
    me.do_frame(me.position("ITRF", *[f"{v}m" for v in centre]))
    me.do_frame(me.epoch("UTC", f"{t}s"))
    hadec = me.measure(me.direction("J2000", f"{PC[0]}rad", f"{PC[1]}rad"), "HADEC")
    h, d = hadec["m0"]["value"], hadec["m1"]["value"]
    rel = itrf - centre
    lon = math.atan2(centre[1], centre[0])
    x = rel[:, 0] * math.cos(lon) + rel[:, 1] * math.sin(lon)
    y = -rel[:, 0] * math.sin(lon) + rel[:, 1] * math.cos(lon)
    g = xyz_to_uvw(np.stack([x, y, rel[:, 2]], axis=-1), h, d)
    assert np.abs(g[:, 2] - cu[:, 2]).max() < 1e-3
    angle = np.median(np.arctan2(g[:, 0], g[:, 1]) - np.arctan2(cu[:, 0], cu[:, 1]))
    c, s = math.cos(angle), math.sin(angle)
    u_rot = c * cu[:, 0] + s * cu[:, 1]
    v_rot = -s * cu[:, 0] + c * cu[:, 1]
    assert np.abs(u_rot - g[:, 0]).max() < 1e-3
    assert np.abs(v_rot - g[:, 1]).max() < 1e-3
    # independent: position angle of the J2000 north in the true frame of date (astropy)
    obstime = Time(t / 86400.0, format="mjd", scale="utc")
    a = SkyCoord(PC[0] * u.rad, PC[1] * u.rad, frame=ICRS())
    b = SkyCoord(PC[0] * u.rad, (PC[1] + 1e-5) * u.rad, frame=ICRS())
    frame = TETE(obstime=obstime)
    pa = a.transform_to(frame).position_angle(b.transform_to(frame)).wrap_at(180 * u.deg).rad
    assert abs(abs(angle) - abs(pa)) < 2e-5, (angle, pa)
    assert abs(angle) > 1e-4  # twenty years of precession are visible


def test_casacore_matches_astropy_up_to_a_small_rigid_rotation():
    itrf, centre, t, cu = _setup()
    obstime = Time(t / 86400.0, format="mjd", scale="utc")

    def gcrs(p):
        c = ITRS(CartesianRepresentation(p.T * u.m), obstime=obstime).transform_to(
            GCRS(obstime=obstime)
        )
        return c.cartesian.xyz.to_value(u.m).T

    b = gcrs(itrf) - gcrs(centre[None, :])
    app = SkyCoord(PC[0] * u.rad, PC[1] * u.rad, frame=ICRS()).transform_to(GCRS(obstime=obstime))
    ra, dec = app.ra.rad, app.dec.rad
    rot = np.array(
        [
            [-math.sin(ra), math.cos(ra), 0.0],
            [-math.sin(dec) * math.cos(ra), -math.sin(dec) * math.sin(ra), math.cos(dec)],
            [math.cos(dec) * math.cos(ra), math.cos(dec) * math.sin(ra), math.sin(dec)],
        ]
    )
    a = b @ rot.T
    assert np.abs(a - cu).max() < 0.05
    r = _rotation_fit(a, cu)
    assert np.abs(a @ r - cu).max() < 1e-3
    assert np.abs(r - np.eye(3)).max() < 3e-5


def test_baseline_convention_and_shapes():
    ant = np.random.default_rng(0).normal(size=(2, 4, 3))
    a1, a2 = baselines(4)
    assert a1.size == 6 and np.all(a1 < a2)
    uvw = baseline_uvw(ant, a1, a2)
    assert uvw.shape == (12, 3)
    np.testing.assert_array_equal(uvw[6 + 2], ant[1, a2[2]] - ant[1, a1[2]])


def test_transit_time_against_astropy():
    t = transit_time(*PC, "2020-01-01")
    obstime = Time(t / 86400.0, format="mjd", scale="utc")
    assert obstime.iso.startswith("2020-01-01")
    from astropy.coordinates import EarthLocation

    from sdpbatch.science.constants import SITE_HEIGHT, SITE_LAT, SITE_LON

    loc = EarthLocation.from_geodetic(
        math.degrees(SITE_LON) * u.deg, math.degrees(SITE_LAT) * u.deg, SITE_HEIGHT * u.m
    )
    tete = SkyCoord(PC[0] * u.rad, PC[1] * u.rad, frame=ICRS()).transform_to(TETE(obstime=obstime))
    lst = obstime.sidereal_time("apparent", longitude=loc.lon).rad
    ha = math.remainder(lst - tete.ra.rad, 2 * math.pi)
    assert abs(ha) < 1e-4  # ~1.4 s of time
