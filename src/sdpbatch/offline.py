"""Reference data from the installed packages, never from the network.

- astropy: IERS tables and data come from ``astropy-iers-data``
  (:func:`configure_astropy_offline`).
- casacore: the measures tables of the python-casacore wheel, with the leap-second table
  (``geodetic/TAI_UTC``) rebuilt from the IERS ``Leap_Second.dat`` that ``astropy-iers-data``
  ships (a package the install command brings, released every few weeks), so casacore does
  not report ``SEVERE ... Leap second table TAI_UTC seems out-of-date`` (it does once its
  table's version date is 180 days old).  :func:`configure_casacore_measures` builds that
  measures folder once per pair of package versions in the user's cache
  (``~/.cache/sdpbatch/casacore-measures-<versions>``) and points casacore at it through
  ``CASARCFILES`` (a ``.casarc`` beside it saying ``measures.directory: <folder>``).
  ``import sdpbatch`` calls it, so every sdpbatch process and Dask worker uses it.  A
  ``CASARCFILES`` already set is left alone (the user's choice).
"""

from __future__ import annotations

import functools
import importlib.metadata
import importlib.util
import os
import re
import shutil
import tempfile
from pathlib import Path

FIRST_LEAP_MJD = 41317.0
"""1972-01-01: where UTC began integral leap seconds (earlier rows are drift rates)."""


@functools.cache
def configure_astropy_offline() -> None:
    """Forbid astropy downloads; call before any astropy time/coordinate work."""
    from astropy.utils import iers
    from astropy.utils.data import conf as data_conf

    iers.conf.auto_download = False
    iers.conf.auto_max_age = None
    data_conf.allow_internet = False


def _cache_root() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "sdpbatch"


def read_leap_seconds(path: str | Path) -> list[tuple[float, float]]:
    """(MJD, TAI-UTC seconds) rows of an IERS ``Leap_Second.dat`` file."""
    rows = []
    for line in Path(path).read_text().splitlines():
        fields = line.split()
        if not fields or line.lstrip().startswith("#"):
            continue
        rows.append((float(fields[0]), float(fields[4])))
    if not rows or rows[0][0] != FIRST_LEAP_MJD:
        raise ValueError(f"{path}: not an IERS leap-second file")
    return rows


def _version_date(version: str) -> str:
    """casacore VS_DATE (YYYY/MM/DD/hh:mm) of astropy-iers-data's version 0.YYYY.M.D.h.m.s."""
    parts = [int(p) for p in re.findall(r"\d+", version)[1:6]] + [0, 0, 0, 0, 0]
    year, month, day, hour, minute = parts[:5]
    return f"{year:04d}/{month:02d}/{day:02d}/{hour:02d}:{minute:02d}"


def build_measures_directory(target: Path, *, casacore_data: Path, leap_file: Path, version: str):
    """A casacore measures folder at ``target``: the wheel's tables (linked) with TAI_UTC
    rebuilt from ``leap_file`` (rows before 1972, the drift-rate era, kept from the wheel)."""
    from casacore import tables

    leaps = read_leap_seconds(leap_file)
    work = Path(tempfile.mkdtemp(prefix=target.name + ".", dir=target.parent))
    try:
        (work / "geodetic").mkdir()
        for entry in (casacore_data / "geodetic").iterdir():
            if entry.name != "TAI_UTC":
                (work / "geodetic" / entry.name).symlink_to(entry)
        (work / "ephemerides").symlink_to(casacore_data / "ephemerides")
        with tables.table(str(casacore_data / "geodetic" / "TAI_UTC"), ack=False) as bundled:
            bundled.copy(str(work / "geodetic" / "TAI_UTC"), deep=True).close()
        with tables.table(str(work / "geodetic" / "TAI_UTC"), readonly=False, ack=False) as t:
            keep = int((t.getcol("MJD") < FIRST_LEAP_MJD).sum())
            t.removerows(list(range(keep, t.nrows())))
            t.addrows(len(leaps))
            t.putcol("MJD", [m for m, _ in leaps], startrow=keep)
            t.putcol("dUTC", [d for _, d in leaps], startrow=keep)
            t.putcol("Offset", [FIRST_LEAP_MJD] * len(leaps), startrow=keep)
            t.putcol("Multiplier", [0.0] * len(leaps), startrow=keep)
            date = _version_date(version)
            t.putkeyword("VS_DATE", date)
            t.putkeyword("VS_CREATE", date)
            t.putkeyword(
                "VS_TYPE", f"TAI_UTC from IERS Leap_Second.dat (astropy-iers-data {version})"
            )
        try:
            work.rename(target)
        except OSError:  # another process built it first: theirs is the same
            shutil.rmtree(work, ignore_errors=True)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    return target


@functools.cache
def configure_casacore_measures() -> Path | None:
    """Point casacore at current measures data (see the module's docstring).

    Returns the measures folder, or None when the user set ``CASARCFILES`` or the packages
    are not there.  Must run before casacore first reads its resources in the process.
    """
    if os.environ.get("CASARCFILES"):
        return None
    spec = importlib.util.find_spec("casacore")
    iers = importlib.util.find_spec("astropy_iers_data")
    if spec is None or iers is None or not spec.submodule_search_locations:
        return None
    casacore_data = Path(list(spec.submodule_search_locations)[0]) / "data"
    leap_file = Path(list(iers.submodule_search_locations)[0]) / "data" / "Leap_Second.dat"
    if not (casacore_data / "geodetic" / "TAI_UTC").is_dir() or not leap_file.is_file():
        return None
    version = importlib.metadata.version("astropy-iers-data")
    name = f"casacore-measures-{importlib.metadata.version('python-casacore')}-iers-{version}"
    for root in (_cache_root(), Path(tempfile.gettempdir()) / f"sdpbatch-{os.getuid()}"):
        target = root / name
        casarc = root / f"{name}.casarc"
        files = [str(casarc)]
        home = Path.home() / ".casarc"
        if home.is_file():  # the user's own settings first: they win
            files.insert(0, str(home))
        try:
            root.mkdir(parents=True, exist_ok=True)
            if not casarc.is_file():
                part = root / f"{name}.casarc.{os.getpid()}"
                part.write_text(f"measures.directory: {target}\n")
                os.replace(part, casarc)
            # before casacore reads its resources (building the table below may): it finds
            # the tables there when it first converts a time
            os.environ["CASARCFILES"] = ":".join(files)
            if not (target / "geodetic" / "TAI_UTC").is_dir():
                build_measures_directory(
                    target, casacore_data=casacore_data, leap_file=leap_file, version=version
                )
        except (OSError, RuntimeError, ValueError):
            os.environ.pop("CASARCFILES", None)
            continue  # an unwritable cache (or unreadable tables): try the next place
        return target
    return None
