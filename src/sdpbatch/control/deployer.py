"""The deployer: turns ``/deploy/<id>`` entries into processes and storage, and back.

Types:

- ``process``: ``{"module": "sdpbatch.workflows.run", "args": [pb_id]}`` runs
  ``python -m module args...`` (only modules of ``sdpbatch.workflows``);
- ``dask``: ``{"n_workers", "threads_per_worker", "memory_limit"}`` starts a Dask engine on
  the engine chosen at ``sdpbatch up --engine`` (:mod:`sdpbatch.control.engines`: local
  processes, SLURM jobs, an existing cluster) and records its scheduler address;
- ``buffer``: ``{"pb_id"}`` creates the buffer directory and record (kept when the entry goes).

What the deployer made of an entry is recorded in ``/deploy/<id>/state`` (status, process
records with pids, addresses), so a restarted deployer stops what its predecessor started.
Every process it starts carries its deployment id in ``$SDPBATCH_DEPLOYMENT`` (and the data
root in ``$SDPBATCH_DEPLOYER_ROOT``): on start-up the deployer stops processes of deployments
that are not recorded as running (a predecessor that died between starting a process and
recording it), and on shutdown it finds what to stop by these marks, without the database.
The processes of a block that has ended are stopped (after :data:`ENDED_GRACE` s for it to
clean up itself) even while its entries are still there, so no process of an ended block
outlives it.  Dask workers get the
one worker environment (:mod:`sdpbatch.execution.worker_environment`), as a LocalCluster's.
Logs go to ``DATA_ROOT/logs/<deploy_id>.log``.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import threading
import time
from pathlib import Path

import psutil

from sdpbatch.control import buffers
from sdpbatch.control.configdb import Config, ConfigError
from sdpbatch.control.engines import EngineError, Engines
from sdpbatch.control.system.data_root import Layout
from sdpbatch.control.system.processes import (
    ProcessRecord,
    exit_code,
    start_process,
    stop_process,
)
from sdpbatch.vocabulary import (
    ENDED,
    DeploymentStatus,
    DeploymentType,
    log_file_name,
    pb_of_deployment,
    workflow_deployment_id,
)

LOG = logging.getLogger(__name__)
ALLOWED_MODULE_PREFIX = "sdpbatch.workflows."
DATA_ROOT_ENV = "SDPBATCH_DATA_ROOT"
LOG_PATH_ENV = "SDPBATCH_LOG_PATH"
DEPLOYMENT_ENV = "SDPBATCH_DEPLOYMENT"  # on every process the deployer starts: its deployment
ROOT_ENV = "SDPBATCH_DEPLOYER_ROOT"  # and the data root of the deployer that started it
ENDED_GRACE = 10.0  # s a process of an ended block may take to end by itself


class DeploymentError(Exception):
    """A deployment entry cannot be realised (bad arguments, failed start)."""


class Deployer:
    """Reconciles deployment entries with what runs on this machine."""

    def __init__(self, config: Config, data_root: Path, *, poll_interval: float = 1.0):
        self.config = config
        self.data_root = Path(data_root).resolve()
        self.poll_interval = poll_interval
        self.engines = Engines(config, self.data_root)
        Layout(self.data_root).logs.mkdir(parents=True, exist_ok=True)
        from sdpbatch.control.controller import component_info

        self.info = {**component_info("deployer"), "data_root": str(self.data_root)}
        self._ended_since: dict[str, float] = {}  # block -> when this deployer saw it end

    def log_path(self, deploy_id: str) -> Path:
        return Layout(self.data_root).logs / log_file_name(deploy_id)

    # --- the loop -----------------------------------------------------------------------------

    def run(self, stop: threading.Event | None = None) -> None:
        """Reconcile until ``stop`` is set; wakes on any change under ``/deploy/`` and every
        ``poll_interval`` s to notice processes that exited."""
        stop = stop or threading.Event()
        LOG.info("Deployer started, data root %s", self.data_root)
        self.stop_unrecorded()
        for watcher in self.config.watcher(timeout=self.poll_interval):
            if stop.is_set():
                break
            self.reconcile(watcher)
        LOG.info("Deployer stopped")

    def reconcile(self, watcher=None) -> None:
        """One pass: start new entries, stop removed ones and those of ended blocks, record
        exited processes."""
        txns = watcher.txn if watcher is not None else self.config.txn
        for txn in txns():
            if txn.get_component(self.info["id"]) != self.info:  # first pass, or new lease
                txn.register_component(self.info["id"], self.info)
            deployments = {d: txn.get_deployment(d) for d in txn.list_deployments()}
            states = {d: txn.get_deployment_state(d) for d in txn.list_deployment_states()}
            blocks = {pb_of_deployment(d) for d in states} - {None}
            ended = {pb for pb in blocks if (txn.get_pb_state(pb) or {}).get("status") in ENDED}
        for deploy_id, dep in deployments.items():
            if dep is not None and deploy_id not in states:
                self.start(dep)
        for deploy_id, state in states.items():
            if deploy_id not in deployments:
                self.stop(deploy_id, state)
            elif state is not None and state.get("status") == DeploymentStatus.RUNNING:
                if self._overdue(pb_of_deployment(deploy_id), ended):
                    self.stop_processes(deploy_id, state, why="its processing block has ended")
                self.check_exited(deploy_id, state)
                if state.get("type") == DeploymentType.DASK:
                    self.check_engine(deploy_id)

    def _overdue(self, pb_id: str | None, ended: set[str]) -> bool:
        """True once block ``pb_id`` has been seen ended for :data:`ENDED_GRACE` s."""
        if pb_id not in ended:
            self._ended_since.pop(pb_id, None)
            return False
        since = self._ended_since.setdefault(pb_id, time.monotonic())
        return time.monotonic() - since >= ENDED_GRACE

    def _marked_processes(self) -> list[tuple[psutil.Process, str]]:
        """Live processes started by a deployer of this data root, with their deployment."""
        found = []
        for proc in psutil.process_iter(["pid", "status"]):
            try:
                if proc.pid == os.getpid() or proc.info["status"] == psutil.STATUS_ZOMBIE:
                    continue
                env = proc.environ()
                marker = env.get(DEPLOYMENT_ENV)
                if marker is not None and env.get(ROOT_ENV) == str(self.data_root):
                    found.append((proc, marker))
            except psutil.Error:
                continue
        return found

    def stop_unrecorded(self) -> list[int]:
        """Stop processes marked with a deployment id whose recorded state does not list
        them (started by a deployer that died before recording them); their pids."""
        for txn in self.config.txn():
            states = {d: txn.get_deployment_state(d) for d in txn.list_deployment_states()}
        recorded = {
            int(p["pid"])
            for state in states.values()
            if state and state.get("status") == DeploymentStatus.RUNNING
            for p in state.get("processes", [])
        }
        stopped = []
        for proc, marker in self._marked_processes():
            if proc.pid in recorded:
                continue
            LOG.warning("Stopping unrecorded process %d of deployment %s", proc.pid, marker)
            stop_process(proc.pid, timeout=10)
            stopped.append(proc.pid)
        return stopped

    def stop_all(self) -> None:
        """Stop every process deployed from this data root (on shutdown), found by their
        marks, so it works with the database away too: workflow processes first, so a
        workflow sees its own stop rather than its engine vanishing; then the engines' jobs
        (SLURM), which the database records; entries stay."""
        marked = self._marked_processes()
        marked.sort(
            key=lambda item: item[1] != workflow_deployment_id(pb_of_deployment(item[1]) or "")
        )
        for proc, _ in marked:
            try:
                started = proc.create_time()
            except psutil.Error:
                continue
            stop_process(proc.pid, started=started)
        self._stop_engine_jobs()

    def _stop_engine_jobs(self) -> None:
        """Stop what the engines run for the recorded Dask deployments (SLURM jobs)."""
        try:
            with self.config.patience(3.0):
                for txn in self.config.txn():
                    states = {d: txn.get_deployment_state(d) for d in txn.list_deployment_states()}
        except ConfigError as err:
            LOG.warning("Engines' jobs not stopped, the database is away: %s", err)
            return
        for deploy_id, state in states.items():
            if (state or {}).get("type") == DeploymentType.DASK:
                try:
                    self.engines.stop(deploy_id, state)
                except EngineError as err:
                    LOG.warning("Could not stop the engine of %s: %s", deploy_id, err)

    def stop_processes(self, deploy_id: str, state: dict, *, why: str) -> None:
        """Stop the live processes of a deployment that is still recorded (the next pass
        records them as ended)."""
        for raw in reversed(state.get("processes", [])):
            record = ProcessRecord.from_dict(raw)
            if stop_process(record.pid, started=record.started, timeout=10):
                LOG.info("Stopped %s (pid %d): %s", record.name, record.pid, why)

    # --- starting -----------------------------------------------------------------------------

    def start(self, dep: dict) -> None:
        deploy_id, kind, args = dep["id"], dep["type"], dep.get("args", {})
        for txn in self.config.txn():  # claim the entry first: no double start after a crash
            if txn.get_deployment_state(deploy_id) is not None:
                return
            txn.create_deployment_state(
                deploy_id, {"status": DeploymentStatus.STARTING, "type": kind}
            )
        LOG.info("Deploying %s (%s)", deploy_id, kind)
        state: dict
        try:
            if kind == DeploymentType.PROCESS:
                state = self._start_process(deploy_id, args)
            elif kind == DeploymentType.DASK:
                state = self.engines.start(
                    deploy_id,
                    args,
                    log_path=self.log_path(deploy_id),
                    marks=self._marker(deploy_id),
                )
            elif kind == DeploymentType.BUFFER:
                state = self._make_buffer(deploy_id, args)
            else:
                raise DeploymentError(f"unknown deployment type {kind!r}")
        except (DeploymentError, EngineError, ConfigError, OSError, ValueError) as err:
            LOG.error("Deployment %s failed: %s", deploy_id, err)
            state = {"status": DeploymentStatus.FAILED, "type": kind, "error": str(err)}
        state.setdefault("type", kind)
        for txn in self.config.txn():
            if txn.get_deployment(deploy_id) is None:  # removed while we were starting it
                state["status"] = DeploymentStatus.REMOVED
            txn.update_deployment_state(deploy_id, state)
        if state["status"] == DeploymentStatus.REMOVED:
            self.stop(deploy_id, state)

    def _start_process(self, deploy_id: str, args: dict) -> dict:
        module, argv = args.get("module"), args.get("args", [])
        if not isinstance(module, str) or not module.startswith(ALLOWED_MODULE_PREFIX):
            raise DeploymentError(
                f"process deployment {deploy_id}: module must be a module of "
                f"{ALLOWED_MODULE_PREFIX[:-1]}, got {module!r}"
            )
        if not isinstance(argv, list) or not all(isinstance(a, str) for a in argv):
            raise DeploymentError(f"process deployment {deploy_id}: args must be strings")
        record = start_process(
            deploy_id,
            [sys.executable, "-m", module, *argv],
            log_path=self.log_path(deploy_id),
            env={
                **self._config_env(),
                **self._marker(deploy_id),
                DATA_ROOT_ENV: str(self.data_root),
                LOG_PATH_ENV: str(self.log_path(deploy_id)),
            },
        )
        return {
            "status": DeploymentStatus.RUNNING,
            "processes": [record.to_dict()],
            "log": str(record.log_path),
        }

    def _marker(self, deploy_id: str) -> dict[str, str]:
        return {DEPLOYMENT_ENV: deploy_id, ROOT_ENV: str(self.data_root)}

    def _config_env(self) -> dict[str, str]:
        backend = self.config.backend
        env = {"SDP_CONFIG_BACKEND": self.config.backend_name}
        if hasattr(backend, "host"):
            env.update(SDP_CONFIG_HOST=backend.host, SDP_CONFIG_PORT=str(backend.port))
        return env

    def _make_buffer(self, deploy_id: str, args: dict) -> dict:
        record = buffers.make_buffer(
            self.config, self.data_root, deploy_id, pb_id=args.get("pb_id")
        )
        return {"status": DeploymentStatus.RUNNING, "path": record["path"], "processes": []}

    # --- stopping -----------------------------------------------------------------------------

    def stop(self, deploy_id: str, state: dict | None) -> None:
        """Stop the processes of a removed entry (buffers are kept) and drop its state."""
        state = state or {}
        if state.get("type") == DeploymentType.DASK:
            self.engines.stop(deploy_id, state)  # its jobs, processes and work directory
        for raw in reversed(state.get("processes", [])):
            record = ProcessRecord.from_dict(raw)
            if stop_process(record.pid, started=record.started, timeout=10):
                LOG.info("Stopped %s (pid %d)", record.name, record.pid)
        for txn in self.config.txn():
            if txn.get_deployment(deploy_id) is None:
                txn.delete_deployment_state(deploy_id)
        LOG.info("Removed deployment %s", deploy_id)

    def check_exited(self, deploy_id: str, state: dict) -> None:
        """Record processes that ended by themselves (a workflow exiting, a crashed worker)."""
        records = [ProcessRecord.from_dict(raw) for raw in state.get("processes", [])]
        exited = [r for r in records if not r.alive()]
        if not exited:
            return
        codes = {r.name: exit_code(r.pid) for r in exited}
        status = (
            DeploymentStatus.EXITED
            if state.get("type") == DeploymentType.PROCESS
            else DeploymentStatus.FAILED
        )
        LOG.info("Deployment %s: processes ended %s", deploy_id, json.dumps(codes))
        for txn in self.config.txn():
            current = txn.get_deployment_state(deploy_id)
            if current is None or current.get("status") != DeploymentStatus.RUNNING:
                return
            txn.update_deployment_state(
                deploy_id, {**current, "status": status, "exit_codes": codes, "ended": time.time()}
            )

    def check_engine(self, deploy_id: str) -> None:
        """Let the engine look after a running Dask engine (a lost SLURM job is replaced)."""
        for txn in self.config.txn():
            state = txn.get_deployment_state(deploy_id)
        if state is None or state.get("status") != DeploymentStatus.RUNNING:
            return
        try:
            changed = self.engines.check(deploy_id, state)
        except EngineError as err:
            LOG.warning("Deployment %s: cannot check its engine: %s", deploy_id, err)
            return
        if changed is None:
            return
        for txn in self.config.txn():
            current = txn.get_deployment_state(deploy_id)
            kept = current is not None and current.get("status") == DeploymentStatus.RUNNING
            kept = kept and txn.get_deployment(deploy_id) is not None
            if kept:
                txn.update_deployment_state(deploy_id, changed)
        if not kept:  # it went meanwhile: what the check started goes too
            self.engines.stop(deploy_id, changed)
        LOG.info("Deployment %s: %s", deploy_id, changed.get("error") or "engine state updated")
