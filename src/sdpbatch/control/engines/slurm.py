"""``--engine slurm``: a block's Dask workers are SLURM batch jobs.

The block's Dask scheduler runs on this machine (as with dask-jobqueue's ``SLURMCluster``,
whose ``SLURMJob`` writes the job script here); each of the ``n_workers`` workers is one job of
one task with ``threads_per_worker`` CPUs and the worker memory budget, named after the
deployment, logging to ``DATA_ROOT/logs/<deploy_id>-job-<id>.log``.  The job ids live in the
deployment's state, so the deployer's loop looks after them: a worker job that ends while the
block runs is replaced (a few times per worker at most), and every job is cancelled when the
deployment goes (block finished, failed or cancelled; ``sdpbatch down``).  Workers stop by
themselves a minute after losing their scheduler, so no job outlives a crashed control plane
for long.

Needs: the SLURM client commands, a data root on a filesystem the compute nodes share (the
buffers and the work directory ``DATA_ROOT/dask/<deploy_id>``), the same Python environment on
the nodes, and a scheduler address the nodes reach (``--dask-host``; loopback by default,
right for a single-node cluster).
"""

from __future__ import annotations

import logging
import shlex
import shutil
import sys
import time
from pathlib import Path

from sdpbatch.control.engines import slurm_commands as slurm
from sdpbatch.control.engines.base import DaskRequest, EngineError, running_state
from sdpbatch.control.engines.dask_processes import (
    fresh_work_dir,
    start_scheduler,
    stop_processes,
    work_dir,
)
from sdpbatch.control.resources import Capacity, ResourceRequest, worker_memory_bytes
from sdpbatch.control.system.data_root import Layout
from sdpbatch.control.system.processes import stop_process
from sdpbatch.vocabulary import DeploymentStatus

LOG = logging.getLogger(__name__)
DEATH_TIMEOUT = 60  # s a worker waits for a lost scheduler before it exits (and its job ends)
REPLACEMENTS_PER_WORKER = 3
POLL_INTERVAL = 2.0  # s between two looks at a deployment's jobs
STOP_TIMEOUT = 60.0  # s to wait for cancelled jobs to leave the queue
JOB_SCRIPT = "worker-job.sh"


