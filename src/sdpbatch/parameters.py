"""The one validated parameter model of the batch imaging workflow.

Every entry point (CLI, processing block parameters, tests) builds a :class:`Parameters`
through :func:`parse_parameters` or :func:`load_parameters`.  The schema below is the
single source for types, defaults, allowed ranges and help text; the seed's example
parameters are the defaults.  Bad input raises :class:`ParameterError` naming the field
and the allowed values.
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9-]{0,95}$")
"""A name that may become one directory under a data root: the rule of deployment ids."""

GLEAM_LIKE = "gleam-like"
DEFAULT_LAYOUT = "ska1-low-central"
CATALOGUE = "catalogue"
NO_MODEL = "none"


class ParameterError(ValueError):
    """A parameter is missing, of the wrong type or outside its allowed values."""

    def __init__(self, name: str, message: str):
        self.field = name
        super().__init__(f"parameter '{name}': {message}")


def is_safe_name(name: str) -> bool:
    """True if ``name`` can be used as one path component under a data root."""
    return bool(SAFE_NAME.match(name))


@dataclass(frozen=True)
class Field:
    """One parameter: its type, default, check and help."""

    name: str
    kind: str  # "int", "float", "bool", "str", "int-list", "optional-int", "optional-float"
    default: Any
    help: str
    check: Callable[[Any], bool] | None = None
    allowed: str = ""  # human description of the allowed values


def _range(lo: float | None = None, hi: float | None = None, *, lo_open: bool = False):
    def check(v: float) -> bool:
        if isinstance(v, float) and not math.isfinite(v):
            return False
        if lo is not None and (v <= lo if lo_open else v < lo):
            return False
        return hi is None or v <= hi

    return check


SCHEMA: tuple[Field, ...] = (
    # --- the seed's workflow parameters -------------------------------------------------------
    Field("n_workers", "int", 4, "number of Dask workers to deploy", _range(1, 256), "1 to 256"),
    Field(
        "freq_min", "float", 0.9e8, "minimum frequency (Hz)", _range(1e6, 1e12), "1e6 to 1e12 Hz"
    ),
    Field(
        "freq_max", "float", 1.1e8, "maximum frequency (Hz)", _range(1e6, 1e12), "1e6 to 1e12 Hz"
    ),
    Field(
        "nfreqwin",
        "int",
        8,
        "number of frequency channels, evenly spaced from freq_min to freq_max (the seed's "
        "frequency windows)",
        _range(1, 4096),
        "1 to 4096",
    ),
    Field(
        "channels_per_window",
        "int",
        1,
        "channels per simulated MeasurementSet: 1 writes one file per channel (the seed's "
        "way), nfreqwin writes one file holding them all",
        _range(1, 4096),
        "1 to 4096, dividing nfreqwin",
    ),
    Field(
        "ntimes",
        "int",
        5,
        "number of time samples over hour angles -30..+30 deg",
        _range(1, 100000),
        "1 to 100000",
    ),
    Field(
        "rmax",
        "float",
        750.0,
        "maximum distance of stations from the array centre (m)",
        _range(0.0, 1e6, lo_open=True),
        "> 0 and <= 1e6 m",
    ),
    Field(
        "ra",
        "float",
        0.0,
        "right ascension of the phase centre (deg, J2000)",
        _range(0.0, 360.0),
        "0 to 360 deg",
    ),
    Field(
        "dec",
        "float",
        -30.0,
        "declination of the phase centre (deg, J2000)",
        _range(-90.0, 90.0),
        "-90 to 90 deg",
    ),
    Field(
        "buffer_vis",
        "str",
        "buff-pb-mvp01-20200523-00001-vis",
        "name of the buffer reservation for visibilities",
        is_safe_name,
        "a safe directory name: letters, digits and '-', 1 to 96, not starting with '-'",
    ),
    Field(
        "buffer_img",
        "str",
        "buff-pb-mvp01-20200523-00001-img",
        "name of the buffer reservation for images",
        is_safe_name,
        "a safe directory name: letters, digits and '-', 1 to 96, not starting with '-'",
    ),
    # --- simulation knobs ----------------------------------------------------------------------
    Field(
        "seed",
        "int",
        20200523,
        "random seed of sky model, gains and noise",
        _range(0, 2**32 - 1),
        "0 to 2**32-1",
    ),
    Field(
        "phase_error",
        "float",
        1.0,
        "rms of the station phase errors (rad)",
        _range(0.0, 10.0),
        "0 to 10 rad",
    ),
    Field(
        "amplitude_error",
        "float",
        0.0,
        "rms of the fractional station amplitude errors",
        _range(0.0, 0.5),
        "0 to 0.5",
    ),
    Field("add_noise", "bool", False, "add radiometer noise"),
    Field(
        "tsys",
        "float",
        20.0,
        "system temperature for radiometer noise (K)",
        _range(0.0, 1e5, lo_open=True),
        "> 0 K",
    ),
    Field(
        "sky_model",
        "str",
        GLEAM_LIKE,
        f"'{GLEAM_LIKE}' for a synthetic GLEAM-like field, or a WSClean/DP3 sky model file",
        lambda v: bool(v),
        f"'{GLEAM_LIKE}' or a file path",
    ),
    Field(
        "flux_limit",
        "float",
        3.0,
        "flux limit of the synthetic sky model at 100 MHz (Jy)",
        _range(0.0, 1e4, lo_open=True),
        "> 0 Jy",
    ),
    Field(
        "catalogue_flux_error",
        "float",
        0.05,
        "fractional rms error of the fluxes in the catalogue the simulation writes for "
        "calibration (catalogue_skymodel.txt; the sky itself is exact)",
        _range(0.0, 1.0),
        "0 to 1",
    ),
    Field(
        "catalogue_position_error",
        "float",
        2.0,
        "rms error of each coordinate of the catalogue's positions (arcsec)",
        _range(0.0, 3600.0),
        "0 to 3600 arcsec",
    ),
    Field(
        "layout",
        "str",
        DEFAULT_LAYOUT,
        f"'{DEFAULT_LAYOUT}' or a station layout file (east north up metres, text or CSV)",
        lambda v: bool(v),
        f"'{DEFAULT_LAYOUT}' or a file path",
    ),
    Field(
        "obs_date",
        "str",
        "2020-01-01",
        "date of the transit of the phase centre (UTC)",
        lambda v: bool(re.match(r"^\d{4}-\d{2}-\d{2}$", v)),
        "YYYY-MM-DD",
    ),
    # --- imaging ---------------------------------------------------------------------------------
    Field(
        "npixel",
        "optional-int",
        1024,
        "image size in pixels (null: advise from the data)",
        lambda v: v is None or (64 <= v <= 32768 and v % 2 == 0),
        "even, 64 to 32768, or null",
    ),
    Field(
        "cellsize",
        "optional-float",
        0.0005,
        "pixel size (rad) (null: advise from the data)",
        lambda v: v is None or 1e-9 < v < 0.1,
        "1e-9 to 0.1 rad, or null",
    ),
    Field(
        "weighting",
        "str",
        "natural",
        "visibility weighting",
        lambda v: v in ("natural", "uniform", "briggs"),
        "natural, uniform, briggs",
    ),
    Field("robust", "float", 0.0, "Briggs robustness", _range(-2.0, 2.0), "-2 to 2"),
    Field(
        "epsilon",
        "float",
        1e-5,
        "accuracy of the predicted model visibilities (degridding): it bounds the dynamic range",
        _range(1e-12, 1e-2),
        "1e-12 to 1e-2",
    ),
    Field(
        "grid_epsilon",
        "float",
        1e-4,
        "accuracy of the gridded images (PSF, residuals) relative to their own peak; their "
        "errors are corrected by the next major cycle, so only the final residual keeps them",
        _range(1e-12, 1e-2),
        "1e-12 to 1e-2",
    ),
    Field(
        "small_inversion",
        "bool",
        True,
        "grid on the fewest pixels that sample the image, then interpolate (WSClean's small "
        "inversion): faster for oversampled images, errors below 1e-3 of the image's peak at "
        "its edges",
    ),
    # --- deconvolution ---------------------------------------------------------------------------
    Field(
        "nmajor", "int", 5, "number of major (self-calibration) cycles", _range(0, 100), "0 to 100"
    ),
    Field("niter", "int", 1000, "clean iterations per minor cycle", _range(0, 10**7), "0 to 1e7"),
    Field(
        "clean_gain",
        "float",
        0.25,
        "clean loop gain",
        _range(0.0, 1.0, lo_open=True),
        "> 0 and <= 1",
    ),
    Field("threshold", "float", 0.1, "absolute clean threshold (Jy)", _range(0.0, 1e6), ">= 0 Jy"),
    Field(
        "fractional_threshold",
        "float",
        0.1,
        "clean threshold relative to the cycle's peak",
        _range(0.0, 1.0),
        "0 to 1",
    ),
    Field(
        "scales",
        "int-list",
        [0, 3, 10],
        "multi-scale clean scales (pixels)",
        lambda v: 1 <= len(v) <= 10 and all(0 <= s <= 1000 for s in v),
        "1 to 10 integers from 0 to 1000",
    ),
    Field(
        "nmoment",
        "int",
        2,
        "number of Taylor terms of the multi-frequency clean",
        _range(1, 4),
        "1 to 4",
    ),
    Field(
        "channel_blocks",
        "int",
        4,
        "channel blocks each major cycle grids and predicts separately (WSClean's "
        "-channels-out): every visibility is gridded once, onto its block's image, and the "
        "Taylor images are formed from the blocks; exact when each block is one channel, "
        "each block costs one FFT per pass",
        _range(1, 4096),
        "1 to 4096",
    ),
    Field(
        "psf_support",
        "int",
        128,
        "half-width of the PSF patch used by minor cycles (px)",
        _range(8, 4096),
        "8 to 4096",
    ),
    # --- calibration -----------------------------------------------------------------------------
    Field("selfcal", "bool", True, "self-calibrate during the major cycles"),
    Field(
        "calibration_model",
        "str",
        CATALOGUE,
        "sky model to calibrate against before the first image, which fixes the absolute "
        "positions that self-calibration alone leaves free: 'catalogue' = the component "
        "list of the field when one is known (the simulation's, beside its MeasurementSets), "
        "'none' = self-calibration alone (the seed's way), or a component list file "
        "(WSClean format, apparent fluxes)",
        lambda v: bool(v.strip()),
        "'catalogue', 'none' or a file path",
    ),
    Field(
        "calibration_context",
        "str",
        "T",
        "gain terms to solve: T (phase per integration), G (amp+phase), B (bandpass)",
        lambda v: bool(re.match(r"^T?G?B?$", v)) and bool(v),
        "a non-empty subsequence of 'TGB'",
    ),
    Field(
        "first_selfcal_T", "int", 0, "first major cycle that solves T", _range(0, 100), "0 to 100"
    ),
    Field(
        "first_selfcal_G", "int", 3, "first major cycle that solves G", _range(0, 100), "0 to 100"
    ),
    Field(
        "first_selfcal_B", "int", 4, "first major cycle that solves B", _range(0, 100), "0 to 100"
    ),
    Field(
        "timeslice_G",
        "optional-float",
        None,
        "solution interval of G (s) (null: the whole observation)",
        lambda v: v is None or v > 0,
        "> 0 s, or null",
    ),
    # --- execution -------------------------------------------------------------------------------
    Field(
        "threads_per_worker",
        "int",
        1,
        "threads per Dask worker (and ducc0 threads)",
        _range(1, 256),
        "1 to 256",
    ),
)

FIELDS: dict[str, Field] = {f.name: f for f in SCHEMA}


def _coerce(f: Field, value: Any) -> Any:
    """Check the JSON type of ``value`` against the field's kind."""
    kind = f.kind
    if kind.startswith("optional-"):
        if value is None:
            return None
        kind = kind.removeprefix("optional-")
    ok = False
    if kind == "int":
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif kind == "float":
        ok = isinstance(value, int | float) and not isinstance(value, bool)
        value = float(value) if ok else value
    elif kind == "bool":
        ok = isinstance(value, bool)
    elif kind == "str":
        ok = isinstance(value, str)
    elif kind == "int-list":
        ok = isinstance(value, list) and all(
            isinstance(v, int) and not isinstance(v, bool) for v in value
        )
        value = list(value) if ok else value
    if not ok:
        expected = {
            "int": "an integer",
            "float": "a number",
            "bool": "true or false",
            "str": "a string",
            "int-list": "a list of integers",
        }[kind]
        if f.kind.startswith("optional-"):
            expected += " or null"
        raise ParameterError(f.name, f"expected {expected}, got {json.dumps(value)}")
    return value


