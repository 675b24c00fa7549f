"""The SLURM client commands the ``slurm`` engine uses: sbatch, squeue, scancel, sinfo.

Each is run as an argument list (never through a shell) with a timeout; a failure becomes
an :class:`EngineError` carrying SLURM's own message.  The cluster is the one the client
commands find (``$SLURM_CONF``, else the system's ``slurm.conf``).
"""

from __future__ import annotations

import getpass
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path

from sdpbatch.control.engines.base import EngineError

COMMAND_TIMEOUT = 30.0  # s
MIB = 2**20
LIVE_STATES = frozenset(
    {
        "PENDING",
        "CONFIGURING",
        "RUNNING",
        "SUSPENDED",
        "REQUEUED",
        "REQUEUE_FED",
        "REQUEUE_HOLD",
        "RESIZING",
        "SIGNALING",
        "STAGE_OUT",
    }
)
"""Job states of a job that runs or will run."""
QUEUED_STATES = LIVE_STATES | {"COMPLETING"}
"""Job states that ``squeue`` lists by default: the job is still in the queue."""
_TIME = re.compile(r"^(?:(\d+)-)?(\d+)(?::(\d+))?(?::(\d+))?$")


def run(args: list[str], *, timeout: float = COMMAND_TIMEOUT) -> str:
    """Run a SLURM command; its standard output, or :class:`EngineError` with its message."""
    try:
        result = subprocess.run(args, capture_output=True, text=True, timeout=timeout, check=False)
    except FileNotFoundError:
        raise EngineError(
            f"SLURM's {args[0]} command is not installed here (the slurm engine needs the SLURM "
            "client commands on the PATH)"
        ) from None
    except subprocess.TimeoutExpired:
        raise EngineError(f"{args[0]} did not answer in {timeout:.0f} s") from None
    if result.returncode != 0:
        lines = (result.stderr or result.stdout).strip().splitlines()
        raise EngineError(f"{args[0]} failed: {lines[-1] if lines else 'no message'}")
    return result.stdout


def slurm_seconds(text: str) -> int | None:
    """Seconds of a SLURM time ("30", "1:00:00", "2-12", "1-00:00:00"); None if unlimited.

    SLURM's forms: minutes, minutes:seconds, hours:minutes:seconds, days-hours,
    days-hours:minutes, days-hours:minutes:seconds.  ValueError for anything else.
    """
    text = text.strip()
    if text.lower() in ("infinite", "unlimited"):
        return None
    match = _TIME.match(text)
    if not match:
        raise ValueError(f"{text!r} is not a SLURM time")
    days, first, second, third = match.groups()
    parts = [int(p) for p in (first, second, third) if p is not None]
    if days is not None:
        hours, minutes, seconds = (parts + [0, 0])[:3]
        return ((int(days) * 24 + hours) * 60 + minutes) * 60 + seconds
    if len(parts) == 1:
        return parts[0] * 60
    if len(parts) == 2:
        return parts[0] * 60 + parts[1]
    return (parts[0] * 60 + parts[1]) * 60 + parts[2]


@dataclass(frozen=True)
class Partition:
    """A partition as ``sinfo`` describes it: its size and its largest node."""

    name: str
    nodes: int
    cpus: int
    memory_bytes: int
    node_cpus: int
    node_memory_bytes: int
    max_seconds: int | None  # the partition's time limit; None: unlimited


def read_partition(name: str | None) -> Partition:
    """The partition ``name`` (None: the cluster's default partition)."""
    out = run(["sinfo", "--noheader", "--Node", "--format=%P|%N|%c|%m|%l"])
    nodes: dict[str, list[tuple[str, int, int, str]]] = {}
    default = None
    for line in out.splitlines():
        fields = line.strip().split("|")
        if len(fields) != 5:
            continue
        partition, node, cpus, memory, limit = fields
        if partition.endswith("*"):
            partition = default = partition[:-1]
        nodes.setdefault(partition, []).append((node, int(cpus), int(memory), limit))
    chosen = name or default
    if chosen is None or chosen not in nodes:
        known = ", ".join(sorted(nodes)) or "none"
        what = f"partition {name!r}" if name else "a default partition"
        raise EngineError(f"the SLURM cluster has no {what}; its partitions: {known}")
    unique = {node: (cpus, memory, limit) for node, cpus, memory, limit in nodes[chosen]}
    values = list(unique.values())
    return Partition(
        name=chosen,
        nodes=len(unique),
        cpus=sum(v[0] for v in values),
        memory_bytes=sum(v[1] for v in values) * MIB,
        node_cpus=max(v[0] for v in values),
        node_memory_bytes=max(v[1] for v in values) * MIB,
        max_seconds=slurm_seconds(values[0][2]),
    )


def submit(script: Path, *, output: Path, cwd: Path) -> str:
    """``sbatch`` the job script; the job id."""
    out = run(
        [
            "sbatch",
            "--parsable",
            f"--output={output}",
            f"--chdir={cwd}",
            str(script),
        ]
    )
    job_id = out.strip().split(";")[0]
    if not job_id.isdigit():
        raise EngineError(f"sbatch answered {out.strip()!r}, not a job id")
    return job_id


def job_states(job_name: str) -> dict[str, str]:
    """Job id -> state of this user's jobs named ``job_name`` that SLURM still knows
    (including ended ones for a few minutes)."""
    out = run(
        [
            "squeue",
            "--noheader",
            "--states=all",
            f"--name={job_name}",
            f"--user={getpass.getuser()}",
            "--format=%i|%T",
        ]
    )
    states = {}
    for line in out.splitlines():
        job_id, _, state = line.strip().partition("|")
        if job_id:
            states[job_id] = state
    return states


def cancel(job_ids: list[str]) -> None:
    """``scancel`` the jobs (ending ones and unknown ids are no error)."""
    if job_ids:
        try:
            run(["scancel", "--quiet", *job_ids])
        except EngineError as err:
            if "Invalid job id" not in str(err):
                raise
