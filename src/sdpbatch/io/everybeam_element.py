"""The SKA-Low element pattern from EveryBeam (PyPI ``everybeam``): its ``skalow_feko`` model.

EveryBeam 0.9.1's wheel ships the FEKO embedded element patterns of a 256-element SKA-Low
station (``share/everybeam/skalow/``, at 100, 103.125 and 106.25 MHz: other frequencies take
the nearest) but looks for them under the path of the machine that built it, unless
``EVERYBEAM_DATADIR`` names the installed ``share/everybeam``: :func:`element_voltage` sets it
(when unset) before the first call.  Not used, as found with 0.9.1: ``skala40_wave`` (its
``oskar.h5`` has no 100 MHz data: "using the nearest neighbor with frequency 110 MHz") gives
about 1e-4 on the diagonal at zenith and crashes the process (SIGSEGV) on 1000 directions of
elements 0..255; a station built from element positions (``StationNode`` through
``create_telescope``) takes only OSKAR element models for OSKAR ("OSKAR telescope requires an
OSKAR related element response model") and Hamaker ones for LOFAR and AARTFAAC, not
``skalow_feko``.  So the station's array factor is ours (:mod:`sdpbatch.science.
aperture_array`) and only the element pattern is EveryBeam's.
"""

from __future__ import annotations

import os
import sysconfig
from pathlib import Path

import numpy as np

DATADIR_VARIABLE = "EVERYBEAM_DATADIR"


class EveryBeamUnavailable(RuntimeError):
    """EveryBeam or its SKA-Low element patterns cannot be loaded here."""


def _data_directory() -> Path:
    return Path(sysconfig.get_path("data")) / "share" / "everybeam"


def _element_response():
    try:
        import everybeam
    except ImportError as err:
        raise EveryBeamUnavailable(f"everybeam is not installed: {err}") from err
    if DATADIR_VARIABLE not in os.environ:
        os.environ[DATADIR_VARIABLE] = str(_data_directory())
    folder = Path(os.environ[DATADIR_VARIABLE]) / "skalow"
    if not any(folder.glob("*.h5")):
        raise EveryBeamUnavailable(f"no SKA-Low element patterns in {folder}")
    return everybeam.ElementResponse.create(everybeam.ElementResponseModel.skalow_feko)


def pattern_frequencies() -> np.ndarray:
    """Hz: the frequencies of the element patterns the wheel ships (sorted)."""
    _element_response()
    folder = Path(os.environ[DATADIR_VARIABLE]) / "skalow"
    found = [float(p.stem.rsplit("_", 2)[-2]) * 1e6 for p in folder.glob("*_MHz.h5")]
    return np.array(sorted(found))


def element_voltage(theta: np.ndarray, phi: np.ndarray, frequency: np.ndarray) -> np.ndarray:
    """Scalar voltage pattern (theta.shape + (nchan,)) of the mean SKA-Low element.

    theta: zenith angle, phi: azimuth from east towards north (rad); frequency (nchan,) Hz.
    The Jones matrices of the station's 256 embedded elements are averaged, then
    ``sqrt(trace(J J^H) / 2)``: the voltage whose square is the response to unpolarised
    light.  EveryBeam answers every frequency with its nearest pattern, so each pattern is
    evaluated once (256 elements x directions: ~20 us each).
    """
    response = _element_response()
    theta = np.asarray(theta, dtype=np.float64)
    flat_t, flat_p = theta.ravel(), np.asarray(phi, dtype=np.float64).ravel()
    frequency = np.atleast_1d(np.asarray(frequency, dtype=np.float64))
    shipped = pattern_frequencies()
    nearest = shipped[np.abs(frequency[:, None] - shipped[None, :]).argmin(axis=1)]
    out = np.empty((flat_t.size, frequency.size))
    for nu in np.unique(nearest):
        mean = np.zeros((flat_t.size, 2, 2), dtype=np.complex128)
        for element in range(256):
            ids = np.full(flat_t.size, element, dtype=np.int32)
            mean += response.response(ids, np.full(flat_t.size, nu), flat_t, flat_p)
        voltage = np.sqrt(0.5 * np.sum(np.abs(mean / 256.0) ** 2, axis=(1, 2)))
        out[:, nearest == nu] = voltage[:, None]
    return out.reshape(*theta.shape, frequency.size)
