"""Validation of the workflow parameters and the validated model, :class:`Parameters`.

Bad input raises one :class:`ParameterError` listing every problem, each named as the user
wrote it (the JSON key, or the flag).
"""

from __future__ import annotations

import dataclasses
import difflib
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from sdpbatch.parameters.schema import FIELDS, SCHEMA, Field


class ParameterError(ValueError):
    """Parameters are missing, of the wrong type or outside their allowed values.

    ``problems`` lists every problem as ``(field, label, message)``: ``label`` is the name
    the user wrote (``parameter 'npixel'`` in a file, ``-size`` on the command line).
    """

    def __init__(self, name: str, message: str, *, label: str | None = None):
        self.problems: list[tuple[str, str, str]] = [
            (name, label or f"parameter '{name}'", message)
        ]
        self.where = ""
        super().__init__()

    @classmethod
    def of(cls, problems: list[tuple[str, str, str]], where: str = "") -> ParameterError:
        err = cls(*problems[0][::2], label=problems[0][1])
        err.problems, err.where = list(problems), where
        return err

    field = property(lambda self: self.problems[0][0], doc="The first problem's field.")
    fields = property(lambda self: [p[0] for p in self.problems], doc="Every problem's field.")

    def __str__(self) -> str:
        text = "; ".join(f"{label}: {message}" for _, label, message in self.problems)
        if len(self.problems) > 1:
            text = f"{len(self.problems)} problems: {text}"
        return f"{self.where}: {text}" if self.where else text


_EXPECTED = {
    "int": "an integer",
    "float": "a number",
    "bool": "true or false",
    "str": "a string",
    "int-list": "a list of integers",
}


def _coerce(f: Field, value: Any) -> Any:
    """``value`` as the field's kind (an int is a valid float); ValueError naming the type."""
    kind = f.kind.removeprefix("optional-")
    if value is None and kind != f.kind:
        return None
    is_int = isinstance(value, int) and not isinstance(value, bool)
    if kind == "int" and is_int:
        return value
    if kind == "float" and (is_int or isinstance(value, float)):
        return float(value)
    if kind == "bool" and isinstance(value, bool):
        return value
    if kind == "str" and isinstance(value, str):
        return value
    if kind == "int-list" and isinstance(value, list | tuple):
        if all(isinstance(v, int) and not isinstance(v, bool) for v in value):
            return list(value)
    expected = _EXPECTED[kind] + (" or null" if kind != f.kind else "")
    raise ValueError(f"expected {expected}, got {json.dumps(value, default=repr)}")


def _validate(values: Mapping[str, Any], labels: Mapping[str, str]) -> dict[str, Any]:
    """Every field of ``values`` coerced and checked, defaults for the others.

    Raises one :class:`ParameterError` with every problem (unknown names included).
    """
    problems: list[tuple[str, str, str]] = []

    def label(name: str) -> str:
        return labels.get(name, f"parameter '{name}'")

    for k, name in enumerate(sorted(set(values) - set(FIELDS))):
        close = difflib.get_close_matches(str(name), FIELDS, n=1)
        hint = f"; did you mean '{close[0]}'?" if close else ""
        listed = "" if k else f"; allowed parameters: {', '.join(FIELDS)}"
        problems.append((name, label(name), f"unknown parameter{hint}{listed}"))
    out: dict[str, Any] = {}
    for f in SCHEMA:
        if f.name not in values:
            out[f.name] = list(f.default) if isinstance(f.default, list) else f.default
            continue
        try:
            value = _coerce(f, values[f.name])
        except ValueError as err:
            problems.append((f.name, label(f.name), str(err)))
            continue
        if f.check is not None and not f.check(value):
            shown = json.dumps(value)
            problems.append(
                (f.name, label(f.name), f"{shown} is not allowed; allowed: {f.allowed}")
            )
            continue
        out[f.name] = value
    problems += _cross_checks(out, label)
    if problems:
        raise ParameterError.of(problems)
    return out


def _cross_checks(v: dict[str, Any], label: Callable[[str], str]) -> list[tuple[str, str, str]]:
    """Problems between valid fields (a field that failed its own check is not in ``v``)."""
    problems = []
    if {"freq_min", "freq_max", "nfreqwin"} <= v.keys() and (
        v["freq_min"] > v["freq_max"] or (v["nfreqwin"] > 1 and v["freq_min"] == v["freq_max"])
    ):
        problems.append((
            "freq_min",
            label("freq_min"),
            f"{v['freq_min']} must be below freq_max ({v['freq_max']}) when nfreqwin > 1 "
            "(equal only for a single window)",
        ))  # fmt: skip
    if {"nfreqwin", "channels_per_window"} <= v.keys() and v["nfreqwin"] % v["channels_per_window"]:
        problems.append((
            "channels_per_window",
            label("channels_per_window"),
            f"{v['channels_per_window']} does not divide nfreqwin ({v['nfreqwin']}); "
            "allowed: a divisor of nfreqwin",
        ))  # fmt: skip
    if {"buffer_vis", "buffer_img"} <= v.keys() and v["buffer_vis"] == v["buffer_img"]:
        problems.append(("buffer_img", label("buffer_img"), "must differ from buffer_vis"))
    return problems


