"""Sky model text files in the format WSClean (``-predict``, component lists) and DP3 read.

Example::

    # comment lines start with '#'
    Format = Name, Type, Ra, Dec, I, SpectralIndex, LogarithmicSI, \
        ReferenceFrequency='100000000', MajorAxis, MinorAxis, Orientation   (one line)
    src0,POINT,00:01:02.345678,-30.12.34.56789,12.5,[-0.7,0.01],true,100000000,,,
    src1,GAUSSIAN,00:01:10.0,-30.10.00.0,3.0,[-0.8],true,100000000,120.0,45.0,30.0

RA is ``hh:mm:ss.s``, Dec ``dd.mm.ss.s`` (or ``dd:mm:ss.s``); angles with a ``deg``/``rad``
suffix are also read.  Spectra: ``S(nu) = I * (nu/nu0) ** (c0 + c1 x + ...)``,
``x = log10(nu/nu0)`` (``LogarithmicSI=true``, the default).  POINT and GAUSSIAN components are
supported; for a GAUSSIAN, MajorAxis and MinorAxis are full widths at half maximum in arcsec and
Orientation the position angle of the major axis in degrees, north through east (WSClean and
DP3; a MajorAxis smaller than the MinorAxis is read as the same ellipse with the axes swapped).
Other columns of DP3's format (Patch, Q, U, V, ...) are ignored; a linear
(``LogarithmicSI=false``) spectrum with terms is refused.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from sdpbatch.io.atomic import atomic_path
from sdpbatch.science.skymodel import SkyModel

FORMAT = (
    "Format = Name, Type, Ra, Dec, I, SpectralIndex, LogarithmicSI, "
    "ReferenceFrequency='{ref:.9g}', MajorAxis, MinorAxis, Orientation"
)
_FORMAT_LINE = re.compile(r"^\s*format\s*=\s*(.*)$", re.IGNORECASE)
_MAKESOURCEDB_FORMAT = re.compile(r"^\s*#?\s*\((.*)\)\s*=\s*format\s*$", re.IGNORECASE)


class SkyModelFileError(ValueError):
    """A sky model file that cannot be read; the message names the file and line."""


def _split(line: str) -> list[str]:
    """Split on commas outside [...] brackets and quotes."""
    out, depth, quote, cur = [], 0, "", []
    for ch in line:
        if quote:
            quote = "" if ch == quote else quote
        elif ch in "'\"":
            quote = ch
        elif ch == "[":
            depth += 1
        elif ch == "]":
            depth -= 1
        elif ch == "," and depth == 0:
            out.append("".join(cur).strip())
            cur = []
            continue
        cur.append(ch)
    out.append("".join(cur).strip())
    return out


def _parse_format(spec: str) -> tuple[list[str], dict[str, str]]:
    names, defaults = [], {}
    for item in _split(spec):
        key, _, default = item.partition("=")
        key = key.strip().lower()
        names.append(key)
        if default.strip():
            defaults[key] = default.strip().strip("'\"")
    return names, defaults


def _angle(text: str, *, hours: bool) -> float:
    """Radians from 'hh:mm:ss.s' (hours) / 'dd.mm.ss.s' or 'dd:mm:ss.s' or '<x>deg', '<x>rad'."""
    t = text.strip().lower()
    for suffix, scale in (("deg", math.pi / 180), ("rad", 1.0)):
        if t.endswith(suffix):
            return float(t[: -len(suffix)]) * scale
    sign = -1.0 if t.startswith("-") else 1.0
    body = t.lstrip("+-")
    if ":" in body:
        parts = body.split(":")
    else:
        parts = body.split(".")
        if len(parts) > 3:  # dd.mm.ss.fraction
            parts = [parts[0], parts[1], parts[2] + "." + ".".join(parts[3:])]
    if len(parts) != 3:
        raise ValueError(f"'{text}' is not a sexagesimal angle")
    d, m, s = float(parts[0]), float(parts[1]), float(parts[2])
    if not (0 <= m < 60 and 0 <= s < 60):
        raise ValueError(f"'{text}': minutes and seconds must be in 0..60")
    value = d + m / 60 + s / 3600
    return sign * math.radians(value * 15.0 if hours else value)


def read_sky_model(path: str | Path) -> SkyModel:
    """Read point and Gaussian components from a WSClean/DP3 sky model file.

    Raises :class:`SkyModelFileError` naming the file and every bad line at once.
    """
    path = Path(path)
    try:
        lines = path.read_text().splitlines()
    except (OSError, UnicodeDecodeError) as err:
        raise SkyModelFileError(f"sky model file {path}: cannot read it ({err})") from err
    columns: list[str] | None = None
    defaults: dict[str, str] = {}
    components, errors = [], []
    for lineno, line in enumerate(lines, start=1):
        where = f"line {lineno}"
        match = _FORMAT_LINE.match(line) or _MAKESOURCEDB_FORMAT.match(line)
        if match:
            columns, defaults = _parse_format(match.group(1))
            missing = {"name", "type", "ra", "dec", "i"} - set(columns)
            if missing:
                errors.append(f"{where}: format lacks columns {sorted(missing)}")
            continue
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        if columns is None:
            errors.append(f"{where}: data before the 'Format = ...' line")
            break
        fields = _split(line)
        row = {k: (fields[i] if i < len(fields) else "") for i, k in enumerate(columns)}
        row = {k: (v if v != "" else defaults.get(k, "")) for k, v in row.items()}
        if not row["type"] and not row["name"]:
            continue  # a patch definition line
        try:
            components.append(_component(row, default_name=f"src{len(components)}"))
        except ValueError as err:
            errors.append(f"{where}: {err}")
    if columns is None and not errors:
        errors.append("no 'Format = ...' line")
    if errors:
        raise SkyModelFileError(f"sky model file {path}, " + "; ".join(errors))
    return _sky_model(components)


def _component(row: dict[str, str], default_name: str) -> tuple:
    """(name, ra, dec, flux, ref_freq, terms, shape) of one row; ValueError says what is bad."""
    kind = row["type"].upper()
    if kind not in ("POINT", "GAUSSIAN"):
        raise ValueError(f"component type '{row['type']}' is not supported (POINT, GAUSSIAN)")
    shape = _gaussian_shape(row) if kind == "GAUSSIAN" else (0.0, 0.0, 0.0)
    src_ra = _angle(row["ra"], hours=True)
    src_dec = _angle(row["dec"], hours=False)
    i_flux = float(row["i"])
    ref_freq = float(row.get("referencefrequency") or "nan")
    terms_text = row.get("spectralindex", "").strip().strip("[]")
    terms = [float(x) for x in terms_text.split(",") if x.strip()]
    if not -math.pi / 2 <= src_dec <= math.pi / 2:
        raise ValueError(f"declination '{row['dec']}' outside -90..90 deg")
    logarithmic = row.get("logarithmicsi", "true").strip().lower() or "true"
    if logarithmic not in ("true", "false"):
        raise ValueError("LogarithmicSI must be true or false")
    if logarithmic == "false" and terms:
        raise ValueError("linear spectra (LogarithmicSI=false) are not supported")
    if terms and not (math.isfinite(ref_freq) and ref_freq > 0):
        raise ValueError("spectral terms need a ReferenceFrequency > 0")
    ref = ref_freq if math.isfinite(ref_freq) else 1e8
    name = row["name"] or default_name
    return name, src_ra % (2 * math.pi), src_dec, i_flux, ref, terms, shape


def _sky_model(components: list[tuple]) -> SkyModel:
    nterms = max([len(c[5]) for c in components] + [1])
    si = np.zeros((len(components), nterms))
    for k, c in enumerate(components):
        si[k, : len(c[5])] = c[5]
    shapes = np.array([c[6] for c in components], dtype=np.float64).reshape(-1, 3)
    return SkyModel(
        ra=np.array([c[1] for c in components]),
        dec=np.array([c[2] for c in components]),
        flux=np.array([c[3] for c in components]),
        ref_freq=np.array([c[4] for c in components]),
        spectral_index=si,
        names=[c[0] for c in components],
        major=shapes[:, 0],
        minor=shapes[:, 1],
        position_angle=shapes[:, 2],
    )


def _gaussian_shape(row: dict[str, str]) -> tuple[float, float, float]:
    """(major, minor, position angle) radians of a GAUSSIAN row (axes arcsec, angle deg)."""
    values = []
    for column in ("MajorAxis", "MinorAxis", "Orientation"):
        text = row.get(column.lower(), "").strip()
        if not text:
            raise ValueError(f"a GAUSSIAN needs MajorAxis, MinorAxis and Orientation ({column})")
        value = float(text)
        if not math.isfinite(value) or (column != "Orientation" and value <= 0):
            raise ValueError(f"{column} must be a positive number of arcsec, got '{text}'")
        values.append(value)
    major, minor, angle = values
    if major < minor:  # the same ellipse
        major, minor, angle = minor, major, angle + 90.0
    arcsec = math.radians(1.0 / 3600.0)
    return major * arcsec, minor * arcsec, math.radians(angle)


def format_ra(ra: float) -> str:
    """'hh:mm:ss.ssssss' of ``ra`` radians."""
    total = round((math.degrees(ra) / 15.0 % 24.0) * 3600.0 * 1e6)
    total %= 24 * 3600 * 10**6
    h, rem = divmod(total, 3600 * 10**6)
    m, us = divmod(rem, 60 * 10**6)
    return f"{h:02d}:{m:02d}:{us // 10**6:02d}.{us % 10**6:06d}"


def format_dec(dec: float) -> str:
    """'+dd.mm.ss.sssss' of ``dec`` radians."""
    sign = "-" if dec < 0 else "+"
    total = round(abs(math.degrees(dec)) * 3600.0 * 1e5)
    d, rem = divmod(total, 3600 * 10**5)
    m, us = divmod(rem, 60 * 10**5)
    return f"{sign}{d:02d}.{m:02d}.{us // 10**5:02d}.{us % 10**5:05d}"


def write_sky_model(path: str | Path, sky: SkyModel, *, header: Sequence[str] = ()) -> Path:
    """Write ``sky`` as a WSClean/DP3 sky model file (atomically); ``header``: comment lines."""
    path = Path(path)
    ref_default = float(sky.ref_freq[0]) if len(sky) else 1e8
    lines = [f"# {h}" for h in header]
    lines.append(FORMAT.format(ref=ref_default))
    arcsec = math.radians(1.0 / 3600.0)
    for k in range(len(sky)):
        terms = ",".join(f"{c:.12g}" for c in sky.spectral_index[k])
        kind, shape = "POINT", ",,"
        if sky.is_gaussian[k]:
            kind = "GAUSSIAN"
            shape = (
                f"{sky.major[k] / arcsec:.12g},{sky.minor[k] / arcsec:.12g},"
                f"{math.degrees(sky.position_angle[k]):.12g}"
            )
        lines.append(
            f"{sky.names[k]},{kind},{format_ra(sky.ra[k])},{format_dec(sky.dec[k])},"
            f"{sky.flux[k]:.12g},[{terms}],true,{sky.ref_freq[k]:.12g},{shape}"
        )
    with atomic_path(path) as tmp:
        tmp.write_text("\n".join(lines) + "\n")
    return path
