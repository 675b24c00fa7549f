"""What an execution engine is to the deployer and the controller: a small protocol.

A block's workflow asks for a Dask engine with a ``dask`` deployment entry
(``{"n_workers", "threads_per_worker"}``); the deployer hands it to the engine chosen at
``sdpbatch up --engine``, which returns the deployment's state (always ``status`` and
``scheduler_address``, plus what it needs to check and stop it later: process records, SLURM
job ids).  All an engine knows between calls is in that state, so another deployer process
can check and stop what this one started.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from sdpbatch.control.resources import Capacity
from sdpbatch.control.system.processes import ProcessRecord
from sdpbatch.execution.worker_environment import worker_process_environment
from sdpbatch.vocabulary import DeploymentStatus

MAX_WORKERS = 256
MAX_THREADS = 256


class EngineError(Exception):
    """An engine cannot be used, or a deployment on it cannot start: one line saying why."""


def running_state(
    address: str,
    scheduler_info: dict,
    *,
    n_workers: int,
    processes: list[ProcessRecord],
    **extra: object,
) -> dict:
    """The state of a Dask engine that runs: its scheduler's ``address`` and dashboard (from
    the scheduler's identity or file, ``scheduler_info``), its workers, the processes started
    for it, then what else the engine needs (``extra``)."""
    return {
        "status": DeploymentStatus.RUNNING,
        "scheduler_address": address,
        "dashboard": scheduler_info.get("services", {}).get("dashboard"),
        "n_workers": n_workers,
        "processes": [r.to_dict() for r in processes],
        **extra,
    }


@dataclass(frozen=True)
class DaskRequest:
    """The Dask engine a ``dask`` deployment entry asks for."""

    n_workers: int
    threads_per_worker: int
    memory_limit: str  # of each Dask worker: "auto" or a size Dask understands ("2GiB")
    marks: tuple[tuple[str, str], ...] = ()  # environment that marks this machine's processes

    @classmethod
    def from_args(
        cls, deploy_id: str, args: dict, marks: dict[str, str] | None = None
    ) -> DaskRequest:
        """The request of an entry's ``args``; :class:`EngineError` naming the bad field."""
        n_workers = args.get("n_workers", 1)
        threads = args.get("threads_per_worker", 1)
        memory_limit = args.get("memory_limit", "auto")
        if not _count(n_workers, MAX_WORKERS):
            raise EngineError(f"dask deployment {deploy_id}: n_workers must be 1 to {MAX_WORKERS}")
        if not _count(threads, MAX_THREADS):
            raise EngineError(
                f"dask deployment {deploy_id}: threads_per_worker must be 1 to {MAX_THREADS}"
            )
        if not isinstance(memory_limit, str | int) or isinstance(memory_limit, bool):
            raise EngineError(f"dask deployment {deploy_id}: memory_limit must be a size")
        return cls(n_workers, threads, str(memory_limit), tuple(sorted((marks or {}).items())))

    @property
    def worker_env(self) -> dict[str, str]:
        """The one worker environment (thread pools, malloc settings) of a worker process."""
        return worker_process_environment(self.threads_per_worker)

    @property
    def mark_env(self) -> dict[str, str]:
        """The marks of the processes this machine starts for the deployment."""
        return dict(self.marks)


def _count(value: object, largest: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 1 <= value <= largest


class Engine(Protocol):
    """One backend: where a block's Dask scheduler and workers run."""

    kind: str

    def capacity(self) -> Capacity:
        """What blocks may ask of this engine (the controller's resource model);
        :class:`EngineError` if it cannot be reached."""
        ...

    def start(self, deploy_id: str, request: DaskRequest, *, log_path: Path) -> dict:
        """Start a Dask engine; its state (``status`` RUNNING, ``scheduler_address``, ...).
        Raises :class:`EngineError` (after undoing what it started) if it cannot."""
        ...

    def check(self, deploy_id: str, state: dict) -> dict | None:
        """Look after a running engine (replace lost workers); the new state if it changed."""
        ...

    def stop(self, deploy_id: str, state: dict) -> None:
        """Stop everything ``start`` made for ``state`` (idempotent; buffers are not its)."""
        ...