class SlurmEngine:
    """Dask workers as SLURM jobs of ``partition`` (None: the default partition)."""

    kind = "slurm"

    def __init__(
        self,
        data_root: Path,
        *,
        partition: str | None,
        account: str | None,
        walltime: str | None,
        host: str,
    ):
        self.data_root = Path(data_root)
        self.partition = partition
        self.account = account
        self.walltime = walltime
        self.host = host
        self._polled: dict[str, float] = {}

    # --- the resource model -------------------------------------------------------------------

    def capacity(self) -> Capacity:
        part = slurm.read_partition(self.partition)
        wanted = slurm.slurm_seconds(self.walltime) if self.walltime else None
        if wanted is not None and part.max_seconds is not None and wanted > part.max_seconds:
            raise EngineError(
                f"walltime {self.walltime} is longer than the time limit of SLURM partition "
                f"'{part.name}' ({part.max_seconds // 60} minutes)"
            )
        nodes = f"{part.nodes} node{'s' if part.nodes != 1 else ''}"
        return Capacity(
            cores=part.cpus,
            threads=part.cpus,
            memory_bytes=part.memory_bytes,
            where=f"SLURM partition '{part.name}'",
            note=f"{nodes}, {part.cpus} CPUs; a worker thread is one CPU",
            node=ResourceRequest(
                threads=part.node_cpus, memory_bytes=part.node_memory_bytes, workers=1
            ),
        )

    # --- a block's engine ---------------------------------------------------------------------

    def start(self, deploy_id: str, request: DaskRequest, *, log_path: Path) -> dict:
        directory = fresh_work_dir(self.data_root, deploy_id)
        scheduler, info = start_scheduler(
            deploy_id, directory, host=self.host, log_path=log_path, env=request.mark_env
        )
        script = directory / JOB_SCRIPT
        jobs: list[str] = []
        try:
            script.write_text(self.job_script(deploy_id, info["address"], request, directory))
            for _ in range(request.n_workers):
                jobs.append(self._submit(deploy_id, script))
        except BaseException:
            slurm.cancel(jobs)
            stop_process(scheduler.pid, timeout=5)
            raise
        return running_state(
            info["address"],
            info,
            n_workers=request.n_workers,
            processes=[scheduler],
            jobs=jobs,
            job_script=str(script),
            replaced=[],
            replacements_left=REPLACEMENTS_PER_WORKER * request.n_workers,
            log=str(log_path),
        )

    def job_script(
        self, deploy_id: str, address: str, request: DaskRequest, directory: Path
    ) -> str:
        """The batch script of one worker (dask-jobqueue's SLURM job script)."""
        from dask.utils import format_bytes
        from dask_jobqueue.slurm import SLURMJob, slurm_format_bytes_ceil

        memory = worker_memory_bytes()
        job = SLURMJob(
            scheduler=address,
            name=f"{deploy_id}-job-$SLURM_JOB_ID",
            job_name=deploy_id,
            cores=request.threads_per_worker,
            processes=1,
            memory=format_bytes(memory).replace(" ", ""),
            job_cpu=request.threads_per_worker,
            job_mem=slurm_format_bytes_ceil(memory),
            queue=self.partition,
            account=self.account,
            walltime=self.walltime or "",
            job_directives_skip=[] if self.walltime else ["#SBATCH -t"],
            job_extra_directives=[],
            job_script_prologue=[f"export {k}={v}" for k, v in request.worker_env.items()],
            python=shlex.quote(sys.executable),
            local_directory=shlex.quote(str(directory)),
            death_timeout=DEATH_TIMEOUT,
            nanny=True,
            interface=None,
            worker_extra_args=[],
            log_directory=None,
            shebang="#!/usr/bin/env bash",
        )
        return job.job_script()

    def _submit(self, deploy_id: str, script: Path) -> str:
        logs = Layout(self.data_root).logs
        logs.mkdir(parents=True, exist_ok=True)  # SLURM fails a job whose output it cannot open
        return slurm.submit(script, output=logs / f"{deploy_id}-job-%j.log", cwd=script.parent)

    def check(self, deploy_id: str, state: dict) -> dict | None:
        """Replace the worker jobs that ended; the new state, or None if all still run."""
        now = time.monotonic()
        if now - self._polled.get(deploy_id, -POLL_INTERVAL) < POLL_INTERVAL:
            return None
        self._polled[deploy_id] = now
        known = slurm.job_states(deploy_id)
        ended = [j for j in state.get("jobs", []) if known.get(j) not in slurm.LIVE_STATES]
        if not ended:
            return None
        jobs, replaced = list(state["jobs"]), list(state.get("replaced", []))
        left = int(state.get("replacements_left", 0))
        for job_id in ended:
            how = known.get(job_id, "gone")
            if left <= 0:
                return {
                    **state,
                    "status": DeploymentStatus.FAILED,
                    "error": f"worker job {job_id} ended ({how}) and no replacements are left; "
                    f"see {Layout(self.data_root).logs}/{deploy_id}-job-*.log",
                }
            new_id = self._submit(deploy_id, Path(state["job_script"]))
            LOG.info(
                "Deployment %s: worker job %s ended (%s), replaced by %s",
                deploy_id,
                job_id,
                how,
                new_id,
            )
            jobs[jobs.index(job_id)] = new_id
            replaced.append({"job_id": job_id, "state": how, "by": new_id, "time": time.time()})
            left -= 1
        return {**state, "jobs": jobs, "replaced": replaced, "replacements_left": left}

    def stop(self, deploy_id: str, state: dict) -> None:
        """Cancel the jobs, wait until they have left the queue, stop the scheduler."""
        self._polled.pop(deploy_id, None)
        ours = set(state.get("jobs", [])) | {r["by"] for r in state.get("replaced", [])}
        try:
            slurm.cancel(sorted(ours))
            _wait_until_dequeued(deploy_id, ours)
        except EngineError as err:  # the scheduler still goes: its workers follow it
            LOG.error("Deployment %s: could not cancel jobs %s: %s", deploy_id, sorted(ours), err)
        stop_processes(state)
        shutil.rmtree(work_dir(self.data_root, deploy_id), ignore_errors=True)


def _wait_until_dequeued(job_name: str, job_ids: set[str]) -> None:
    end = time.monotonic() + STOP_TIMEOUT
    while time.monotonic() < end:
        states = slurm.job_states(job_name)
        if not {j for j in job_ids if states.get(j) in slurm.QUEUED_STATES}:
            return
        time.sleep(0.5)
    LOG.warning("Jobs %s of %s still queued %.0f s after scancel", job_ids, job_name, STOP_TIMEOUT)
