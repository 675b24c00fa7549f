"""``--engine local``: a block's Dask scheduler and workers as processes of this machine.

The scheduler listens on loopback; ``n_workers`` single-process workers of
``threads_per_worker`` threads each, their thread pools sized by the environment.  The
deployer's loop notices a process that ends (the deployment becomes ``FAILED``).
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

from sdpbatch.control.engines.base import DaskRequest, running_state
from sdpbatch.control.engines.dask_processes import (
    fresh_work_dir,
    start_scheduler,
    stop_processes,
    work_dir,
)
from sdpbatch.control.resources import Capacity, machine_capacity
from sdpbatch.control.system.processes import ProcessRecord, start_process, stop_process
from sdpbatch.vocabulary import LOOPBACK


class LocalEngine:
    """Processes on this machine, the resource model of this machine."""

    kind = "local"

    def __init__(self, data_root: Path, *, capacity: Capacity | None = None):
        self.data_root = Path(data_root)
        self._capacity = capacity

    def capacity(self) -> Capacity:
        return self._capacity or machine_capacity()

    def start(self, deploy_id: str, request: DaskRequest, *, log_path: Path) -> dict:
        directory = fresh_work_dir(self.data_root, deploy_id)
        scheduler, info = start_scheduler(
            deploy_id, directory, host=LOOPBACK, log_path=log_path, env=request.mark_env
        )
        records = [scheduler]
        try:
            for i in range(request.n_workers):
                records.append(
                    _start_worker(
                        f"{deploy_id}-worker-{i}",
                        directory,
                        request,
                        log_path=log_path,
                    )
                )
        except BaseException:
            for record in records:
                stop_process(record.pid, timeout=5)
            raise
        return running_state(
            info["address"],
            info,
            n_workers=request.n_workers,
            processes=records,
            log=str(log_path),
        )

    def check(self, deploy_id: str, state: dict) -> dict | None:
        return None  # the deployer watches the processes of the state itself

    def stop(self, deploy_id: str, state: dict) -> None:
        stop_processes(state)
        shutil.rmtree(work_dir(self.data_root, deploy_id), ignore_errors=True)


def _start_worker(
    name: str, directory: Path, request: DaskRequest, *, log_path: Path
) -> ProcessRecord:
    return start_process(
        name,
        [
            sys.executable,
            "-m",
            "distributed.cli.dask_worker",
            "--scheduler-file",
            str(directory / "scheduler.json"),
            "--host",
            LOOPBACK,
            "--nworkers",
            "1",
            "--nthreads",
            str(request.threads_per_worker),
            "--memory-limit",
            request.memory_limit,
            "--no-dashboard",
            "--name",
            name,
            "--local-directory",
            str(directory),
        ],
        log_path=log_path,
        env={**request.worker_env, **request.mark_env},
        cwd=directory,
    )
