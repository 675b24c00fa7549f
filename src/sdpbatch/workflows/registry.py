"""The registered workflows: the control catalogue's ``type:id:version`` -> function and
resource request (the catalogue is the one list of known workflows)."""

from __future__ import annotations

import functools
import importlib
from collections.abc import Callable
from dataclasses import dataclass

from sdpbatch.control.resources import ResourceRequest
from sdpbatch.control.workflow_catalogue import KNOWN_WORKFLOWS, resource_request


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


_CODE: dict[str, str] = {
    "batch:batch_imaging:0.1.0": "sdpbatch.workflows.batch_imaging:batch_imaging",
    "realtime:test_realtime:0.2.0": "sdpbatch.workflows.test_realtime:test_realtime",
    "batch:test_dask:0.1.0": "sdpbatch.workflows.test_dask:test_dask",
}
"""Where each workflow of the control layer's catalogue lives."""

WORKFLOWS: dict[str, WorkflowSpec] = {
    known.key: WorkflowSpec(
        known.type,
        known.id,
        known.version,
        _CODE[known.key],
        functools.partial(resource_request, known),
    )
    for known in KNOWN_WORKFLOWS
}


def lookup(workflow: dict) -> WorkflowSpec | None:
    """The spec of a block's ``{type, id, version}``, or None if not registered."""
    return WORKFLOWS.get(f"{workflow.get('type')}:{workflow.get('id')}:{workflow.get('version')}")


def catalog() -> dict[str, Callable[[dict], ResourceRequest]]:
    """What the processing controller needs: key -> resource request of the parameters."""
    return {key: spec.resources for key, spec in WORKFLOWS.items()}