def _default(name: str) -> Any:
    """The schema's default of ``name`` as a dataclass field (the dataclass repeats none)."""
    default = FIELDS[name].default
    if isinstance(default, list):
        return dataclasses.field(default_factory=lambda: list(default))
    return dataclasses.field(default=default)


@dataclass(frozen=True)
class Parameters:
    """Validated workflow parameters (see :data:`SCHEMA` for meaning, units and defaults).

    Constructing one validates it: an invalid ``Parameters(...)`` raises
    :class:`ParameterError` listing every problem.
    """

    n_workers: int = _default("n_workers")
    freq_min: float = _default("freq_min")
    freq_max: float = _default("freq_max")
    nfreqwin: int = _default("nfreqwin")
    channels_per_window: int = _default("channels_per_window")
    ntimes: int = _default("ntimes")
    rmax: float = _default("rmax")
    ra: float = _default("ra")
    dec: float = _default("dec")
    buffer_vis: str = _default("buffer_vis")
    buffer_img: str = _default("buffer_img")
    seed: int = _default("seed")
    phase_error: float = _default("phase_error")
    amplitude_error: float = _default("amplitude_error")
    add_noise: bool = _default("add_noise")
    tsys: float = _default("tsys")
    sky_model: str = _default("sky_model")
    flux_limit: float = _default("flux_limit")
    catalogue_flux_error: float = _default("catalogue_flux_error")
    catalogue_position_error: float = _default("catalogue_position_error")
    beam: str = _default("beam")
    ionosphere_rms_phase: float = _default("ionosphere_rms_phase")
    ionosphere_scale_km: float = _default("ionosphere_scale_km")
    ionosphere_speed: float = _default("ionosphere_speed")
    layout: str = _default("layout")
    obs_date: str = _default("obs_date")
    npixel: int | None = _default("npixel")
    cellsize: float | None = _default("cellsize")
    weighting: str = _default("weighting")
    robust: float = _default("robust")
    epsilon: float = _default("epsilon")
    grid_epsilon: float = _default("grid_epsilon")
    small_inversion: bool = _default("small_inversion")
    prefix: str = _default("prefix")
    pb_correct: bool | None = _default("pb_correct")
    nmajor: int = _default("nmajor")
    niter: int = _default("niter")
    clean_gain: float = _default("clean_gain")
    threshold: float = _default("threshold")
    fractional_threshold: float = _default("fractional_threshold")
    auto_threshold: float | None = _default("auto_threshold")
    scales: list[int] = _default("scales")
    nmoment: int = _default("nmoment")
    channel_blocks: int | None = _default("channel_blocks")
    psf_support: int = _default("psf_support")
    parallel_deconvolution: int = _default("parallel_deconvolution")
    selfcal: bool = _default("selfcal")
    calibration_model: str = _default("calibration_model")
    calibration_context: str = _default("calibration_context")
    first_selfcal_T: int = _default("first_selfcal_T")
    first_selfcal_G: int = _default("first_selfcal_G")
    first_selfcal_B: int = _default("first_selfcal_B")
    first_selfcal_D: int = _default("first_selfcal_D")
    timeslice_G: float | None = _default("timeslice_G")
    ndirections: int = _default("ndirections")
    solve_tolerance: float = _default("solve_tolerance")
    solve_max_iterations: int = _default("solve_max_iterations")
    solve_step: float = _default("solve_step")
    solve_min_snr: float = _default("solve_min_snr")
    solve_outlier_sigma: float = _default("solve_outlier_sigma")
    data_column: str = _default("data_column")
    field: int | None = _default("field")
    spw: int | None = _default("spw")
    write_model: bool = _default("write_model")
    write_corrected: bool = _default("write_corrected")
    threads_per_worker: int = _default("threads_per_worker")

    def __post_init__(self) -> None:
        values = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        for name, value in _validate(values, {}).items():
            object.__setattr__(self, name, value)  # coerced: an int given for a float

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-compatible dictionary of all parameters."""
        return dataclasses.asdict(self)

    def replace(self, **changes: Any) -> Parameters:
        """A validated copy with some parameters changed."""
        return parse_parameters({**self.to_dict(), **changes})


def parse_parameters(
    raw: Mapping[str, Any], *, labels: Mapping[str, str] | None = None
) -> Parameters:
    """Validate a parameter mapping (e.g. parsed JSON); missing keys take their defaults.

    ``labels`` name where a value came from in error messages (e.g. ``{"npixel": "-size"}``
    for a command-line flag); by default ``parameter 'npixel'``.  Every problem is reported
    in one :class:`ParameterError`.
    """
    if not isinstance(raw, Mapping):
        raise ParameterError("<parameters>", "expected a JSON object of parameters")
    return Parameters(**_validate(raw, labels or {}))
