"""Station layouts: the 21cmsense SKA1-Low file, user files, selection and ENU -> ITRF."""

from __future__ import annotations

import astropy.units as u
import numpy as np
import pytest
from astropy.coordinates import EarthLocation

from sdpbatch.io.layout_file import load_layout
from sdpbatch.science.constants import SITE_HEIGHT, SITE_LAT, SITE_LON
from sdpbatch.science.layouts import (
    enu_to_itrf,
    select_stations,
    site_itrf,
    smallest_useful_rmax,
)


def test_default_layout_counts():
    enu, names = load_layout("ska1-low-central")
    assert enu.shape == (296, 3) and len(set(names)) == 296
    assert select_stations(enu, 750.0).size == 242
    assert select_stations(enu, 2000.0).size == 296


def test_lowbd2_matches_seed_station_count(shared_data):
    enu, _ = load_layout(str(shared_data / "LOWBD2.csv"))
    assert enu.shape == (512, 3)
    assert select_stations(enu, 750.0).size == 236  # what RASCIL kept


def test_smallest_useful_rmax():
    enu = np.array([[0.0, 0, 0], [10, 0, 0], [100, 0, 0], [-110, 0, 0]])
    rmax = smallest_useful_rmax(enu)
    assert select_stations(enu, rmax).size == 2
    assert select_stations(enu, rmax * (1 - 1e-9)).size < 2


def test_user_file_with_header_comments_and_names(tmp_path):
    f = tmp_path / "layout.csv"
    f.write_text("# my array\neast,north,up,name\n1.5,2,0,A\n\n-3,4.25,1e-2,B\n")
    enu, names = load_layout(str(f))
    np.testing.assert_array_equal(enu, [[1.5, 2, 0], [-3, 4.25, 0.01]])
    assert names == ["A", "B"]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("1 2 3\n4 x 6\n", "line 2"),
        ("1 2 3\n4 5\n", "line 2"),
        ("1 2 3\n", "at least 2 stations"),
        ("1 2 3 a b\n1 2 3\n", "line 1"),
    ],
)
def test_user_file_errors_name_file_and_line(tmp_path, text, expected):
    f = tmp_path / "bad.txt"
    f.write_text(text)
    with pytest.raises(ValueError, match=expected) as err:
        load_layout(str(f))
    assert "bad.txt" in str(err.value)


def test_missing_file_is_a_clear_error(tmp_path):
    with pytest.raises(ValueError, match="nope.txt"):
        load_layout(str(tmp_path / "nope.txt"))


def test_enu_to_itrf_against_erfa_geodetic_offsets():
    """The site (casacore measures) and east/north/up offsets agree with an independent WGS84
    -> geocentric conversion (astropy's, by ERFA) of displaced positions."""

    def itrf(lon, lat, h):
        site = EarthLocation.from_geodetic(lon * u.rad, lat * u.rad, h * u.m, ellipsoid="WGS84")
        return np.array([c.to_value(u.m) for c in (site.x, site.y, site.z)])

    centre = site_itrf()
    np.testing.assert_allclose(centre, itrf(SITE_LON, SITE_LAT, SITE_HEIGHT), atol=1e-6)
    up = enu_to_itrf(np.array([[0.0, 0.0, 100.0]]))[0]
    np.testing.assert_allclose(up, itrf(SITE_LON, SITE_LAT, SITE_HEIGHT + 100), atol=1e-3)
    # a small step in longitude is a step east of R_east * dlon
    dlon = 1e-6
    east_pt = itrf(SITE_LON + dlon, SITE_LAT, SITE_HEIGHT)
    step = np.linalg.norm(east_pt - centre)
    east = enu_to_itrf(np.array([[step, 0.0, 0.0]]))[0]
    np.testing.assert_allclose(east, east_pt, atol=1e-3)
    # rotations keep distances
    enu = np.random.default_rng(1).normal(0, 500, (20, 3))
    xyz = enu_to_itrf(enu)
    d_enu = np.linalg.norm(enu[:, None] - enu[None], axis=-1)
    d_xyz = np.linalg.norm(xyz[:, None] - xyz[None], axis=-1)
    np.testing.assert_allclose(d_xyz, d_enu, atol=1e-6)
