"""What every workflow process does around its science: the processing block's life cycle.

:func:`run_workflow` claims the block (owner key on this process's lease), runs the workflow
function with a :class:`ProcessingBlock` handle and ends the block ``FINISHED``; on any error
(including SIGTERM) it sets ``FAILED`` with the message and removes the Dask engine it
deployed, so no crash leaves a block ``RUNNING`` or a Dask cluster behind.  Buffers are kept:
they hold the products.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path

from sdpbatch.control.buffers import check_buffer_name
from sdpbatch.control.configdb import Config, ConfigError
from sdpbatch.control.deployer import LOG_PATH_ENV

ENDED = ("FINISHED", "FAILED", "CANCELLED")
DEPLOY_TIMEOUT = 120.0  # s to wait for the deployer to realise a deployment


class BlockEnded(Exception):
    """The block was ended by someone else (controller: CANCELLED, FAILED): stop quietly."""


class WorkflowError(Exception):
    """A step of the workflow failed (deployment failed, timeout)."""


class ProcessingBlock:
    """Handle of the block a workflow process owns: state changes, buffers, Dask engine."""

    def __init__(self, config: Config, pb_id: str, *, log: logging.Logger):
        self.config = config
        self.pb_id = pb_id
        self.log = log
        self.pb: dict = {}
        self.dask_id = f"proc-{pb_id}-dask"
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

    def wait_for_resources(self) -> None:
        """``WAITING`` until the controller releases the block, then ``RUNNING``."""
        self.update_state(status="WAITING")
        self.log.info("Waiting for resources to be available")
        for txn in self.config.txn():
            state = txn.get_pb_state(self.pb_id) or {}
            if state.get("status") in ENDED:
                raise BlockEnded(f"processing block {self.pb_id} is {state['status']}")
            if not state.get("resources_available"):
                txn.loop(wait=True)
        self.log.info("Resources are available")
        self.update_state(status="RUNNING")

    def finish(self, status: str = "FINISHED", **extra) -> None:
        self.update_state(status=status, **extra)

    def fail(self, message: str) -> None:
        """``FAILED`` with ``message``, unless the block already ended."""
        try:
            self.update_state(status="FAILED", reason=message)
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
            if state.get("status") in ("FAILED", "EXITED"):
                detail = state.get("error") or f"exit codes {state.get('exit_codes')}"
                raise WorkflowError(f"deployment {deploy_id} failed: {detail}")
            if state.get("status") != "RUNNING":
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
                        {"id": name, "type": "buffer", "args": {"pb_id": self.pb_id}}
                    )
        return {name: Path(self._wait_deployed(name)["path"]) for name in names}

    def deploy_dask(self, n_workers: int, threads_per_worker: int = 1) -> str:
        """Deploy the Dask engine and wait until it runs; the scheduler address."""
        self._deploy(
            {
                "id": self.dask_id,
                "type": "dask",
                "args": {"n_workers": n_workers, "threads_per_worker": threads_per_worker},
            }
        )
        return self._wait_deployed(self.dask_id)["scheduler_address"]

    def remove_deployment(self, deploy_id: str, *, wait: float = 60.0) -> None:
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

    def remove_engines(self) -> None:
        """Remove every process deployment this block made (never its buffers)."""
        for deploy_id in list(self._deployed):
            if deploy_id.startswith(f"proc-{self.pb_id}-"):
                self.remove_deployment(deploy_id)


def _raise_on_sigterm(signum, frame) -> None:
    raise SystemExit(f"stopped by signal {signum}")


def run_workflow(
    pb_id: str,
    function: Callable[[ProcessingBlock], None],
    *,
    config: Config | None = None,
    logger_name: str = "workflow",
) -> int:
    """Claim block ``pb_id``, run ``function(block)``, end the block; exit status 0/1."""
    log = logging.getLogger(logger_name)
    own_config = config is None
    config = config or Config()
    block = ProcessingBlock(config, pb_id, log=log)
    previous = None
    if sys.platform != "win32" and _in_main_thread():
        previous = signal.signal(signal.SIGTERM, _raise_on_sigterm)
    try:
        try:
            block.claim()
        except (ConfigError, WorkflowError) as err:
            log.error("Cannot claim processing block %s: %s", pb_id, err)
            return 1
        try:
            function(block)
            block.finish()
            return 0
        except BlockEnded as err:
            log.info("Stopping: %s", err)
            return 0
        except BaseException as err:  # noqa: BLE001 - every failure must end the block
            message = f"{type(err).__name__}: {err}"
            log.error("Processing block %s failed: %s", pb_id, message, exc_info=True)
            block.fail(message)
            return 1
        finally:
            try:
                block.remove_engines()
            except Exception as err:  # noqa: BLE001 - report, the controller cleans up too
                log.error("Could not remove the engines of %s: %s", pb_id, err)
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
        if own_config:
            config.close()


def _in_main_thread() -> bool:
    import threading

    return threading.current_thread() is threading.main_thread()
