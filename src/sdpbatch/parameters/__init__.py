"""The one validated parameter model of the batch imaging workflow.

Every entry point (CLI, processing block parameters, tests) builds a :class:`Parameters`
through :func:`parse_parameters` or :func:`load_parameters`, or directly (``Parameters(...)``
validates too).  :data:`SCHEMA` is the single source of types, defaults, allowed values,
help text and the command-line flag of each parameter; the seed's example parameters are the
defaults.  Bad input raises one :class:`ParameterError` listing every problem, each named as
the user wrote it (the JSON key, or the flag).

The package, one concern a module: :mod:`.schema` (the fields), :mod:`.validation` (checks and
the :class:`Parameters` model), :mod:`.files` (parameter JSON files).
"""

from sdpbatch.parameters.files import load_parameters, read_parameter_file, resolve_paths
from sdpbatch.parameters.schema import (
    CATALOGUE,
    DEFAULT_LAYOUT,
    FIELDS,
    GLEAM_LIKE,
    NO_MODEL,
    PATH_FIELDS,
    PB_LIMIT,
    RESULT_NEUTRAL,
    SCHEMA,
    Field,
    is_file_prefix,
)
from sdpbatch.parameters.validation import ParameterError, Parameters, parse_parameters

__all__ = [
    "CATALOGUE",
    "DEFAULT_LAYOUT",
    "FIELDS",
    "GLEAM_LIKE",
    "NO_MODEL",
    "PATH_FIELDS",
    "PB_LIMIT",
    "RESULT_NEUTRAL",
    "SCHEMA",
    "Field",
    "ParameterError",
    "Parameters",
    "is_file_prefix",
    "load_parameters",
    "parse_parameters",
    "read_parameter_file",
    "resolve_paths",
]
