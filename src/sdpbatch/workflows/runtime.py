"""What every workflow process does around its science: the processing block's life cycle.

:func:`run_workflow` claims the block (owner key on this process's lease), runs the workflow
function with a :class:`ProcessingBlock` handle, removes the Dask engine it deployed and then
ends the block ``FINISHED``; on any error it sets ``FAILED`` with a reason a person
understands (:func:`describe_failure`), also after removing the engine, so no crash leaves a
block ``RUNNING`` or a Dask cluster behind, and an ended block has nothing left running.
SIGTERM ends the run the same way, with one log line ("stopped by SIGTERM") and no traceback.
Buffers are kept: they hold the products.

While the science runs, a keeper thread (:class:`OwnershipKeeper`) checks the block: if this
process's lease expired (it was cut off from the database too long) and nobody else took the
block, it takes it again; if the block ended or another process owns it, it stops the work.
All database calls wait for the database to come back (bounded back-off), so an etcd outage
only pauses the bookkeeping.
"""

from __future__ import annotations

import _thread
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

from sdpbatch.control.buffers import check_buffer_name
from sdpbatch.control.configdb import FOREVER, Config, ConfigError
from sdpbatch.control.deployer import LOG_PATH_ENV
from sdpbatch.vocabulary import (
    DEPLOYMENT_ENDED,
    ENDED,
    BlockStatus,
    DeploymentStatus,
    DeploymentType,
    block_deployment_prefix,
    dask_deployment_id,
)
from sdpbatch.workflows.reasons import describe_failure

DEPLOY_TIMEOUT = 120.0  # s to wait for the deployer to realise a deployment
REMOVE_TIMEOUT = 60.0  # s to wait for the deployer to stop a removed deployment
STOP_WAIT = 5.0  # s a stopped workflow waits for its engines to go (its deployer may be stopping)


class BlockEnded(Exception):
    """The block was ended by someone else (controller: CANCELLED, FAILED): stop quietly."""


class Stopped(SystemExit):
    """This process got SIGTERM: the run ends cleanly (the block FAILED, "stopped by
    SIGTERM")."""


class WorkflowError(Exception):
    """A step of the workflow failed (deployment failed, timeout)."""


