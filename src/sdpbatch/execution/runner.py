"""Where tasks run: in this process, or on a Dask cluster, behind one small interface.

The pipelines (simulation, ICAL) are written once against :class:`Runner`: they ``submit``
functions (optionally pinned to a worker slot), ``gather`` or ``wait`` for their results, and
``run_everywhere`` for housekeeping.  :class:`InProcess` runs each task at once and its handles
are the values; :class:`OnDask` submits to a ``distributed.Client``, its handles are futures.
:func:`sdpbatch.execution.cluster.open_runner` chooses one for a run.
"""

from __future__ import annotations

import logging
import os
import uuid
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any, Protocol

from sdpbatch.vocabulary import LOOPBACK

LOG = logging.getLogger(__name__)


@dataclass(frozen=True)
class WorkerSlot:
    """One worker: its address (empty in-process), host, and threads."""

    address: str
    host: str
    nthreads: int


class Runner(Protocol):
    """Runs tasks and hands back their results."""

    slots: list[WorkerSlot]
    """The workers tasks can be pinned to (one in-process)."""

    def submit(self, fn: Callable, *args: Any, key: str, slot: int | None = None) -> Any:
        """Run ``fn(*args)``; ``args`` may be handles of earlier tasks.  ``slot``: the worker
        (index into :attr:`slots`, taken modulo their number) it should preferably run on."""

    def gather(self, handles: Any) -> Any:
        """The values of a handle or a (nested) list of handles."""

    def wait(self, handles: Any) -> None:
        """Return once the tasks behind ``handles`` are done."""

    def as_completed(self, handles: list[Any]) -> Iterator[Any]:
        """The values of ``handles`` in the order they complete."""

    def scatter(self, value: Any) -> Any:
        """A handle of ``value`` available to every worker (sent once)."""

    def run_everywhere(self, fn: Callable, *args: Any) -> None:
        """Run ``fn(*args)`` once on every worker process (housekeeping; errors are logged)."""

    def host_threads(self) -> int:
        """Threads available on the host of slot 0 (a task that runs alone may use them all)."""


class InProcess:
    """Runs every task at once in this process; handles are the values."""

    def __init__(self, nthreads: int = 1):
        self.slots = [WorkerSlot("", LOOPBACK, max(1, int(nthreads)))]

    def submit(self, fn: Callable, *args: Any, key: str, slot: int | None = None) -> Any:
        return fn(*args)

    def gather(self, handles: Any) -> Any:
        return handles

    def wait(self, handles: Any) -> None:
        pass

    def as_completed(self, handles: list[Any]) -> Iterator[Any]:
        yield from handles

    def scatter(self, value: Any) -> Any:
        return value

    def run_everywhere(self, fn: Callable, *args: Any) -> None:
        fn(*args)

    def host_threads(self) -> int:
        return self.slots[0].nthreads


class OnDask:
    """Runs tasks on a Dask cluster through ``client``.

    A task pinned to a slot is restricted loosely (``allow_other_workers``): should that
    worker die, Dask recomputes what it held elsewhere from the tasks that made it.
    """

    def __init__(self, client):
        self.client = client
        self.slots = dask_slots(client)
        if not self.slots:
            raise RuntimeError("the Dask cluster has no workers")
        self.token = uuid.uuid4().hex[:8]

    def submit(self, fn: Callable, *args: Any, key: str, slot: int | None = None) -> Any:
        workers = None if slot is None else [self.slots[slot % len(self.slots)].address]
        return self.client.submit(
            fn,
            *args,
            key=f"{key}-{self.token}",
            workers=workers,
            allow_other_workers=workers is not None,
            pure=False,
        )

    def gather(self, handles: Any) -> Any:
        return self.client.gather(handles)

    def wait(self, handles: Any) -> None:
        from distributed import wait

        wait(handles)

    def as_completed(self, handles: list[Any]) -> Iterator[Any]:
        from distributed import as_completed

        for future in as_completed(handles):
            yield future.result()

    def scatter(self, value: Any) -> Any:
        return self.client.scatter(value, broadcast=True)

    def run_everywhere(self, fn: Callable, *args: Any) -> None:
        try:
            self.client.run(fn, *args)
        except Exception as exc:  # noqa: BLE001 - housekeeping must not hide the result
            LOG.warning("could not run %s on the workers: %s", fn.__name__, exc)

    def host_threads(self) -> int:
        """The Dask threads of slot 0's host, at most the cores of that host."""
        host = self.slots[0].host
        threads = sum(s.nthreads for s in self.slots if s.host == host)
        try:  # a worker lost meanwhile must not fail the run: then its threads are the guess
            cores = self.client.run(os.cpu_count, workers=[self.slots[0].address])
            return max(1, min(threads, next(iter(cores.values())) or threads))
        except Exception as exc:  # noqa: BLE001
            LOG.warning("could not ask worker %s for its cores: %s", self.slots[0].address, exc)
            return max(1, threads)


def workers_on_host(slots: Iterable[WorkerSlot], host: str) -> int:
    """How many of ``slots`` run on ``host``."""
    return sum(1 for s in slots if s.host == host)


def runner_record(runner: Runner) -> dict[str, Any]:
    """Where a run ran, for its provenance: the kind of runner and its workers."""
    kind = "dask" if isinstance(runner, OnDask) else "in-process"
    workers = [{"host": s.host, "threads": s.nthreads} for s in runner.slots]
    record: dict[str, Any] = {"kind": kind, "workers": workers}
    if isinstance(runner, OnDask):
        record["scheduler"] = runner.client.scheduler.address
    return record


def dask_slots(client) -> list[WorkerSlot]:
    """The workers of ``client``'s cluster as the scheduler knows them, by address."""
    info = client.scheduler_info()["workers"]
    return [WorkerSlot(a, info[a]["host"], int(info[a]["nthreads"])) for a in sorted(info)]


def describe_slots(slots: list[WorkerSlot]) -> str:
    """Where tasks run, for a log line: ``4 worker(s) x 1 thread(s)``, ``this process x 2
    thread(s)``, or ``3 worker(s) x 1 to 2 thread(s)`` when they differ."""
    counts = sorted({s.nthreads for s in slots})
    threads = f"{counts[0]}" if len(counts) == 1 else f"{counts[0]} to {counts[-1]}"
    where = "this process" if [s.address for s in slots] == [""] else f"{len(slots)} worker(s)"
    return f"{where} x {threads} thread(s)"
