"""The processing controller: small reconcile steps in a watch loop, each its own transaction.

For every processing block:

1. new block, or a FAILED one asked to resume (``sdpbatch resume``, :mod:`.resume`) -> its
   workflow deployment ``proc-<pb_id>-workflow`` and state ``STARTING`` (``FAILED`` with a
   reason if the workflow is not registered or can never fit the engine);
2. a dependency ``FAILED`` or ``CANCELLED`` -> ``CANCELLED`` with the reason;
3. ``WAITING``, every dependency ``FINISHED`` and its resources free -> hold the resources
   (``/resources/<pb_id>``) and set ``resources_available``;
4. ``WAITING``/``RUNNING`` without an owner (its lease expired) -> ``FAILED`` "owner lost"
   once its workflow process exited or did not take the block again within one lease TTL;
   ``STARTING`` whose workflow process exited without claiming -> ``FAILED``;
5. ended -> remove its ``proc-<pb_id>-*`` deployments and give its resources back.

The capacity is that of the engine recorded by ``sdpbatch up --engine`` (this machine's for
``local``; a SLURM partition's; an existing Dask cluster's), asked again every few seconds;
while a remote engine has never answered, new blocks wait.

The workflows are given as a catalog (``"type:id:version"`` -> function of the block's
parameters giving its :class:`ResourceRequest`), so this layer does not import them.
"""

from __future__ import annotations

import logging
import os
import socket
import sys
import threading
import time
from collections.abc import Callable, Mapping

import psutil

from sdpbatch.control.configdb import Config, Watcher
from sdpbatch.control.engines import EngineCapacity
from sdpbatch.control.resources import (
    Capacity,
    ResourceRequest,
    fits_now,
    machine_capacity,
    never_fits,
)
from sdpbatch.control.resume import deployments_left
from sdpbatch.control.workflow_catalogue import workflow_key
from sdpbatch.vocabulary import (
    ACTIVE_OWNED,
    DEPLOY,
    DEPLOYMENT_ENDED,
    ENDED,
    RESOURCES,
    UNSUCCESSFUL,
    BlockStatus,
    DeploymentType,
    block_deployment_prefix,
    workflow_deployment_id,
)

LOG = logging.getLogger(__name__)

WORKFLOW_MODULE = "sdpbatch.workflows.run"

Catalog = Mapping[str, Callable[[dict], ResourceRequest]]


def component_info(name: str) -> dict:
    """What a running component registers under ``/component/<name>-<pid>`` (each instance
    its own key: two controllers never fight over one)."""
    return {
        "id": f"{name}-{os.getpid()}",
        "name": name,
        "pid": os.getpid(),
        "hostname": socket.gethostname(),
        "command": sys.argv,
        "started": psutil.Process().create_time(),  # with the pid: this very process
    }


def _resume_requested(state: dict) -> bool:
    """A FAILED block that ``sdpbatch resume`` asked to go on (:mod:`.resume`)."""
    return state.get("status") == BlockStatus.FAILED and bool(state.get("resume_requested"))