class ProcessingBlock:
    """Handle of the block a workflow process owns: state changes, buffers, Dask engine."""

    def __init__(self, config: Config, pb_id: str, *, log: logging.Logger):
        self.config = config
        self.pb_id = pb_id
        self.log = log
        self.pb: dict = {}
        self.dask_id = dask_deployment_id(pb_id)
        self._deployed: list[str] = []

    # --- life cycle -----------------------------------------------------------------------------

    def claim(self) -> None:
        for txn in self.config.txn():
            pb = txn.get_pb(self.pb_id)
            if pb is None:
                raise WorkflowError(f"processing block {self.pb_id} does not exist")
            txn.take_pb_ownership(self.pb_id)
            state = txn.get_pb_state(self.pb_id)
            if state is not None and os.environ.get(LOG_PATH_ENV):
                txn.update_pb_state(self.pb_id, {**state, "log": os.environ[LOG_PATH_ENV]})
        self.pb = pb
        self.log.info("Claimed processing block %s", self.pb_id)

    def update_state(self, **changes) -> dict:
        """Merge ``changes`` into the block's state; :class:`BlockEnded` if it has ended."""
        for txn in self.config.txn():
            state = txn.get_pb_state(self.pb_id) or {"resources_available": False}
            if state.get("status") in ENDED:
                raise BlockEnded(f"processing block {self.pb_id} is {state['status']}")
            if not txn.is_pb_owner(self.pb_id):
                raise BlockEnded(f"processing block {self.pb_id} is no longer owned by us")
            state = {**state, **changes}
            if txn.get_pb_state(self.pb_id) is None:
                txn.create_pb_state(self.pb_id, state)
            else:
                txn.update_pb_state(self.pb_id, state)
        return state

    def state(self) -> dict:
        """The block's state as the database has it now."""
        for txn in self.config.txn():
            state = txn.get_pb_state(self.pb_id) or {}
        return state

    def wait_for_resources(self) -> None:
        """``WAITING`` until the controller releases the block, then ``RUNNING``."""
        self.update_state(status=BlockStatus.WAITING)
        self.log.info("Waiting for resources to be available")
        for txn in self.config.txn():
            state = txn.get_pb_state(self.pb_id) or {}
            if state.get("status") in ENDED:
                raise BlockEnded(f"processing block {self.pb_id} is {state['status']}")
            if not state.get("resources_available"):
                txn.loop(wait=True)
        self.log.info("Resources are available")
        self.update_state(status=BlockStatus.RUNNING)

    def finish(self, status: str = BlockStatus.FINISHED, **extra) -> None:
        self.update_state(status=status, **extra)

    def fail(self, message: str) -> None:
        """``FAILED`` with ``message``, unless the block already ended."""
        try:
            self.update_state(status=BlockStatus.FAILED, reason=message)
        except BlockEnded:
            pass

    # --- deployments ----------------------------------------------------------------------------

    def _deploy(self, dep: dict) -> None:
        for txn in self.config.txn():
            if txn.get_deployment(dep["id"]) is None:
                txn.create_deployment(dep)
        self._deployed.append(dep["id"])

    def _wait_deployed(self, deploy_id: str, timeout: float = DEPLOY_TIMEOUT) -> dict:
        end = time.monotonic() + timeout
        for txn in self.config.txn():
            state = txn.get_deployment_state(deploy_id) or {}
            pb_state = txn.get_pb_state(self.pb_id) or {}
            if pb_state.get("status") in ENDED:
                raise BlockEnded(f"processing block {self.pb_id} is {pb_state['status']}")
            if state.get("status") in DEPLOYMENT_ENDED:
                detail = state.get("error") or f"exit codes {state.get('exit_codes')}"
                raise WorkflowError(f"deployment {deploy_id} failed: {detail}")
            if state.get("status") != DeploymentStatus.RUNNING:
                remaining = end - time.monotonic()
                if remaining <= 0:
                    raise WorkflowError(
                        f"deployment {deploy_id} not running after {timeout:.0f} s "
                        "(is 'sdpbatch deployer' running?)"
                    )
                txn.loop(wait=True, timeout=remaining)
        return state

    def create_buffers(self, names: list[str]) -> dict[str, Path]:
        """Reserve the buffers (deployments of type ``buffer``); their directories."""
        for name in names:
            check_buffer_name(name)
        for txn in self.config.txn():
            for name in names:
                record = txn.get_buffer(name)
                if record is not None and record.get("pb_id") != self.pb_id:
                    raise WorkflowError(
                        f"buffer {name} already holds the data of processing block "
                        f"{record.get('pb_id')}; delete it with 'sdpbatch buffers delete {name}' "
                        "or choose another buffer name"
                    )
                if txn.get_deployment(name) is None:
                    txn.create_deployment(
                        {"id": name, "type": DeploymentType.BUFFER, "args": {"pb_id": self.pb_id}}
                    )
        return {name: Path(self._wait_deployed(name)["path"]) for name in names}

    def deploy_dask(self, n_workers: int, threads_per_worker: int = 1) -> str:
        """Deploy the Dask engine and wait until it runs; the scheduler address."""
        self._deploy(
            {
                "id": self.dask_id,
                "type": DeploymentType.DASK,
                "args": {"n_workers": n_workers, "threads_per_worker": threads_per_worker},
            }
        )
        return self._wait_deployed(self.dask_id)["scheduler_address"]

    def remove_deployment(self, deploy_id: str, *, wait: float = REMOVE_TIMEOUT) -> None:
        """Delete the entry and wait until the deployer has stopped what it ran."""
        for txn in self.config.txn():
            if txn.get_deployment(deploy_id) is not None:
                txn.delete_deployment(deploy_id)
        if deploy_id in self._deployed:
            self._deployed.remove(deploy_id)
        end = time.monotonic() + wait
        for txn in self.config.txn():
            if txn.get_deployment_state(deploy_id) is not None and time.monotonic() < end:
                txn.loop(wait=True, timeout=max(0.1, end - time.monotonic()))

    def remove_engines(self, *, wait: float = REMOVE_TIMEOUT) -> None:
        """Remove every process deployment this block made (never its buffers), waiting up to
        ``wait`` s for each to be stopped."""
        for deploy_id in list(self._deployed):
            if deploy_id.startswith(block_deployment_prefix(self.pb_id)):
                self.remove_deployment(deploy_id, wait=wait)


