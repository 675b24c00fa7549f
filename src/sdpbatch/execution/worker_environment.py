"""The one environment of a Dask worker process, wherever the worker is started.

Used by the LocalCluster of :mod:`sdpbatch.execution.cluster` and by the deployer's
``dask worker`` processes (:mod:`sdpbatch.control.deployer`), so a workflow's workers run
exactly like a ``sdpbatch run``'s:

- glibc's malloc keeps freed memory up to 64 MiB instead of trimming it back to the OS above
  Dask's default 64 KiB: with the default, the FFT-heavy clean is ~50 % slower inside workers
  because numpy's large temporaries are mapped and unmapped anew each time;
- ducc0 (``$SDPBATCH_THREADS``), OpenMP, OpenBLAS and MKL use the worker's threads, so the
  cores are not oversubscribed.
"""

from __future__ import annotations

import os

THREADS_ENV = "SDPBATCH_THREADS"
MALLOC_THRESHOLD = 2**26  # bytes
MALLOC_ENVIRONMENT = {
    "MALLOC_TRIM_THRESHOLD_": str(MALLOC_THRESHOLD),
    "MALLOC_MMAP_THRESHOLD_": str(MALLOC_THRESHOLD),
}
"""glibc settings, read once when a process starts: set before the worker process exists."""


def thread_environment(threads: int) -> dict[str, str]:
    """The variables that size the thread pools of numerical code to ``threads``."""
    value = str(int(threads))
    return {
        THREADS_ENV: value,
        "OMP_NUM_THREADS": value,
        "OPENBLAS_NUM_THREADS": value,
        "MKL_NUM_THREADS": value,
    }


def worker_process_environment(threads: int) -> dict[str, str]:
    """Everything to add to the environment of a worker process started as a command
    (``dask worker``): its nanny passes the malloc settings on to the worker it spawns."""
    return {**MALLOC_ENVIRONMENT, **thread_environment(threads)}


def nanny_config() -> dict[str, int]:
    """The Dask configuration that gives the workers a nanny spawns the malloc settings
    (for ``dask.config.set`` around a LocalCluster)."""
    return {
        f"distributed.nanny.pre-spawn-environ.{name}": int(value)
        for name, value in MALLOC_ENVIRONMENT.items()
    }


def worker_threads() -> int:
    """Threads that numerical code in this process may use (ducc0 ``nthreads``)."""
    try:
        return max(1, int(os.environ.get(THREADS_ENV, "1")))
    except ValueError:
        return 1


def set_worker_threads(threads: int) -> None:
    """Size this process's thread pools (run on the workers of an existing cluster)."""
    os.environ.update(thread_environment(threads))