@dataclass(frozen=True)
class Parameters:
    """Validated workflow parameters (see :data:`SCHEMA` for meaning and units)."""

    n_workers: int = 4
    freq_min: float = 0.9e8
    freq_max: float = 1.1e8
    nfreqwin: int = 8
    channels_per_window: int = 1
    ntimes: int = 5
    rmax: float = 750.0
    ra: float = 0.0
    dec: float = -30.0
    buffer_vis: str = "buff-pb-mvp01-20200523-00001-vis"
    buffer_img: str = "buff-pb-mvp01-20200523-00001-img"
    seed: int = 20200523
    phase_error: float = 1.0
    amplitude_error: float = 0.0
    add_noise: bool = False
    tsys: float = 20.0
    sky_model: str = GLEAM_LIKE
    flux_limit: float = 3.0
    catalogue_flux_error: float = 0.05
    catalogue_position_error: float = 2.0
    layout: str = DEFAULT_LAYOUT
    obs_date: str = "2020-01-01"
    npixel: int | None = 1024
    cellsize: float | None = 0.0005
    weighting: str = "natural"
    robust: float = 0.0
    epsilon: float = 1e-5
    grid_epsilon: float = 1e-4
    small_inversion: bool = True
    nmajor: int = 5
    niter: int = 1000
    clean_gain: float = 0.25
    threshold: float = 0.1
    fractional_threshold: float = 0.1
    scales: list[int] = field(default_factory=lambda: [0, 3, 10])
    nmoment: int = 2
    channel_blocks: int = 4
    psf_support: int = 128
    selfcal: bool = True
    calibration_model: str = CATALOGUE
    calibration_context: str = "T"
    first_selfcal_T: int = 0
    first_selfcal_G: int = 3
    first_selfcal_B: int = 4
    timeslice_G: float | None = None
    threads_per_worker: int = 1

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-compatible dictionary of all parameters."""
        return dataclasses.asdict(self)

    def replace(self, **changes: Any) -> Parameters:
        """A validated copy with some parameters changed."""
        return parse_parameters({**self.to_dict(), **changes})


def parse_parameters(raw: Mapping[str, Any]) -> Parameters:
    """Validate a parameter mapping (e.g. parsed JSON); missing keys take their defaults."""
    if not isinstance(raw, Mapping):
        raise ParameterError("<parameters>", "expected a JSON object of parameters")
    unknown = sorted(set(raw) - set(FIELDS))
    if unknown:
        raise ParameterError(
            unknown[0], f"unknown parameter; allowed parameters are: {', '.join(FIELDS)}"
        )
    values: dict[str, Any] = {}
    for f in SCHEMA:
        if f.name not in raw:
            values[f.name] = list(f.default) if isinstance(f.default, list) else f.default
            continue
        value = _coerce(f, raw[f.name])
        if f.check is not None and not f.check(value):
            raise ParameterError(
                f.name, f"{json.dumps(value)} is not allowed; allowed: {f.allowed}"
            )
        values[f.name] = value
    if values["freq_min"] > values["freq_max"] or (
        values["nfreqwin"] > 1 and values["freq_min"] == values["freq_max"]
    ):
        raise ParameterError(
            "freq_min",
            f"{values['freq_min']} must be below freq_max ({values['freq_max']}) "
            "when nfreqwin > 1 (equal only for a single window)",
        )
    if values["nfreqwin"] % values["channels_per_window"]:
        raise ParameterError(
            "channels_per_window",
            f"{values['channels_per_window']} does not divide nfreqwin ({values['nfreqwin']}); "
            "allowed: a divisor of nfreqwin",
        )
    if values["buffer_vis"] == values["buffer_img"]:
        raise ParameterError("buffer_img", "must differ from buffer_vis")
    return Parameters(**values)


def load_parameters(path: str | Path) -> Parameters:
    """Read and validate a parameter JSON file.

    Relative ``layout``, ``sky_model`` and ``calibration_model`` file paths are taken relative
    to the file's folder.
    """
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as err:
        raise ParameterError("<file>", f"cannot read {path}: {err.strerror}") from err
    try:
        raw = json.loads(text)
    except json.JSONDecodeError as err:
        raise ParameterError(
            "<file>", f"{path} is not valid JSON: {err.msg} at line {err.lineno} column {err.colno}"
        ) from err
    if isinstance(raw, dict):
        raw = dict(raw)
        for key, special in (
            ("layout", (DEFAULT_LAYOUT,)),
            ("sky_model", (GLEAM_LIKE,)),
            ("calibration_model", (CATALOGUE, NO_MODEL)),
        ):
            value = raw.get(key)
            if isinstance(value, str) and value and value not in special:
                candidate = Path(value)
                if not candidate.is_absolute():
                    raw[key] = str((path.parent / candidate).resolve())
    return parse_parameters(raw)


def describe_parameters() -> str:
    """Markdown table of all parameters, for docs and ``--help``."""
    rows = ["| parameter | default | allowed | meaning |", "|---|---|---|---|"]
    for f in SCHEMA:
        rows.append(
            f"| `{f.name}` | `{json.dumps(f.default)}` | {f.allowed or f.kind} | {f.help} |"
        )
    return "\n".join(rows)