class OwnershipKeeper:
    """A thread that keeps the block ours while the science runs (see the module doc).

    When the block ended (FAILED by the controller or 'sdpbatch down', CANCELLED) or another
    process owns it, it records the reason and interrupts the main thread, whose SIGTERM
    handler then raises :class:`BlockEnded`: the work stops and the engines are removed.
    """

    def __init__(self, block: ProcessingBlock):
        self.block = block
        self.reason: str | None = None
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, name="ownership-keeper", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        with self._lock:
            self._stop.set()

    def _run(self) -> None:
        interval = max(0.5, self.block.config.lease_ttl / 2)
        while not self._stop.wait(interval):
            try:
                verdict = self.check()
            except ConfigError as err:
                self.block.log.warning("Cannot check the block's ownership: %s", err)
                continue
            if verdict is None:
                continue
            with self._lock:
                if self._stop.is_set():
                    return
                self.reason = verdict
                _thread.interrupt_main(signal.SIGTERM)
            return

    def check(self) -> str | None:
        """One look: None while the block is ours (taken again if the lease had expired),
        else why the work must stop."""
        block, retaken = self.block, False
        for txn in block.config.txn():
            state = txn.get_pb_state(block.pb_id) or {}
            owner = txn.get_pb_owner(block.pb_id)
            verdict, retaken = None, False
            if state.get("status") in ENDED:
                verdict = f"processing block {block.pb_id} is {state['status']}"
                if state.get("reason"):
                    verdict += f" ({state['reason']})"
            elif owner is None:
                txn.take_pb_ownership(block.pb_id)
                retaken = True
            elif owner != block.config.owner_info:
                verdict = f"processing block {block.pb_id} is now owned by pid {owner.get('pid')}"
        if retaken:
            block.log.warning("Lease had expired: took processing block %s again", block.pb_id)
        return verdict


def run_workflow(
    pb_id: str,
    function: Callable[[ProcessingBlock], None],
    *,
    config: Config | None = None,
    logger_name: str = "workflow",
) -> int:
    """Claim block ``pb_id``, run ``function(block)``, end the block; exit status 0/1.

    SIGTERM ends the run cleanly: one log line, the block's engines removed, then the block
    ``FAILED`` "stopped by SIGTERM" (a second SIGTERM while it stops is ignored).
    """
    log = logging.getLogger(logger_name)
    own_config = config is None
    config = config or Config(patience=FOREVER)
    block = ProcessingBlock(config, pb_id, log=log)
    keeper = OwnershipKeeper(block)
    stopping = threading.Event()

    def on_sigterm(signum, frame) -> None:
        if stopping.is_set():
            return
        stopping.set()
        if keeper.reason is not None:
            raise BlockEnded(keeper.reason)
        raise Stopped(f"stopped by signal {signum}")

    previous = None
    if sys.platform != "win32" and _in_main_thread():
        previous = signal.signal(signal.SIGTERM, on_sigterm)
    try:
        return _run(block, function, keeper=keeper if previous is not None else None)
    except Stopped as err:  # while claiming or ending the block
        reason = describe_failure(err)
        log.info("Stopping: %s", reason)
        _remove_engines(block, STOP_WAIT)
        block.fail(reason)
        return 1
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
        if own_config:
            config.close()


def _run(
    block: ProcessingBlock,
    function: Callable[[ProcessingBlock], None],
    *,
    keeper: OwnershipKeeper | None,
) -> int:
    """The block's run: its engines are removed before it is marked FINISHED or FAILED."""
    log = block.log
    try:
        block.claim()
    except (ConfigError, WorkflowError) as err:
        log.error("Cannot claim processing block %s: %s", block.pb_id, err)
        return 1
    failure, wait = None, REMOVE_TIMEOUT
    try:
        if keeper is not None:
            keeper.start()  # it stops the work through the SIGTERM handler
        try:
            function(block)
        finally:
            if keeper is not None:
                keeper.stop()
    except BlockEnded as err:
        log.info("Stopping: %s", err)
        _remove_engines(block, wait)
        return 0
    except Stopped as err:  # SIGTERM: a stop asked for, not an error
        failure, wait = describe_failure(err), STOP_WAIT
        log.info("Stopping: %s", failure)
    except BaseException as err:  # noqa: BLE001 - every failure must end the block
        failure = describe_failure(err)
        log.error("Processing block %s failed: %s", block.pb_id, failure, exc_info=True)
    _remove_engines(block, wait)
    if failure is not None:
        block.fail(failure)
        return 1
    try:
        block.finish()
    except BlockEnded as err:
        log.info("Stopping: %s", err)
    return 0


def _remove_engines(block: ProcessingBlock, wait: float) -> None:
    try:
        block.remove_engines(wait=wait)
    except Exception as err:  # noqa: BLE001 - report, the controller cleans up too
        block.log.error("Could not remove the engines of %s: %s", block.pb_id, err)


def _in_main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()
