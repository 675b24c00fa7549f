"""A block's Dask scheduler as a process of this machine (the ``local`` and ``slurm`` engines).

The scheduler writes its address to ``scheduler.json`` in the deployment's work directory
(``DATA_ROOT/dask/<deploy_id>``), which also holds the workers' spill and scratch files.
"""

from __future__ import annotations

import json
import shutil
import sys
import time
from pathlib import Path

from sdpbatch.control.engines.base import EngineError
from sdpbatch.control.system.processes import (
    ProcessRecord,
    is_alive,
    start_process,
    stop_process,
    stop_together,
)
from sdpbatch.vocabulary import DASK_DIR

SCHEDULER_START_TIMEOUT = 60.0  # s


def work_dir(data_root: Path, deploy_id: str) -> Path:
    """The deployment's work directory under the data root (``dask/<deploy_id>``)."""
    return Path(data_root) / DASK_DIR / deploy_id


def fresh_work_dir(data_root: Path, deploy_id: str) -> Path:
    """The deployment's work directory, emptied."""
    path = work_dir(data_root, deploy_id)
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True)
    return path


def start_scheduler(
    deploy_id: str, directory: Path, *, host: str, log_path: Path, env: dict | None = None
) -> tuple[ProcessRecord, dict]:
    """Start ``dask scheduler`` listening on ``host`` (any free port); its record and the
    contents of its scheduler file (``address``, ``services``)."""
    scheduler_file = directory / "scheduler.json"
    record = start_process(
        f"{deploy_id}-scheduler",
        [
            sys.executable,
            "-m",
            "distributed.cli.dask_scheduler",
            "--host",
            host,
            "--port",
            "0",
            "--dashboard-address",
            f"{host}:0",
            "--scheduler-file",
            str(scheduler_file),
        ],
        log_path=log_path,
        env=env,
        cwd=directory,
    )
    try:
        return record, _wait_for_scheduler_file(scheduler_file, record)
    except BaseException:
        stop_process(record.pid, timeout=5)
        raise


def _wait_for_scheduler_file(path: Path, scheduler: ProcessRecord) -> dict:
    end = time.monotonic() + SCHEDULER_START_TIMEOUT
    while time.monotonic() < end:
        if path.is_file():
            try:
                return json.loads(path.read_text())
            except json.JSONDecodeError:
                pass  # being written
        if not is_alive(scheduler.pid):
            raise EngineError(f"Dask scheduler exited at start; see {scheduler.log_path}")
        time.sleep(0.1)
    raise EngineError(f"Dask scheduler did not start in {SCHEDULER_START_TIMEOUT:.0f} s")


def stop_processes(state: dict, *, timeout: float = 10.0) -> list[str]:
    """Stop the processes recorded in ``state``, all at once; the names of those stopped."""
    records = [ProcessRecord.from_dict(raw) for raw in reversed(state.get("processes", []))]
    return stop_together(records, timeout=timeout)
