"""Taking up a FAILED processing block from its checkpoint (``sdpbatch resume PB_ID``).

A batch block whose run stopped (its workflow or a node killed, ``sdpbatch down``, an outage
longer than its lease) ends FAILED; the checkpoint its ICAL keeps beside the image buffer
(:mod:`sdpbatch.io.checkpoint`) survives it.  :func:`request_resume` checks the block may go
on and marks its state ``resume_requested``; the controller then deploys its workflow again
(``STARTING`` with ``resume`` and the count ``resumed``) on whatever engine is up, and the
workflow goes on from the last complete major cycle.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from sdpbatch.control.configdb import Config
from sdpbatch.io.checkpoint import CheckpointError, checkpoint_dir, read_checkpoint
from sdpbatch.vocabulary import (
    DEPLOY,
    NEW,
    BlockStatus,
    block_deployment_prefix,
    default_buffer_name,
    deployment_key,
)


class ResumeRefused(ValueError):
    """The block cannot go on from a checkpoint; the message says why."""


@dataclass(frozen=True)
class ResumeRequest:
    """What :func:`request_resume` found: the checkpoint and the cycles it holds."""

    pb_id: str
    checkpoint: Path
    cycles_done: int


def _checkpoint_of(txn, pb_id: str, pb: dict, data_root: Path) -> tuple[Path, int]:
    """The block's checkpoint folder and the last complete major cycle in it."""
    name = pb.get("parameters", {}).get("buffer_img") or default_buffer_name(pb_id, "img")
    record = txn.get_buffer(name)
    folder = checkpoint_dir(Path(record["path"]) if record else data_root / name)
    try:
        found = read_checkpoint(folder)
    except CheckpointError as err:
        raise ResumeRefused(f"{pb_id}: {err}") from None
    if found is None:
        raise ResumeRefused(
            f"{pb_id}: no checkpoint at {folder} (its run stopped before a major cycle ended, "
            "or it is not a batch imaging block): nothing to go on from; submit it again"
        )
    return folder, int(found.meta["next_cycle"]) - 1


def deployments_left(txn, pb_id: str) -> list[str]:
    """The keys of the block's process deployments the deployer has not finished removing
    (an entry, or the state it keeps until its processes are gone)."""
    prefix = deployment_key(block_deployment_prefix(pb_id))
    return [key for key in txn.list_keys(DEPLOY, recurse=True) if key.startswith(prefix)]


def request_resume(config: Config, pb_id: str, *, data_root: Path) -> ResumeRequest:
    """Mark FAILED block ``pb_id`` for the controller to run again from its checkpoint."""
    for txn in config.txn():
        pb = txn.get_pb(pb_id)
        if pb is None:
            raise ResumeRefused(f"no processing block {pb_id}")
        state = txn.get_pb_state(pb_id) or {}
        status = state.get("status", NEW)
        if status != BlockStatus.FAILED:
            raise ResumeRefused(
                f"{pb_id} is {status}: only a FAILED block goes on from its checkpoint"
            )
        left = deployments_left(txn, pb_id)
        if left:
            raise ResumeRefused(
                f"{pb_id}: its processes are still being removed ({', '.join(left)}); "
                "try again in a moment"
            )
        folder, cycles = _checkpoint_of(txn, pb_id, pb, data_root)
        txn.update_pb_state(pb_id, {**state, "resume_requested": True})
    return ResumeRequest(pb_id=pb_id, checkpoint=folder, cycles_done=cycles)
