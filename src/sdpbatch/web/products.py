"""The data of one image product (a buffer holding ICAL's products), for the API and the figures.

A buffer holds a product when its ``qa.json`` records the ``prefix`` the products were named
with (the pipeline moves ``qa.json`` in last, so it names a complete set) and that set's
restored image is there; the files' names come from :func:`sdpbatch.vocabulary.product_files`.
Images are read from the FITS (header, beam, statistics); gains from the H5parm gain table, every
solved term (soltabs ``phase00k``/``amplitude00k``, attribute ``TERM``, as the pipeline writes
them); the per-cycle figures from ``qa.json``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from astropy.io import fits

from sdpbatch.io.gaintable import read_gain_terms as gain_table_terms
from sdpbatch.io.qa import read_qa
from sdpbatch.parameters import is_file_prefix
from sdpbatch.vocabulary import QA_FILE, product_files
from sdpbatch.web.files import DataRoot, OutsideDataRoot

IMAGES = ("restored", "residual")
"""The images a product page shows (roles of :func:`sdpbatch.vocabulary.product_files`)."""


class NoProduct(Exception):
    """The buffer holds no image product (or not this part of one)."""


@dataclass(frozen=True)
class ProductSet:
    """Where a product set is and the prefix its files are named with."""

    directory: Path
    prefix: str

    def path(self, role: str) -> Path:
        """The file of ``role`` (a key of :func:`sdpbatch.vocabulary.product_files`)."""
        return self.directory / product_files(self.prefix)[role]


def recorded_prefix(directory: Path) -> str | None:
    """The prefix the ``qa.json`` in ``directory`` records (its parameters), if a valid one."""
    try:
        prefix = read_qa(directory / QA_FILE)["parameters"]["prefix"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return prefix if isinstance(prefix, str) and is_file_prefix(prefix) else None


def product_set(root: DataRoot, buffer: str) -> ProductSet:
    """The product set in ``buffer`` (:class:`NoProduct` if none is complete there)."""
    try:
        directory = root.resolve(buffer)
    except OutsideDataRoot as err:
        raise NoProduct(str(err)) from err
    prefix = None if "/" in buffer else recorded_prefix(directory)
    if prefix is None:
        raise NoProduct(f"buffer {buffer!r} holds no image product (no {QA_FILE} naming one)")
    found = ProductSet(directory, prefix)
    if not found.path("restored").is_file():
        raise NoProduct(f"buffer {buffer!r} holds no image product ({found.path('restored').name})")
    return found


def has_product(root: DataRoot, buffer: str) -> bool:
    """Whether ``buffer`` holds a complete product set (what the pages link to)."""
    try:
        product_set(root, buffer)
    except NoProduct:
        return False
    return True


def product_file(root: DataRoot, buffer: str, role: str) -> Path:
    """The file of one role of the product (:class:`NoProduct` if it is missing)."""
    path = product_set(root, buffer).path(role)
    if not path.is_file():
        raise NoProduct(f"buffer {buffer!r} has no {path.name}")
    return path


# ---------------------------------------------------------------------------------------------
# images
# ---------------------------------------------------------------------------------------------


@dataclass
class FitsPlane:
    """The first plane (frequency, Stokes) of a FITS image, as stored: ``data[y, x]``."""

    data: np.ndarray
    header: fits.Header


def read_plane(path: Path) -> FitsPlane:
    """The first plane of the image in ``path`` and its header."""
    with fits.open(path) as hdul:
        header = hdul[0].header.copy()
        data = np.asarray(hdul[0].data, dtype=np.float64)
    if data.ndim < 2:
        raise NoProduct(f"{path.name} is not an image")
    return FitsPlane(data.reshape(-1, *data.shape[-2:])[0], header)


def beam_of(header: fits.Header) -> dict | None:
    """The clean beam (degrees; PA north through east) of a header, if it has one."""
    if not all(key in header for key in ("BMAJ", "BMIN", "BPA")):
        return None
    return {"bmaj_deg": header["BMAJ"], "bmin_deg": header["BMIN"], "bpa_deg": header["BPA"]}


def _number(header: fits.Header, key: str) -> float | None:
    value = header.get(key)
    return float(value) if isinstance(value, int | float) and math.isfinite(value) else None


def image_summary(path: Path) -> dict:
    """What the page prints beside an image: size, cell, centre, frequency, unit, beam, stats."""
    plane = read_plane(path)
    h, data = plane.header, plane.data
    finite = data[np.isfinite(data)]
    cell = _number(h, "CDELT2")
    return {
        "file": path.name,
        "npixel": [int(data.shape[1]), int(data.shape[0])],
        "cell_deg": None if cell is None else abs(cell),
        "centre_deg": [_number(h, "CRVAL1"), _number(h, "CRVAL2")],
        "frequency_hz": _number(h, "CRVAL3"),
        "unit": h.get("BUNIT", ""),
        "date_obs": h.get("DATE-OBS"),
        "beam": beam_of(h),
        "peak": float(finite.max()) if finite.size else None,
        "min": float(finite.min()) if finite.size else None,
        "rms": float(np.sqrt(np.mean(finite**2))) if finite.size else None,
    }


# ---------------------------------------------------------------------------------------------
# gains
# ---------------------------------------------------------------------------------------------


@dataclass
class GainTerm:
    """One solved term: phase (rad) and amplitude (time, station, freq); weight 0 = flagged."""

    term: str
    times: np.ndarray  # (ntime,) MJD seconds, UTC
    frequencies: np.ndarray  # (nfreq,) Hz
    stations: list[str]
    phase: np.ndarray
    amplitude: np.ndarray
    weight: np.ndarray


def read_gain_terms(path: Path) -> list[GainTerm]:
    """Every term of an H5parm (read by :mod:`sdpbatch.io.gaintable`), in soltab order (XX);
    a term per direction as one term per direction ("D Dir00", ...)."""
    terms = []
    for name, table in gain_table_terms(path).items():
        weights = np.ones(table.gains.shape) if table.weights is None else table.weights
        if table.directions is None:
            parts = [(name, table.gains, weights)]
        else:
            parts = [(f"{name} {d}", table.gains[..., k], weights[..., k])
                     for k, d in enumerate(table.directions)]  # fmt: skip
        terms += [
            GainTerm(
                term=label,
                times=table.times,
                frequencies=table.frequencies,
                stations=table.antenna_names,
                phase=np.angle(gains),
                amplitude=np.abs(gains),
                weight=weight,
            )
            for label, gains, weight in parts
        ]
    return terms


def gain_series(term: GainTerm) -> dict:
    """One term as per-station series for plotting: over time at the middle frequency, or over
    frequency when there is one solution interval (a bandpass).  Flagged values are None."""
    over_time = term.times.size > 1 or term.frequencies.size == 1
    if over_time:
        k = term.frequencies.size // 2
        x = (term.times - term.times[0]) / 60.0
        pick = (slice(None), slice(None), k)  # (time, station)
        axis = {"axis": "time", "x_unit": "min since first solution"}
    else:
        x = term.frequencies / 1e6
        pick = (0, slice(None), slice(None))  # (station, freq) -> transposed below
        axis = {"axis": "frequency", "x_unit": "MHz"}
    phase, amp, weight = (
        np.asarray(a[pick], float) for a in (term.phase, term.amplitude, term.weight)
    )
    if over_time:
        phase, amp, weight = phase.T, amp.T, weight.T  # (station, x)
    flagged = weight <= 0

    def series(values: np.ndarray) -> list[list[float | None]]:
        return [
            [None if f else float(v) for v, f in zip(row, fl, strict=True)]
            for row, fl in zip(values, flagged, strict=True)
        ]

    return {
        "term": term.term,
        **axis,
        "x": [float(v) for v in x],
        "stations": term.stations,
        "phase_deg": series(np.degrees(phase)),
        "amplitude": series(amp),
        "start_mjd_s": float(term.times[0]),
    }


# ---------------------------------------------------------------------------------------------
# the product as a whole
# ---------------------------------------------------------------------------------------------


def product_view(root: DataRoot, buffer: str) -> dict:
    """The images' summaries, the gain table's terms and the QA summary of one product."""
    found = product_set(root, buffer)
    directory = found.directory
    images = {
        role: image_summary(found.path(role)) for role in IMAGES if found.path(role).is_file()
    }
    gains = None
    if found.path("gains").is_file():
        gains = [
            {
                "term": t.term,
                "stations": len(t.stations),
                "times": int(t.times.size),
                "frequencies": int(t.frequencies.size),
            }
            for t in read_gain_terms(found.path("gains"))
        ]
    qa = read_qa(found.path("qa"))
    return {
        "buffer": buffer,
        "prefix": found.prefix,
        "images": images,
        "gains": gains,
        "qa": qa_summary(qa),
        "files": sorted(p.name for p in directory.iterdir() if p.is_file()),
    }


def qa_summary(qa: dict) -> dict:
    """The figures of ``qa.json`` the page prints (the whole record is under /qa)."""
    truth = qa.get("truth") or {}
    return {
        "clean_beam_deg": qa.get("clean_beam_deg"),
        "restored": qa.get("restored"),
        "residual": qa.get("residual"),
        "cycles": len(qa.get("cycles", [])),
        "timings_s": qa.get("timings_s"),
        "truth": {
            key: truth[key]
            for key in ("gain_phase_rms_error_rad", "max_flux_error", "max_offset_pixels")
            if key in truth
        },
    }
