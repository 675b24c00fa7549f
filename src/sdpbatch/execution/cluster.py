"""Where the Dask work runs: the one place that chooses the cluster.

By default a ``LocalCluster`` of ``n_workers`` worker processes on loopback is started for the
run and closed after it; with a scheduler address (argument, or ``$SDPBATCH_SCHEDULER``) an
existing cluster of any size is used and left running.  The workers get the one worker
environment (:mod:`sdpbatch.execution.worker_environment`): ``threads_per_worker`` threads for
ducc0 and BLAS, and the malloc settings.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator

import dask
from distributed import Client, LocalCluster

from sdpbatch.execution.runner import InProcess, OnDask, Runner, dask_slots, describe_slots
from sdpbatch.execution.worker_environment import (
    THREADS_ENV,
    nanny_config,
    set_worker_threads,
    thread_environment,
    worker_threads,
)
from sdpbatch.vocabulary import LOOPBACK

LOG = logging.getLogger(__name__)
SCHEDULER_ENV = "SDPBATCH_SCHEDULER"
__all__ = ["SCHEDULER_ENV", "THREADS_ENV", "dask_client", "worker_threads"]


@contextlib.contextmanager
def dask_client(
    n_workers: int,
    *,
    threads_per_worker: int = 1,
    scheduler: str | None = None,
    memory_limit: str | int = "auto",
) -> Iterator[Client]:
    """A connected Dask client for one run.

    Parameters
    ----------
    n_workers : worker processes of the LocalCluster (ignored with ``scheduler``).
    threads_per_worker : Dask threads per worker, also the ducc0/BLAS threads of its tasks.
    scheduler : address of an existing scheduler, e.g. ``tcp://127.0.0.1:8786``; default
        ``$SDPBATCH_SCHEDULER``, else a new LocalCluster.
    memory_limit : per-worker memory limit of the LocalCluster.
    """
    scheduler = scheduler or os.environ.get(SCHEDULER_ENV) or None
    if logging.getLogger().getEffectiveLevel() > logging.DEBUG:
        logging.getLogger("distributed").setLevel(logging.WARNING)  # its INFO chatter is noise
    if scheduler:
        with _existing_cluster(scheduler, threads_per_worker=threads_per_worker) as client:
            yield client
    else:
        with _local_cluster(
            n_workers, threads_per_worker=threads_per_worker, memory_limit=memory_limit
        ) as client:
            yield client


@contextlib.contextmanager
def _existing_cluster(scheduler: str, *, threads_per_worker: int) -> Iterator[Client]:
    """A client of the running scheduler at ``scheduler``, its workers' threads set; the
    cluster is left running."""
    client = Client(scheduler, timeout="30s")
    try:
        client.run(set_worker_threads, threads_per_worker)
        LOG.info(
            "Connected to Dask scheduler %s (dashboard %s): %s",
            scheduler,
            client.dashboard_link,
            describe_slots(dask_slots(client)),
        )
        yield client
    finally:
        client.close()


@contextlib.contextmanager
def _local_cluster(
    n_workers: int, *, threads_per_worker: int, memory_limit: str | int
) -> Iterator[Client]:
    """A LocalCluster of ``n_workers`` processes on loopback for the run, and its client; the
    workers inherit the thread variables and the nanny's settings of the worker environment."""
    with (
        _environment(thread_environment(threads_per_worker)),
        dask.config.set(nanny_config()),
        LocalCluster(
            n_workers=n_workers,
            threads_per_worker=threads_per_worker,
            processes=True,
            host=LOOPBACK,
            dashboard_address=f"{LOOPBACK}:0",
            memory_limit=memory_limit,
            silence_logs=logging.WARNING,
        ) as cluster,
        Client(cluster) as client,
    ):
        LOG.info(
            "Started Dask LocalCluster: %s, scheduler %s, dashboard %s",
            describe_slots(dask_slots(client)),
            cluster.scheduler_address,
            client.dashboard_link,
        )
        yield client


@contextlib.contextmanager
def _environment(values: dict[str, str]) -> Iterator[None]:
    """``os.environ`` with ``values`` set (inherited by the processes started meanwhile), then
    as it was."""
    previous = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, value in previous.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


@contextlib.contextmanager
def open_runner(
    n_workers: int, *, threads_per_worker: int = 1, scheduler: str | None = None
) -> Iterator[Runner]:
    """The runner of one run: this process for one worker and no scheduler, else Dask.

    Parameters
    ----------
    n_workers : worker processes (1 with no scheduler: run in this process, no cluster).
    threads_per_worker : threads of each worker (in-process: the threads of the tasks).
    scheduler : address of an existing scheduler (default ``$SDPBATCH_SCHEDULER``).
    """
    scheduler = scheduler or os.environ.get(SCHEDULER_ENV) or None
    if n_workers == 1 and not scheduler:
        yield InProcess(threads_per_worker)
        return
    with dask_client(
        n_workers, threads_per_worker=threads_per_worker, scheduler=scheduler
    ) as client:
        yield OnDask(client)
