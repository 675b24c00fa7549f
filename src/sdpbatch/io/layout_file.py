"""Station layouts: the SKA1-Low central layout of the PyPI package 21cmsense, or a user file.

A user file has one station per line with three columns east, north, up in metres, separated
by whitespace or commas (plain text or CSV, like the 2015 ``LOWBD2.csv``); blank lines, lines
starting with ``#`` and a header line of words are skipped.  Optional fourth column: a name.
"""

from __future__ import annotations

import importlib.metadata
import re
from pathlib import Path

import numpy as np

SKA1_LOW_CENTRAL = "ska1-low-central"
DATA_FILE = "py21cmsense/data/antpos/layout_enu_ska_central.txt"


def builtin_layout_path() -> Path:
    """Path of the SKA1-Low central layout file shipped by ``21cmsense`` (not imported)."""
    try:
        dist = importlib.metadata.distribution("21cmsense")
    except importlib.metadata.PackageNotFoundError as err:
        raise FileNotFoundError(
            "the default layout needs the PyPI package 21cmsense (pip install 21cmsense)"
        ) from err
    path = Path(str(dist.locate_file(DATA_FILE)))
    if not path.is_file():
        raise FileNotFoundError(f"21cmsense is installed but {path} is missing")
    return path


def load_layout(spec: str) -> tuple[np.ndarray, list[str]]:
    """Station positions (n, 3) east/north/up metres and names, from a layout name or file."""
    if spec == SKA1_LOW_CENTRAL:
        enu, names = _read_enu(builtin_layout_path())
        return enu, [f"S{i:03d}" for i in range(len(names))]
    return _read_enu(Path(spec))


def _read_enu(path: Path) -> tuple[np.ndarray, list[str]]:
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as err:
        raise ValueError(f"layout file {path}: cannot read it ({err})") from err
    rows: list[list[float]] = []
    names: list[str] = []
    for lineno, line in enumerate(text.splitlines(), start=1):
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        fields = [f for f in re.split(r"[,\s]+", stripped) if f]
        try:
            values = [float(f) for f in fields[:3]]
        except ValueError:
            if not rows and not any(_is_number(f) for f in fields):
                continue  # a header line of column names
            raise ValueError(
                f"layout file {path}, line {lineno}: expected three numbers east north up (m), "
                f"got {stripped!r}"
            ) from None
        if len(values) < 3 or len(fields) > 4:
            raise ValueError(
                f"layout file {path}, line {lineno}: expected 3 columns east north up (m) "
                f"and an optional name, got {len(fields)} fields"
            )
        if not all(np.isfinite(values)):
            raise ValueError(f"layout file {path}, line {lineno}: non-finite coordinate")
        rows.append(values)
        names.append(fields[3] if len(fields) == 4 else f"S{len(names):03d}")
    if len(rows) < 2:
        raise ValueError(f"layout file {path}: needs at least 2 stations, found {len(rows)}")
    if len(set(names)) != len(names):
        raise ValueError(f"layout file {path}: station names are not unique")
    return np.array(rows, dtype=np.float64), names


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True
