"""The resource model: worker thread slots and memory of the engine blocks run on.

A block asks for ``n_workers`` Dask workers of ``threads_per_worker`` threads and a memory
budget per worker.  The machine offers ``cores x workers_per_core`` thread slots (default 2
per core: Dask workers of this workflow spend much of their time in I/O and serialisation, so
mild oversubscription keeps the cores busy without thrashing) and a fraction of its memory.
A request that can never fit is refused with a reason; one that fits later waits.  What a
running block holds is recorded in the database (``/resources/<pb_id>``) so it survives a
controller restart and is given back when the block ends.

Other engines (:mod:`sdpbatch.control.engines`) describe themselves with the same
:class:`Capacity`: a SLURM partition (its CPUs and memory; one worker must fit on a node), an
existing Dask cluster (the threads, memory and number of workers its scheduler reports).
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass

import psutil

WORKERS_PER_CORE_ENV = "SDPBATCH_WORKERS_PER_CORE"
WORKER_MEMORY_ENV = "SDPBATCH_WORKER_MEMORY_GB"
DEFAULT_WORKERS_PER_CORE = 2.0
DEFAULT_WORKER_MEMORY_GB = 1.0
MEMORY_FRACTION = 0.8  # leave the rest to the system and the control plane
GIB = 2**30


def _env_float(name: str, default: float) -> float:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = float(raw)
    except ValueError as err:
        raise ValueError(f"{name} must be a positive number, got {raw!r}") from err
    if not value > 0 or not math.isfinite(value):
        raise ValueError(f"{name} must be a positive number, got {raw!r}")
    return value


@dataclass(frozen=True)
class ResourceRequest:
    """What a block needs while it runs: thread slots (workers x threads), memory (bytes) and
    the number of Dask workers they come in."""

    threads: int = 0
    memory_bytes: int = 0
    workers: int = 0

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, raw: Mapping) -> ResourceRequest:
        return cls(
            int(raw.get("threads", 0)), int(raw.get("memory_bytes", 0)), int(raw.get("workers", 0))
        )


@dataclass(frozen=True)
class Capacity:
    """What an engine offers to blocks.

    ``where`` names it in reasons ("this machine", "SLURM partition 'debug'"); ``note`` says
    where the thread count comes from; ``workers`` caps the number of workers (an existing
    cluster's); ``node`` is the largest single worker (threads, memory) a node can hold.
    """

    cores: int
    threads: int
    memory_bytes: int
    where: str = "this machine"
    note: str = ""
    workers: int | None = None
    node: ResourceRequest | None = None

    def to_dict(self) -> dict:
        return asdict(self)


def machine_capacity(
    *, workers_per_core: float | None = None, memory_bytes: int | None = None
) -> Capacity:
    """This machine's capacity: usable cores x ``workers_per_core`` (default
    ``$SDPBATCH_WORKERS_PER_CORE`` or 2) thread slots, 80 % of its memory."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:
        cores = os.cpu_count() or 1
    per_core = workers_per_core or _env_float(WORKERS_PER_CORE_ENV, DEFAULT_WORKERS_PER_CORE)
    memory = memory_bytes or int(psutil.virtual_memory().total * MEMORY_FRACTION)
    return Capacity(
        cores=cores,
        threads=max(1, math.floor(cores * per_core)),
        memory_bytes=memory,
        note=f"{cores} cores x {per_core:g} per core; set {WORKERS_PER_CORE_ENV} to allow more",
    )


def worker_request(
    n_workers: int, threads_per_worker: int = 1, *, memory_per_worker_gb: float | None = None
) -> ResourceRequest:
    """The request of a Dask engine of ``n_workers`` workers (memory per worker default
    ``$SDPBATCH_WORKER_MEMORY_GB`` or 1 GiB)."""
    return ResourceRequest(
        threads=n_workers * threads_per_worker,
        memory_bytes=n_workers * worker_memory_bytes(memory_per_worker_gb),
        workers=n_workers,
    )


def worker_memory_bytes(memory_per_worker_gb: float | None = None) -> int:
    """The memory budget of one worker (default ``$SDPBATCH_WORKER_MEMORY_GB`` or 1 GiB)."""
    gb = memory_per_worker_gb or _env_float(WORKER_MEMORY_ENV, DEFAULT_WORKER_MEMORY_GB)
    return int(gb * GIB)


def never_fits(request: ResourceRequest, capacity: Capacity) -> str | None:
    """Why ``request`` can never run on ``capacity``, or None if it can."""
    where = capacity.where
    if request.threads > capacity.threads:
        note = f" ({capacity.note})" if capacity.note else ""
        return f"asks for {request.threads} worker threads but {where} has {capacity.threads}{note}"
    if request.memory_bytes > capacity.memory_bytes:
        return (
            f"asks for {request.memory_bytes / GIB:.1f} GiB of worker memory but {where} "
            f"offers {capacity.memory_bytes / GIB:.1f} GiB"
        )
    if capacity.workers is not None and request.workers > capacity.workers:
        return f"asks for {request.workers} workers but {where} has {capacity.workers}"
    node = capacity.node
    if node is not None and request.workers > 0:
        threads = math.ceil(request.threads / request.workers)
        memory = request.memory_bytes / request.workers
        if threads > node.threads or memory > node.memory_bytes:
            return (
                f"asks for workers of {threads} threads and {memory / GIB:.1f} GiB but the "
                f"largest node of {where} has {node.threads} CPUs and "
                f"{node.memory_bytes / GIB:.1f} GiB"
            )
    return None


def fits_now(request: ResourceRequest, held: Iterable[ResourceRequest], capacity: Capacity) -> bool:
    """True if ``request`` fits beside the requests already ``held``."""
    held = list(held)
    threads = sum(h.threads for h in held) + request.threads
    memory = sum(h.memory_bytes for h in held) + request.memory_bytes
    return threads <= capacity.threads and memory <= capacity.memory_bytes
