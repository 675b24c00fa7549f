"""The registered workflows: the control catalogue's ``type:id:version`` -> function and
resource request (the catalogue is the one list of known workflows)."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass

from sdpbatch.control.resources import ResourceRequest, worker_request
from sdpbatch.control.workflow_catalogue import KNOWN_WORKFLOWS
from sdpbatch.parameters import FIELDS


@dataclass(frozen=True)
class WorkflowSpec:
    """A workflow: where its function lives and what it asks of the machine."""

    type: str
    id: str
    version: str
    target: str  # "module:function", imported only when the workflow runs
    resources: Callable[[dict], ResourceRequest]

    @property
    def key(self) -> str:
        return f"{self.type}:{self.id}:{self.version}"

    def function(self) -> Callable:
        module, name = self.target.split(":")
        return getattr(importlib.import_module(module), name)


def _int_param(params: dict, name: str, default: int) -> int:
    value = params.get(name, default)
    return (
        value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else default
    )


def dask_request(params: dict) -> ResourceRequest:
    """Workers x threads of the block's Dask engine (schema defaults when absent/invalid)."""
    return worker_request(
        _int_param(params, "n_workers", FIELDS["n_workers"].default),
        _int_param(params, "threads_per_worker", FIELDS["threads_per_worker"].default),
    )


def no_request(params: dict) -> ResourceRequest:
    return ResourceRequest()


_CODE: dict[str, tuple[str, Callable[[dict], ResourceRequest]]] = {
    "batch:batch_imaging:0.1.0": ("sdpbatch.workflows.batch_imaging:batch_imaging", dask_request),
    "realtime:test_realtime:0.2.0": ("sdpbatch.workflows.test_realtime:test_realtime", no_request),
    "batch:test_dask:0.1.0": ("sdpbatch.workflows.test_dask:test_dask", dask_request),
}
"""Where each workflow of the control layer's catalogue lives, and what it asks of the machine."""

WORKFLOWS: dict[str, WorkflowSpec] = {
    known.key: WorkflowSpec(known.type, known.id, known.version, *_CODE[known.key])
    for known in KNOWN_WORKFLOWS
}


def lookup(workflow: dict) -> WorkflowSpec | None:
    """The spec of a block's ``{type, id, version}``, or None if not registered."""
    return WORKFLOWS.get(f"{workflow.get('type')}:{workflow.get('id')}:{workflow.get('version')}")


def catalog() -> dict[str, Callable[[dict], ResourceRequest]]:
    """What the processing controller needs: key -> resource request of the parameters."""
    return {key: spec.resources for key, spec in WORKFLOWS.items()}
