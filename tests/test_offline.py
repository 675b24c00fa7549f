"""Reference data from the installed packages: casacore's leap-second table rebuilt from
astropy-iers-data, no SEVERE lines, nothing downloaded."""

from __future__ import annotations

import importlib.metadata
import os
import subprocess
import sys
from pathlib import Path

import astropy_iers_data
import casacore
from astropy.time import Time
from casacore import tables

from sdpbatch.offline import build_measures_directory, read_leap_seconds

WHEEL_DATA = Path(casacore.__file__).parent / "data"
LEAP_FILE = Path(astropy_iers_data.IERS_LEAP_SECOND_FILE)
VERSION = importlib.metadata.version("astropy-iers-data")


def _rows(table: Path) -> dict[float, tuple[float, float, float]]:
    with tables.table(str(table), ack=False) as t:
        return {
            r["MJD"]: (r["dUTC"], r["Offset"], r["Multiplier"])
            for r in (t[i] for i in range(t.nrows()))
        }


def test_the_rebuilt_table_holds_every_leap_second_of_the_iers_file(tmp_path):
    target = build_measures_directory(
        tmp_path / "measures", casacore_data=WHEEL_DATA, leap_file=LEAP_FILE, version=VERSION
    )
    ours, wheel = _rows(target / "geodetic/TAI_UTC"), _rows(WHEEL_DATA / "geodetic/TAI_UTC")
    assert {m: v for m, v in ours.items() if m < 41317} == {
        m: v for m, v in wheel.items() if m < 41317
    }  # the drift-rate era before 1972, from the wheel
    leaps = read_leap_seconds(LEAP_FILE)
    assert [(m, d) for m, (d, _, _) in ours.items() if m >= 41317] == leaps
    shared = set(ours) & set(wheel)
    assert all(ours[m] == wheel[m] for m in shared)  # where both know, they agree
    with tables.table(str(target / "geodetic/TAI_UTC"), ack=False) as t:
        version_date = t.getkeyword("VS_DATE")
    y, mo, d = VERSION.split(".")[1:4]
    assert version_date.startswith(f"{int(y):04d}/{int(mo):02d}/{int(d):02d}/")
    # TAI-UTC at each leap from astropy's own reading of the same file (independent parser)
    for mjd, seconds in leaps[-5:]:
        t = Time(mjd + 0.5, format="mjd", scale="utc")
        assert abs((t.tai.mjd - t.utc.mjd) * 86400 - seconds) < 1e-5
    assert (target / "ephemerides").resolve() == (WHEEL_DATA / "ephemerides").resolve()


def test_a_fresh_install_prints_no_severe_line(tmp_path):
    """A user with an empty cache and no casacore settings: casacore converts UTC to TAI with
    the current table and says nothing."""
    env = {k: v for k, v in os.environ.items() if k != "CASARCFILES"}
    env.update(HOME=str(tmp_path), XDG_CACHE_HOME=str(tmp_path / "cache"))
    code = (
        "import sdpbatch, os\n"
        "from casacore.measures import measures\n"
        "dm = measures()\n"
        "e = dm.measure(dm.epoch('utc', '2020-01-01T00:00:00'), 'tai')\n"
        "print(round((e['m0']['value'] - 58849.0) * 86400, 6), os.environ['CASARCFILES'])\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    assert "SEVERE" not in result.stdout + result.stderr
    seconds, casarc = result.stdout.split()
    assert float(seconds) == 37.0  # TAI - UTC in 2020
    assert casarc.startswith(str(tmp_path / "cache" / "sdpbatch"))
    folder = Path(casarc.removesuffix(".casarc"))
    assert Path(casarc).read_text() == f"measures.directory: {folder}\n"
    assert (folder / "geodetic" / "TAI_UTC").is_dir()


def test_a_user_setting_is_left_alone(tmp_path):
    env = {**os.environ, "CASARCFILES": str(tmp_path / "mine"), "HOME": str(tmp_path)}
    env["XDG_CACHE_HOME"] = str(tmp_path / "cache")
    code = "import sdpbatch, os; print(os.environ['CASARCFILES'])"
    result = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60
    )
    assert result.stdout.strip() == str(tmp_path / "mine")
    assert not (tmp_path / "cache").exists()