class Controller:
    """Reconciles processing blocks, deployments and resources."""

    def __init__(
        self,
        config: Config,
        catalog: Catalog,
        *,
        capacity: Capacity | None = None,
        workflow_module: str = WORKFLOW_MODULE,
    ):
        self.config = config
        self.catalog = catalog
        self.capacity: Capacity | None = capacity or machine_capacity()
        self.engine_capacity = EngineCapacity(config, local=self.capacity)
        self.workflow_module = workflow_module
        self.info = component_info("controller")
        self._owner_missing: dict[str, float] = {}  # pb_id -> when its owner key was first missed

    def run(self, stop: threading.Event | None = None, *, timeout: float | None = 30.0) -> None:
        """Reconcile until ``stop`` is set; each pass starts when something it read changed."""
        stop = stop or threading.Event()
        capacity = self.engine_capacity.get()
        LOG.info(
            "Processing controller started: %s",
            "the engine does not answer yet"
            if capacity is None
            else f"{capacity.where}, {capacity.threads} worker threads, "
            f"{capacity.memory_bytes / 2**30:.1f} GiB",
        )
        for watcher in self.config.watcher(timeout=timeout):
            if stop.is_set():
                break
            self.reconcile(watcher)
        LOG.info("Processing controller stopped")

    def reconcile(self, watcher: Watcher | None = None) -> None:
        """One pass over all blocks."""
        txns = watcher.txn if watcher is not None else self.config.txn
        self.capacity = self.engine_capacity.get()  # None: the engine has not answered yet
        for txn in txns():
            if txn.get_component(self.info["id"]) != self.info:  # first pass, or new lease
                txn.register_component(self.info["id"], self.info)
            pb_ids = txn.list_pbs()
            txn.list_keys(RESOURCES)  # wake when resources are given back
            txn.list_keys(DEPLOY, recurse=True)  # and when a workflow process exits
        for pb_id in pb_ids:
            self.start_block(txns, pb_id)
            self.cancel_if_dependency_ended(txns, pb_id)
            self.fail_if_owner_lost(txns, pb_id, watcher)
            self.release_if_ready(txns, pb_id)
            self.clean_up_if_ended(txns, pb_id)
        self.drop_orphan_allocations(txns)

    # --- the steps ------------------------------------------------------------------------------

    def start_block(self, txns, pb_id: str) -> None:
        if self.capacity is None:
            return
        for txn in txns():
            pb, state = txn.get_pb(pb_id), txn.get_pb_state(pb_id)
            if pb is None or (state is not None and not _resume_requested(state)):
                return
            if state is not None and deployments_left(txn, pb_id):
                return  # its last run's processes are still being removed
            key = workflow_key(pb["workflow"])
            reason = None
            for dep in pb.get("dependencies", []):
                dep_state = txn.get_pb_state(dep["pb_id"])
                if dep_state is not None and dep_state["status"] in UNSUCCESSFUL:
                    reason = f"dependency {dep['pb_id']} is {dep_state['status']}"
                    txn.create_pb_state(
                        pb_id,
                        {
                            "status": BlockStatus.CANCELLED,
                            "reason": reason,
                            "resources_available": False,
                        },
                    )
                    break
            if reason:
                continue
            if key not in self.catalog:
                known = ", ".join(sorted(self.catalog))
                reason = f"workflow {key} is not registered; known workflows: {known}"
            else:
                reason = never_fits(self.catalog[key](pb.get("parameters", {})), self.capacity)
                reason = reason and f"cannot run: it {reason}"
            if reason:
                txn.create_pb_state(
                    pb_id,
                    {"status": BlockStatus.FAILED, "reason": reason, "resources_available": False},
                )
                continue
            txn.create_deployment(
                {
                    "id": workflow_deployment_id(pb_id),
                    "type": DeploymentType.PROCESS,
                    "args": {"module": self.workflow_module, "args": [pb_id]},
                }
            )
            starting = {"status": BlockStatus.STARTING, "resources_available": False}
            if state is None:
                txn.create_pb_state(pb_id, starting)
            else:  # taken up from its checkpoint: the workflow is told so
                resumed = state.get("resumed", 0) + 1
                txn.update_pb_state(pb_id, {**starting, "resume": True, "resumed": resumed})
        if reason:
            LOG.warning("Processing block %s not started: %s", pb_id, reason)
        else:
            again = " again, to resume from its checkpoint" if state is not None else ""
            LOG.info("Processing block %s: deploying workflow %s%s", pb_id, key, again)

    def cancel_if_dependency_ended(self, txns, pb_id: str) -> None:
        reason = None
        for txn in txns():
            pb, state = txn.get_pb(pb_id), txn.get_pb_state(pb_id)
            reason = None
            if pb is None or state is None or state["status"] in ENDED:
                return
            for dep in pb.get("dependencies", []):
                dep_state = txn.get_pb_state(dep["pb_id"])
                if dep_state is not None and dep_state["status"] in UNSUCCESSFUL:
                    reason = f"dependency {dep['pb_id']} is {dep_state['status']}"
                    txn.update_pb_state(
                        pb_id, {**state, "status": BlockStatus.CANCELLED, "reason": reason}
                    )
                    break
        if reason:
            LOG.info("Processing block %s CANCELLED: %s", pb_id, reason)

    def fail_if_owner_lost(self, txns, pb_id: str, watcher: Watcher | None = None) -> None:
        reason = None
        for txn in txns():
            state = txn.get_pb_state(pb_id)
            reason = None
            if state is None or state["status"] in ENDED:
                self._owner_missing.pop(pb_id, None)
                return
            owner = txn.get_pb_owner(pb_id)
            if owner is not None:
                self._owner_missing.pop(pb_id, None)
            elif state["status"] in ACTIVE_OWNED:
                reason = self._owner_gone_for_good(txn, pb_id, state["status"], watcher)
            elif state["status"] == BlockStatus.STARTING:
                dep_state = txn.get_deployment_state(workflow_deployment_id(pb_id)) or {}
                if dep_state.get("status") in DEPLOYMENT_ENDED:
                    detail = dep_state.get("error") or f"exit codes {dep_state.get('exit_codes')}"
                    log = dep_state.get("log")
                    reason = f"workflow process ended before claiming the block ({detail})" + (
                        f"; see {log}" if log else ""
                    )
            if reason:
                txn.update_pb_state(
                    pb_id, {**state, "status": BlockStatus.FAILED, "reason": reason}
                )
        if reason:
            LOG.warning("Processing block %s FAILED: %s", pb_id, reason)

    def _owner_gone_for_good(self, txn, pb_id: str, status: str, watcher) -> str | None:
        """Why a WAITING/RUNNING block without an owner key fails, or None while its workflow
        process may still take it again: one cut off from the database longer than its lease
        does so within half a lease TTL of reaching it, so it gets one lease TTL of grace
        unless the deployer saw it exit."""
        now = time.monotonic()
        missing = now - self._owner_missing.setdefault(pb_id, now)
        deployment = txn.get_deployment_state(workflow_deployment_id(pb_id)) or {}
        grace = self.config.lease_ttl
        if deployment.get("status") not in DEPLOYMENT_ENDED and missing < grace:
            if watcher is not None:
                watcher.wake_within(grace - missing)
            return None
        return (
            f"owner lost: the workflow process stopped while the block was {status} "
            "(its lease expired)"
        )

    def release_if_ready(self, txns, pb_id: str) -> None:
        released = False
        for txn in txns():
            pb, state = txn.get_pb(pb_id), txn.get_pb_state(pb_id)
            released = False
            if pb is None or state is None or state["status"] != BlockStatus.WAITING:
                return
            if state.get("resources_available") or self.capacity is None:
                return
            for dep in pb.get("dependencies", []):
                dep_state = txn.get_pb_state(dep["pb_id"])
                if dep_state is None or dep_state["status"] != BlockStatus.FINISHED:
                    return
            request_fn = self.catalog.get(workflow_key(pb["workflow"]))
            request = request_fn(pb.get("parameters", {})) if request_fn else ResourceRequest()
            held = [
                ResourceRequest.from_dict(a)
                for other, a in txn.list_allocations().items()
                if other != pb_id and a is not None
            ]
            if not fits_now(request, held, self.capacity):
                return
            if txn.get_allocation(pb_id) is None:
                txn.create_allocation(pb_id, {**request.to_dict(), "since": time.time()})
            txn.update_pb_state(pb_id, {**state, "resources_available": True})
            released = True
        if released:
            LOG.info("Processing block %s released (%s)", pb_id, request)

    def clean_up_if_ended(self, txns, pb_id: str) -> None:
        removed: list[str] = []
        for txn in txns():
            state = txn.get_pb_state(pb_id)
            removed = []
            if state is None or state["status"] not in ENDED:
                return
            for deploy_id in txn.list_deployments():
                if deploy_id.startswith(block_deployment_prefix(pb_id)):
                    txn.delete_deployment(deploy_id)
                    removed.append(deploy_id)
            txn.delete_allocation(pb_id)
        if removed:
            LOG.info("Processing block %s ended: removed %s", pb_id, ", ".join(removed))

    def drop_orphan_allocations(self, txns) -> None:
        for txn in txns():
            for pb_id in txn.list_allocations():
                if txn.get_pb(pb_id) is None:
                    txn.delete_allocation(pb_id)
