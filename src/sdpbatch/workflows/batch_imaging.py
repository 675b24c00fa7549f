"""``batch:batch_imaging:0.1.0``: simulate SKA1-Low visibilities, then ICAL, on a Dask engine.

The steps and log lines of the SDP prototype's workflow, in order; the products go to the
two buffers (MeasurementSets to ``buffer_vis``, FITS images to ``buffer_img``).  Before any
work the block is checked again (:func:`~sdpbatch.control.admission.admit_block`: the same
check as at the door, which also resolves its file parameters inside the allowed
directories) and the space the run needs is compared with what the buffers' disk has free.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from sdpbatch.control.admission import admit_block
from sdpbatch.control.deployer import DATA_ROOT_ENV
from sdpbatch.control.system.data_root import default_data_dir
from sdpbatch.io.space import check_space, writing_into
from sdpbatch.parameters import Parameters
from sdpbatch.workflows.runtime import ProcessingBlock
from sdpbatch.workflows.space import run_space

LOG = logging.getLogger("batch_imaging")


def block_parameters(block: ProcessingBlock) -> Parameters:
    """The block's checked parameters (buffers default to ``buff-<pb_id>-vis/img``)."""
    data_root = Path(os.environ.get(DATA_ROOT_ENV) or default_data_dir())
    admission = admit_block(
        block.pb_id, block.pb["workflow"], block.pb.get("parameters", {}), data_root=data_root
    )
    return admission.parameters


def batch_imaging(block: ProcessingBlock) -> None:
    from distributed import Client

    from sdpbatch.execution.pipeline import batch_imaging_pipeline
    from sdpbatch.execution.runner import OnDask

    params = block_parameters(block)
    resume = bool(block.state().get("resume"))
    if resume:
        LOG.info("Resuming from the checkpoint beside %s", params.buffer_img)
    block.wait_for_resources()

    LOG.info("Creating buffer reservations")
    paths = block.create_buffers([params.buffer_vis, params.buffer_img])
    vis, img = paths[params.buffer_vis], paths[params.buffer_img]
    needs = run_space(params, vis, img)
    check_space(needs)

    LOG.info("Deploying Dask EE")
    address = block.deploy_dask(params.n_workers, params.threads_per_worker)
    with (
        Client(address, timeout="60s") as client,
        writing_into([vis, img], needed=sum(n for _, n in needs)),
    ):
        client.wait_for_workers(params.n_workers, timeout=120)
        batch_imaging_pipeline(params, vis, img, runner=OnDask(client), resume=resume)
    LOG.info("Finished processing")

    LOG.info("Removing Dask EE deployment")
    block.remove_deployment(block.dask_id)
