"""Where the code of each workflow lives.

The control layer's catalogue (:data:`~sdpbatch.control.workflow_catalogue.KNOWN_WORKFLOWS`)
is the one list of known workflows, with what each asks of the machine; this module only adds,
for each of its entries, the function that runs it (imported when the workflow runs).
"""

from __future__ import annotations

import functools
import importlib
from collections.abc import Callable

from sdpbatch.control.resources import ResourceRequest
from sdpbatch.control.workflow_catalogue import KNOWN_WORKFLOWS, WorkflowSpec, resource_request

TARGETS: dict[str, str] = {
    "batch:batch_imaging:0.1.0": "sdpbatch.workflows.batch_imaging:batch_imaging",
    "realtime:test_realtime:0.2.0": "sdpbatch.workflows.test_realtime:test_realtime",
    "batch:test_dask:0.1.0": "sdpbatch.workflows.test_dask:test_dask",
}
"""``"module:function"`` of each workflow of the catalogue, by ``type:id:version``."""


def workflow_function(spec: WorkflowSpec) -> Callable:
    """The function that runs the catalogue's workflow ``spec``."""
    module, name = TARGETS[spec.key].split(":")
    return getattr(importlib.import_module(module), name)


def catalog() -> dict[str, Callable[[dict], ResourceRequest]]:
    """What the processing controller needs: key -> resource request of the parameters."""
    return {spec.key: functools.partial(resource_request, spec) for spec in KNOWN_WORKFLOWS}
