"""``realtime:test_realtime:0.2.0``: placeholder real-time workflow.

Claims its block, waits to be released (at once: it needs no resources), runs until its
scheduling block instance ends and ends the block with the SBI's status.
"""

from __future__ import annotations

import logging

from sdpbatch.vocabulary import ENDED, SBI_ENDED
from sdpbatch.workflows.runtime import BlockEnded, ProcessingBlock, WorkflowError

LOG = logging.getLogger("test_realtime")


def test_realtime(block: ProcessingBlock) -> None:
    sbi_id = block.pb.get("sbi_id")
    if not sbi_id:
        raise WorkflowError("test_realtime needs a processing block of a scheduling block")
    block.wait_for_resources()
    LOG.info("Waiting for scheduling block instance %s to end", sbi_id)
    for txn in block.config.txn():
        sbi = txn.get_sbi(sbi_id)
        state = txn.get_pb_state(block.pb_id) or {}
        if state.get("status") in ENDED:
            raise BlockEnded(f"processing block {block.pb_id} is {state['status']}")
        if sbi is None:
            raise WorkflowError(f"scheduling block instance {sbi_id} does not exist")
        if sbi.get("status") not in SBI_ENDED:
            txn.loop(wait=True)
    LOG.info("Scheduling block instance %s is %s", sbi_id, sbi["status"])
    block.finish(sbi["status"])
