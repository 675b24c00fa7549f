"""``--engine scheduler=ADDRESS``: blocks run on an existing Dask cluster.

sdpbatch starts and stops nothing there: a ``dask`` deployment is the cluster's address,
checked to answer.  The resource model is what the scheduler reports: the threads and memory
of its workers and how many there are.  The workers must see the data root where the
deployer makes the buffers (a shared filesystem) and import sdpbatch.
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

from sdpbatch.control.engines.base import DaskRequest, EngineError, running_state
from sdpbatch.control.resources import Capacity

CONNECT_TIMEOUT = 5.0  # s


def normalise_address(address: str) -> str:
    """``tcp://host:port`` from ``tcp://host:port`` or ``host:port``; :class:`EngineError`
    for anything else."""
    from distributed.comm.addressing import parse_address, parse_host_port

    text = address.strip()
    if "://" not in text:
        text = f"tcp://{text}"
    try:
        scheme, location = parse_address(text, strict=True)
        host, port = parse_host_port(location)
    except (ValueError, TypeError) as err:
        raise EngineError(f"{address!r} is not a Dask scheduler address ({err})") from None
    if scheme != "tcp" or not host or not port:
        raise EngineError(
            f"{address!r} is not a Dask scheduler address: give tcp://HOST:PORT or HOST:PORT"
        )
    return f"tcp://{location}"


def scheduler_identity(address: str) -> dict:
    """What the scheduler at ``address`` says about itself and its workers."""
    from distributed.core import rpc

    timeout = CONNECT_TIMEOUT

    async def ask() -> dict:
        async with rpc(address, timeout=timeout) as scheduler:
            return await asyncio.wait_for(scheduler.identity(), timeout)

    try:
        return asyncio.run(ask())
    except (OSError, TimeoutError) as err:
        detail = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise EngineError(f"cannot reach the Dask scheduler at {address}: {detail}") from None


class SchedulerEngine:
    """An existing Dask cluster, reached through its scheduler."""

    kind = "scheduler"

    def __init__(self, address: str):
        self.address = normalise_address(address)

    @property
    def where(self) -> str:
        return f"the Dask cluster at {self.address}"

    def capacity(self) -> Capacity:
        workers = scheduler_identity(self.address).get("workers", {}).values()
        threads = sum(int(w.get("nthreads", 0)) for w in workers)
        limits = [int(w.get("memory_limit") or 0) for w in workers]
        memory = sys.maxsize if 0 in limits else sum(limits)  # 0: a worker without a limit
        return Capacity(
            cores=threads,
            threads=threads,
            memory_bytes=memory,
            where=self.where,
            note=f"the threads of its {len(limits)} workers",
            workers=len(limits),
        )

    def start(self, deploy_id: str, request: DaskRequest, *, log_path: Path) -> dict:
        identity = scheduler_identity(self.address)
        n_workers = len(identity.get("workers", {}))
        return running_state(self.address, identity, n_workers=n_workers, processes=[])

    def check(self, deploy_id: str, state: dict) -> dict | None:
        return None  # not ours to look after

    def stop(self, deploy_id: str, state: dict) -> None:
        pass  # nothing was started
