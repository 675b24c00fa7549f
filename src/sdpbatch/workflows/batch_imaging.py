"""``batch:batch_imaging:0.1.0``: simulate SKA1-Low visibilities, then ICAL, on a Dask engine.

The steps and log lines of the SDP prototype's workflow, in order; the products go to the
two buffers (MeasurementSets to ``buffer_vis``, FITS images to ``buffer_img``).
"""

from __future__ import annotations

import logging

from sdpbatch.parameters import parse_parameters
from sdpbatch.workflows.runtime import ProcessingBlock

LOG = logging.getLogger("batch_imaging")


def block_parameters(pb_id: str, raw: dict):
    """The block's validated parameters, buffers defaulting to ``buff-<pb_id>-vis/img``."""
    raw = dict(raw)
    raw.setdefault("buffer_vis", f"buff-{pb_id}-vis")
    raw.setdefault("buffer_img", f"buff-{pb_id}-img")
    return parse_parameters(raw)


def batch_imaging(block: ProcessingBlock) -> None:
    from distributed import Client

    from sdpbatch.execution.pipeline import batch_imaging_pipeline
    from sdpbatch.execution.runner import OnDask

    params = block_parameters(block.pb_id, block.pb.get("parameters", {}))
    block.wait_for_resources()

    LOG.info("Creating buffer reservations")
    paths = block.create_buffers([params.buffer_vis, params.buffer_img])

    LOG.info("Deploying Dask EE")
    address = block.deploy_dask(params.n_workers, params.threads_per_worker)
    with Client(address, timeout="60s") as client:
        client.wait_for_workers(params.n_workers, timeout=120)
        batch_imaging_pipeline(
            params, paths[params.buffer_vis], paths[params.buffer_img], runner=OnDask(client)
        )
    LOG.info("Finished processing")

    LOG.info("Removing Dask EE deployment")
    block.remove_deployment(block.dask_id)
