"""``batch:test_dask:0.1.0``: exercises the whole runtime on a Dask engine with a tiny job.

Parameters: ``n_workers``, ``threads_per_worker`` (as batch_imaging), ``fail`` (a message:
raise it after the engine is up, to test failure handling), ``hold`` (seconds a task keeps the
engine busy before the job, to test stopping a running block), ``buffer`` (a buffer name to
write the result to, default ``buff-<pb_id>-out``).
"""

from __future__ import annotations

import json
import logging
import time

from sdpbatch.control.workflow_catalogue import engine_size
from sdpbatch.vocabulary import default_buffer_name
from sdpbatch.workflows.runtime import ProcessingBlock

LOG = logging.getLogger("test_dask")


def _square(x: int) -> int:
    return x * x


def test_dask(block: ProcessingBlock) -> None:
    from distributed import Client

    params = block.pb.get("parameters", {})
    n_workers, threads = engine_size({"n_workers": 1, **params})
    buffer = params.get("buffer", default_buffer_name(block.pb_id, "out"))
    block.wait_for_resources()
    LOG.info("Creating buffer reservations")
    out_dir = block.create_buffers([buffer])[buffer]
    LOG.info("Deploying Dask EE")
    address = block.deploy_dask(n_workers, threads)
    with Client(address, timeout="60s") as client:
        client.wait_for_workers(n_workers, timeout=120)
        if params.get("fail"):
            raise RuntimeError(str(params["fail"]))
        if params.get("hold"):
            LOG.info("Holding the engine for %s s", params["hold"])
            client.submit(time.sleep, float(params["hold"]), pure=False).result()
        total = sum(client.gather(client.map(_square, range(100))))
        workers = sorted(client.scheduler_info()["workers"])
    (out_dir / "result.json").write_text(json.dumps({"sum_of_squares": total, "workers": workers}))
    LOG.info("Finished processing: sum of squares %d on %d workers", total, len(workers))
    LOG.info("Removing Dask EE deployment")
    block.remove_deployment(block.dask_id)
