"""Workflow parameters on the command line: the schema's flags, WSClean's spelling where it
has one (``-size``, ``-scale 20asec``, ``-niter``, ``-weight briggs 0``, ``-mgain``, ``-j``...).

A command takes a parameter JSON file and flags; the flags win.  Each flag sets the schema
field it names in :data:`sdpbatch.parameters.SCHEMA` (``sdpbatch params`` lists both), and a
bad value is reported under the flag as typed (``-size 1023``), every problem at once.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from sdpbatch.parameters import (
    PATH_FIELDS,
    SCHEMA,
    Field,
    ParameterError,
    Parameters,
    parse_parameters,
    read_parameter_file,
)

SECTION_COMMANDS: dict[str, tuple[str, ...]] = {
    "execution": ("simulate", "ical", "run"),
    "observation": ("simulate", "run"),
    "buffers": ("run",),
    "simulation": ("simulate", "run"),
    "imaging": ("ical", "run"),
    "deconvolution": ("ical", "run"),
    "calibration": ("ical", "run"),
    "selection": ("ical",),
    "write-back": ("ical", "run"),
}
"""Which ``sdpbatch`` commands offer the flags of each section of the schema."""

COMMAND_DEFAULTS: dict[str, dict[str, str]] = {
    "ical": {
        "n_workers": "not set: ICAL runs in this process, no Dask cluster",
        "threads_per_worker": "this machine's cores when n_workers is not set, else 1",
    },
}
"""Defaults a command chooses instead of the schema's, as its help and ``sdpbatch params`` say:
``ical`` given no ``n_workers`` (and no scheduler) runs in this process on every core
(``cli.science._fit_to_machine``)."""

DEST = "param__"
NUMBER = r"([-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)"
ANGLE_UNITS = {
    "": math.pi / 180,  # WSClean: a bare -scale is in degrees
    "deg": math.pi / 180,
    "amin": math.pi / 180 / 60,
    "arcmin": math.pi / 180 / 60,
    "asec": math.pi / 180 / 3600,
    "arcsec": math.pi / 180 / 3600,
    "rad": 1.0,
}
FLUX_UNITS = {"": 1.0, "jy": 1.0, "mjy": 1e-3, "ujy": 1e-6, "µjy": 1e-6}
NULL_WORDS = ("auto", "null", "none")
TRUE_WORDS, FALSE_WORDS = ("true", "yes", "on"), ("false", "no", "off")


def _quantity(text: str, units: dict[str, float], what: str) -> float:
    match = re.fullmatch(NUMBER + r"\s*([A-Za-zµ]*)", text.strip())
    unit = match.group(2).lower() if match else None
    if match is None or unit not in units:
        names = ", ".join(u for u in units if u)
        raise ValueError(f"expected {what}, a number with a unit ({names}), got {text!r}")
    return float(match.group(1)) * units[unit]


def _number(text: str, kind: str) -> int | float:
    try:
        return int(text) if kind == "int" else float(text)
    except ValueError:
        expected = "an integer" if kind == "int" else "a number"
        raise ValueError(f"expected {expected}, got {text!r}") from None


def _size(words: list[str]) -> dict[str, Any]:
    if len(words) == 1 and words[0].lower() in NULL_WORDS:
        return {"npixel": None}
    sizes = {_number(w, "int") for w in words}
    if len(words) > 2 or len(sizes) != 1:
        raise ValueError("expected one size, or width and height equal (images are square)")
    return {"npixel": sizes.pop()}


def _scale(words: list[str]) -> dict[str, Any]:
    if words[0].lower() in NULL_WORDS:
        return {"cellsize": None}
    return {"cellsize": _quantity(words[0], ANGLE_UNITS, "an angle")}


def _weight(words: list[str]) -> dict[str, Any]:
    mode = words[0].lower()
    if mode == "briggs" and len(words) == 2:
        return {"weighting": "briggs", "robust": _number(words[1], "float")}
    if mode in ("natural", "uniform") and len(words) == 1:
        return {"weighting": mode}
    raise ValueError("expected natural, uniform or briggs R (R from -2 to 2)")


def _mgain(words: list[str]) -> dict[str, Any]:
    gain = _number(words[0], "float")
    if not 0.0 <= gain <= 1.0:
        raise ValueError(f"{gain} is not allowed; allowed: 0 to 1")
    return {"fractional_threshold": round(1.0 - gain, 12)}


def _threshold(words: list[str]) -> dict[str, Any]:
    return {"threshold": _quantity(words[0], FLUX_UNITS, "a flux")}


def _scales(words: list[str]) -> dict[str, Any]:
    return {"scales": [_number(w, "int") for w in words[0].split(",") if w.strip()]}


SPECIAL: dict[str, tuple[str | None, Callable[[list[str]], dict[str, Any]]]] = {
    "npixel": ("+", _size),
    "cellsize": (None, _scale),
    "weighting": ("+", _weight),
    "fractional_threshold": (None, _mgain),
    "threshold": (None, _threshold),
    "scales": (None, _scales),
}
"""Fields whose flag is not the plain value: (nargs, converter of the typed words)."""


def _plain(f: Field, word: str) -> Any:
    kind = f.kind.removeprefix("optional-")
    if kind != f.kind and word.lower() in NULL_WORDS:
        return None
    if f.name in PATH_FIELDS and word not in PATH_FIELDS[f.name] and word.strip():
        return str(Path(word).expanduser().resolve())
    if kind == "bool":  # an optional bool takes a word: true, false or auto
        if word.lower() not in TRUE_WORDS + FALSE_WORDS:
            raise ValueError(f"expected true, false or auto, got {word!r}")
        return word.lower() in TRUE_WORDS
    return word if kind == "str" else _number(word, kind)


def command_fields(command: str) -> list[Field]:
    """The schema fields whose flags ``command`` offers."""
    return [f for f in SCHEMA if command in SECTION_COMMANDS[f.section]]


def add_parameter_options(parser: argparse.ArgumentParser, command: str) -> None:
    """Add the flag of every parameter ``command`` uses, grouped by the schema's sections."""
    groups: dict[str, Any] = {}
    for f in command_fields(command):
        if f.section not in groups:
            groups[f.section] = parser.add_argument_group(f"{f.section} parameters")
        default = "null" if f.default is None else f.default
        default = COMMAND_DEFAULTS.get(command, {}).get(f.name, default)
        text = f"{f.help} [JSON: {f.name}; default {default}]".replace("%", "%%")
        common = dict(dest=DEST + f.name, default=argparse.SUPPRESS, help=text)
        if f.kind == "bool":
            groups[f.section].add_argument(
                f.spelling, action=argparse.BooleanOptionalAction, **common
            )
            continue
        nargs = SPECIAL.get(f.name, (None, None))[0]
        metavar = f.usage.split(" ")[1]
        if nargs == "+":  # -size N [N], -weight MODE [R]
            metavar = "MODE" if "|" in metavar else metavar
        groups[f.section].add_argument(f.spelling, nargs=nargs, metavar=metavar, **common)


