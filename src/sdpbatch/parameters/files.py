"""Parameter files: JSON objects of parameters, relative file paths taken from their folder."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from sdpbatch.parameters.schema import PATH_FIELDS
from sdpbatch.parameters.validation import ParameterError, Parameters, parse_parameters


def resolve_paths(raw: Mapping[str, Any], base: Path) -> dict[str, Any]:
    """``raw`` with relative file paths of :data:`PATH_FIELDS` made absolute from ``base``."""
    out = dict(raw)
    for key, special in PATH_FIELDS.items():
        value = out.get(key)
        if isinstance(value, str) and value.strip() and value not in special:
            out[key] = str((base / value).resolve())
    return out


def read_parameter_file(path: str | Path) -> dict[str, Any]:
    """The raw parameters of a JSON file, relative paths resolved from its folder."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as err:
        raise ParameterError("<file>", f"cannot read {path}: {err.strerror}") from err
    except UnicodeDecodeError as err:
        raise ParameterError("<file>", f"{path} is not a text file: {err.reason}") from err
    try:
        raw = json.loads(text)
    except json.JSONDecodeError as err:
        raise ParameterError(
            "<file>", f"{path} is not valid JSON: {err.msg} at line {err.lineno} column {err.colno}"
        ) from err
    if not isinstance(raw, dict):
        raise ParameterError("<file>", f"{path}: expected a JSON object of parameters")
    return resolve_paths(raw, path.parent)


def load_parameters(path: str | Path) -> Parameters:
    """Read and validate a parameter JSON file; every problem is reported at once.

    Relative ``layout``, ``sky_model`` and ``calibration_model`` file paths are taken relative
    to the file's folder.
    """
    raw = read_parameter_file(path)
    try:
        return parse_parameters(raw)
    except ParameterError as err:
        raise ParameterError.of(err.problems, where=str(path)) from None
