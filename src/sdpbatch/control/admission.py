"""The one check of a processing block before it may run: workflow, parameters, paths, size.

:func:`admit_block` is called wherever a block comes in or starts: ``sdpbatch process`` (the
command line), the subarray's AssignResources (for every block of the SBI) and the workflow
process itself (which uses the checked parameters it returns).  It refuses, naming the field:

- a workflow that is not in the catalogue;
- batch imaging parameters the parameter model refuses (buffers default to
  ``buff-<pb_id>-vis`` / ``-img``) and buffer names that are one of the data root's own
  directories;
- file parameters (``sky_model``, ``layout``, ``calibration_model``) that lie outside the data
  root and the allowed directories (``$SDPBATCH_ALLOWED_DIRS``, separated by ``:``): a block
  comes from someone else, so it may only read files the operator put where blocks may read
  (relative paths are taken from the data root; symbolic links are followed first);
- a Dask engine larger than this machine's resource model can ever hold (as the processing
  controller would refuse it later).

Every problem is reported at once (the parameter model's own errors first).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, replace
from pathlib import Path

from sdpbatch.control.buffers import BufferError, check_buffer_name
from sdpbatch.control.resources import Capacity, ResourceRequest, machine_capacity, never_fits
from sdpbatch.control.workflow_catalogue import (
    WorkflowSpec,
    find_workflow,
    known_workflow_keys,
    resource_request,
    workflow_key,
)
from sdpbatch.parameters import PATH_FIELDS, ParameterError, Parameters, parse_parameters
from sdpbatch.vocabulary import default_buffer_name

ALLOWED_DIRS_ENV = "SDPBATCH_ALLOWED_DIRS"


class BlockRefused(ValueError):
    """A processing block cannot be accepted; ``field`` names the first offending field
    (``workflow``, a parameter name) and the text lists every problem."""

    def __init__(self, field: str, message: str):
        self.field = field
        super().__init__(message)


@dataclass(frozen=True)
class Admission:
    """What an accepted block is: its workflow, its checked batch parameters (None for
    workflows that take none) and what it asks of the machine."""

    spec: WorkflowSpec
    parameters: Parameters | None
    request: ResourceRequest


def allowed_directories(data_root: Path, extra: list[Path] | None = None) -> list[Path]:
    """The data root and the configured allowed directories, resolved."""
    if extra is None:
        raw = os.environ.get(ALLOWED_DIRS_ENV, "")
        extra = [Path(p) for p in raw.split(os.pathsep) if p.strip()]
    return [Path(data_root).resolve(), *(Path(p).resolve() for p in extra)]


def confine_path(name: str, value: str, *, data_root: Path, allowed: list[Path]) -> str:
    """``value`` as an absolute path if it lies under one of ``allowed``, else
    :class:`ParameterError` naming the field."""
    path = Path(value)
    resolved = (path if path.is_absolute() else Path(data_root) / path).resolve()
    if not any(resolved.is_relative_to(root) for root in allowed):
        roots = ", ".join(str(r) for r in allowed)
        raise ParameterError(
            name,
            f"{value!r} is outside the directories blocks may read ({roots}); put the file "
            f"there or add its directory to ${ALLOWED_DIRS_ENV}",
        )
    return str(resolved)


def _check_batch(pb_id: str, raw: dict, data_root: Path, allowed: list[Path]) -> Parameters:
    raw = dict(raw)
    raw.setdefault("buffer_vis", default_buffer_name(pb_id, "vis"))
    raw.setdefault("buffer_img", default_buffer_name(pb_id, "img"))
    params = parse_parameters(raw)
    problems: list[ParameterError | BufferError] = []
    resolved = {}
    for name, special in PATH_FIELDS.items():
        value = getattr(params, name)
        if value in special:
            continue
        try:
            resolved[name] = confine_path(name, value, data_root=data_root, allowed=allowed)
        except ParameterError as err:
            problems.append(err)
    for name in ("buffer_vis", "buffer_img"):
        try:
            check_buffer_name(getattr(params, name))
        except BufferError as err:
            problems.append(ParameterError(name, str(err)))
    if problems:
        raise BlockRefused(problems[0].field, "; ".join(str(p) for p in problems))
    return replace(params, **resolved)


def _check_plain(raw: dict) -> None:
    """Workflows without the batch parameter model: the engine size and a buffer name."""
    for name in ("n_workers", "threads_per_worker"):
        if name in raw:
            value = raw[name]
            if not (isinstance(value, int) and not isinstance(value, bool) and 1 <= value <= 256):
                raise BlockRefused(name, f"parameter '{name}': {value!r} is not 1 to 256")
    if "buffer" in raw:
        try:
            check_buffer_name(raw["buffer"])
        except BufferError as err:
            raise BlockRefused("buffer", f"parameter 'buffer': {err}") from None


def admit_block(
    pb_id: str,
    workflow: dict,
    parameters: dict,
    *,
    data_root: Path,
    allowed_dirs: list[Path] | None = None,
    capacity: Capacity | None = None,
) -> Admission:
    """Check block ``pb_id`` of ``workflow`` ``{type, id, version}`` with ``parameters``.

    ``data_root``: where buffers live and relative file parameters are taken from;
    ``allowed_dirs``: other directories blocks may read (default ``$SDPBATCH_ALLOWED_DIRS``);
    ``capacity``: the machine's resource model (default: this machine's).
    Raises :class:`BlockRefused`; returns the :class:`Admission`.
    """
    spec = find_workflow(workflow)
    if spec is None:
        raise BlockRefused(
            "workflow",
            f"unknown workflow {workflow_key(workflow)}; known workflows: "
            f"{', '.join(known_workflow_keys())}",
        )
    if not isinstance(parameters, dict):
        raise BlockRefused("parameters", "parameters must be a JSON object")
    checked = None
    try:
        if spec.batch_parameters:
            allowed = allowed_directories(data_root, allowed_dirs)
            checked = _check_batch(pb_id, parameters, data_root, allowed)
        else:
            _check_plain(parameters)
    except ParameterError as err:
        raise BlockRefused(err.field, str(err)) from None
    request = resource_request(spec, parameters)
    reason = never_fits(request, capacity or machine_capacity())
    if reason:
        raise BlockRefused(
            "n_workers",
            f"parameter 'n_workers' x 'threads_per_worker': cannot run on this machine: it "
            f"{reason}",
        )
    return Admission(spec=spec, parameters=checked, request=request)