def _given(args: argparse.Namespace) -> dict[str, tuple[Field, list, str]]:
    """The parameter flags of ``args``: field name -> (field, typed words, label as typed)."""
    by_name = {f.name: f for f in SCHEMA}
    given = {}
    for key, value in vars(args).items():
        if key.startswith(DEST):
            f = by_name[key.removeprefix(DEST)]
            words = value if isinstance(value, list) else [value]
            label = f.spelling if f.kind == "bool" else " ".join([f.spelling, *map(str, words)])
            given[f.name] = (f, words, label)
    return given


def flag_fields(args: argparse.Namespace) -> list[str]:
    """The parameters set by flags in ``args``."""
    return list(_given(args))


@contextlib.contextmanager
def named_as_typed(args: argparse.Namespace):
    """A :class:`ParameterError` raised inside (e.g. a layout or sky model file found unreadable
    when it is opened) names the flag the user typed for each field set by a flag."""
    try:
        yield
    except ParameterError as err:
        given = _given(args)
        problems = [(f, given[f][2] if f in given else lab, m) for f, lab, m in err.problems]
        raise ParameterError.of(problems, err.where) from None


def parameters_from(args: argparse.Namespace, file: Path | None) -> Parameters:
    """The parameters of ``file`` (defaults without one) with the flags given in ``args``.

    Raises one :class:`ParameterError` listing every problem of the file and of the flags,
    each named as the user wrote it.
    """
    raw = read_parameter_file(file) if file is not None else {}
    where = f" ({file.name})" if file is not None else ""
    labels = {name: f"parameter '{name}'{where}" for name in raw}
    problems: list[tuple[str, str, str]] = []
    for name, (f, words, label) in _given(args).items():
        try:
            if f.kind == "bool":
                values = {name: words[0]}
            elif name in SPECIAL:
                values = SPECIAL[name][1](words)
            else:
                values = {name: _plain(f, words[0])}
        except ValueError as err:
            problems.append((name, label, str(err)))
            continue
        for key, converted in values.items():
            raw[key], labels[key] = converted, label
    try:
        params = parse_parameters(raw, labels=labels)
    except ParameterError as err:
        problems += err.problems
    if problems:
        raise ParameterError.of(problems)
    return params


def describe_parameters() -> str:
    """Markdown table of all parameters: JSON name, flag, commands, default, allowed values and
    meaning (``sdpbatch params``, docs/parameters.md)."""
    rows = [
        "| parameter | flag | commands | default | allowed | meaning |",
        "|---|---|---|---|---|---|",
    ]
    for f in SCHEMA:
        commands = ", ".join(SECTION_COMMANDS[f.section])
        default = f"`{json.dumps(f.default)}`" + "".join(
            f" ({command}: {chosen[f.name]})"
            for command, chosen in COMMAND_DEFAULTS.items()
            if f.name in chosen
        )
        rows.append(
            f"| `{f.name}` | `{f.usage}` | {commands} | {default} "
            f"| {f.allowed or f.kind} | {f.help} |"
        )
    return "\n".join(rows)
