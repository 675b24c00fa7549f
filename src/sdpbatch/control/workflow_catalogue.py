"""The workflows this system knows, by ``type:id:version``.

The control layer may not import ``sdpbatch.workflows`` (it sits above control), yet the
subarray device and the processing controller must refuse unknown workflows.  This small
catalogue is the one list of known workflows and what each asks of the machine; the workflow
registry (:mod:`sdpbatch.workflows.registry`) only adds where each one's code lives.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

from sdpbatch.control.resources import ResourceRequest, worker_request
from sdpbatch.parameters import FIELDS


@dataclass(frozen=True)
class WorkflowSpec:
    """A known workflow: ``kind`` is "realtime" or "batch"; ``batch_parameters`` says its
    parameters are the batch imaging :class:`~sdpbatch.parameters.Parameters`;
    ``dask_engine`` that it deploys a Dask engine of ``n_workers`` x ``threads_per_worker``."""

    type: str
    id: str
    version: str
    description: str
    batch_parameters: bool = False
    dask_engine: bool = False

    @property
    def key(self) -> str:
        return workflow_key(asdict(self))


KNOWN_WORKFLOWS: tuple[WorkflowSpec, ...] = (
    WorkflowSpec(
        "batch",
        "batch_imaging",
        "0.1.0",
        "simulate SKA1-Low visibilities with phase errors, then ICAL, on a Dask engine",
        batch_parameters=True,
        dask_engine=True,
    ),
    WorkflowSpec(
        "realtime",
        "test_realtime",
        "0.2.0",
        "placeholder real-time workflow: runs until its scheduling block instance ends",
    ),
    WorkflowSpec(
        "batch",
        "test_dask",
        "0.1.0",
        "tiny job exercising the workflow runtime and a Dask engine (tests)",
        dask_engine=True,
    ),
)


def workflow_key(workflow: Mapping[str, Any]) -> str:
    """``type:id:version`` of a block's ``workflow`` (``{"type": ..., "id": ..., "version":
    ...}``): the name a workflow is registered under."""
    return f"{workflow.get('type')}:{workflow.get('id')}:{workflow.get('version')}"


def known_workflow_keys() -> list[str]:
    """All registered ``type:id:version`` keys, in catalogue order."""
    return [w.key for w in KNOWN_WORKFLOWS]


def find_workflow(workflow: Mapping[str, Any]) -> WorkflowSpec | None:
    """The catalogue entry of a block's ``workflow`` ``{type, id, version}``, or None if it is
    not known."""
    key = workflow_key(workflow)
    return next((w for w in KNOWN_WORKFLOWS if w.key == key), None)


def engine_size(parameters: dict) -> tuple[int, int]:
    """(n_workers, threads_per_worker) of a block's Dask engine; the schema's defaults where
    a value is absent or not a positive integer (bad values are refused by validation)."""

    def positive(name: str) -> int:
        value = parameters.get(name, FIELDS[name].default)
        ok = isinstance(value, int) and not isinstance(value, bool) and value > 0
        return value if ok else FIELDS[name].default

    return positive("n_workers"), positive("threads_per_worker")


def resource_request(spec: WorkflowSpec, parameters: dict) -> ResourceRequest:
    """What a block of workflow ``spec`` asks of the machine while it runs."""
    if not spec.dask_engine:
        return ResourceRequest()
    n_workers, threads = engine_size(parameters)
    return worker_request(n_workers, threads)
