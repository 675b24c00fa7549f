"""A set of MeasurementSets imaged together: the one check that they belong together.

Every entry point (the command line before it starts a cluster, the ICAL pipeline) calls
:func:`check_measurement_sets` once and passes the metadata it returns on, so a run reads each
file's metadata once.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from sdpbatch.io.ms_read import (
    MeasurementSetError,
    MeasurementSetInfo,
    read_measurement_set_windows,
)

SAME_DIRECTION = 1e-7
"""Largest separation (rad, ~0.02 arcsec) of phase centres that counts as the same."""


def separation(a: tuple[float, float], b: tuple[float, float]) -> float:
    """Angle (rad) between two (ra, dec) directions in radians; exact near zero and across
    RA = 0 (Vincenty's formula, as astropy's ``angular_separation``)."""
    (ra1, dec1), (ra2, dec2) = a, b
    dra = ra2 - ra1
    sin_dra, cos_dra = np.sin(dra), np.cos(dra)
    sin1, cos1, sin2, cos2 = np.sin(dec1), np.cos(dec1), np.sin(dec2), np.cos(dec2)
    num1 = cos2 * sin_dra
    num2 = cos1 * sin2 - sin1 * cos2 * cos_dra
    return float(np.arctan2(np.hypot(num1, num2), sin1 * sin2 + cos1 * cos2 * cos_dra))


def _describe(direction: tuple[float, float]) -> str:
    return f"(ra {np.degrees(direction[0]):.6f}, dec {np.degrees(direction[1]):.6f}) deg"


def check_measurement_sets(
    ms_paths: Sequence[str | Path],
    *,
    data_column: str = "DATA",
    field: int | str | None = None,
    spw: int | None = None,
) -> list[MeasurementSetInfo]:
    """Metadata of every window (MeasurementSet and spectral window) to image together;
    :class:`MeasurementSetError` naming the first bad one.

    Each MeasurementSet gives one window per spectral window its rows use (``spw``: that one
    only) of one field (``field``: its id or name, needed when the rows use several).  All
    must be readable as Stokes I from ``data_column``, given once each, and share one phase
    centre (within :data:`SAME_DIRECTION`) and one set of stations.
    """
    paths = [Path(p) for p in ms_paths]
    if not paths:
        raise MeasurementSetError("<none>", "no MeasurementSets given")
    if len({p.resolve() for p in paths}) != len(paths):
        raise MeasurementSetError(paths[0], "the same MeasurementSet is given more than once")
    infos = []
    for path in paths:
        windows = read_measurement_set_windows(path, data_column=data_column, field=field, spw=spw)
        fields = sorted({(w.field_id, w.field_name) for w in windows})
        if len(fields) > 1:
            listed = ", ".join(f"{i} ({name})" if name else str(i) for i, name in fields)
            raise MeasurementSetError(
                path, f"its rows use {len(fields)} fields: {listed}; choose one with --field"
            )
        infos += windows
    first = infos[0]
    for info in infos[1:]:
        if separation(info.phase_centre, first.phase_centre) > SAME_DIRECTION:
            raise MeasurementSetError(
                info.path,
                f"phase centre {_describe(info.phase_centre)} differs from that of "
                f"{first.path} {_describe(first.phase_centre)}; image them separately",
            )
        if info.antenna_names != first.antenna_names:
            raise MeasurementSetError(
                info.path, f"its {info.nant} stations differ from the {first.nant} of {first.path}"
            )
    return infos
