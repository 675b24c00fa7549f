"""The whole system on this machine: ``sdpbatch up`` / ``down`` / status.

``up`` starts a supervisor (:mod:`.supervisor`) in the background, which starts every
component (:mod:`.components`: etcd, the Tango database, the subarray device server, the
processing controller, the deployer and the web page), reports to ``up`` that they are up (or
why not), then restarts any of them that exits, with back-off, as Kubernetes restarts a pod;
being their parent, it knows how each ended (an exit status, or the signal that killed it).
The execution engine chosen with ``engine``
(``--engine``) is checked to answer once etcd runs, before the other components start, and
recorded in the configuration database; without one, the engine recorded by the last ``up``
stays (``local`` at first).  Every process is recorded in ``DATA/system.json``
(:mod:`.state`); ``down`` stops the supervisor, stops the workflows of the blocks still going
(each removes its Dask engine) and marks those blocks FAILED "stopped by sdpbatch down", then
stops the processes by id: those that use the databases together, then the Tango database,
then etcd.  All data stays
in ``DATA`` (:mod:`.data_root`), so ``down`` then ``up`` continues where it stopped; the ports
of the last run are reused when free, so the printed environment stays the same.  ``up`` first
checks the data root has the space etcd needs.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shlex
import socket
import time
import uuid
from pathlib import Path
from typing import Any

import psutil

from sdpbatch.control.engines import EngineSpec
from sdpbatch.control.system.components import (
    COMPONENTS,
    start_supervisor,
    system_config,
)
from sdpbatch.control.system.data_root import Layout, resolve_data_dir
from sdpbatch.control.system.etcd_server import free_port
from sdpbatch.control.system.processes import stop_process, stop_together
from sdpbatch.control.system.shutdown import end_blocks_and_stop_strays
from sdpbatch.control.system.state import HOST, RUN_ID_ENV, SystemControlError, SystemState
from sdpbatch.io.space import check_space

LOG = logging.getLogger(__name__)

DATABASES = ("etcd", "tango-database")  # stopped last, one after the other: the others use them
ETCD_SPACE = 70 * 10**6  # bytes: etcd preallocates a 64 MB write-ahead log segment


class AlreadyUp(SystemControlError):
    """``up`` found the system of this data directory running."""


def _port_free(port: int) -> bool:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as servers do: TIME_WAIT is ok
        try:
            s.bind((HOST, port))
        except OSError:
            return False
        return True


def choose_ports(previous: dict[str, int]) -> dict[str, int]:
    """The previous run's ports where still free (stable TANGO_HOST), else new free ones."""
    ports: dict[str, int] = {}
    for name in ("etcd_client", "etcd_peer", "tango_db", "web"):
        port = previous.get(name)
        if port is None or port in ports.values() or not _port_free(port):
            port = free_port(HOST)
            while port in ports.values():
                port = free_port(HOST)
        ports[name] = port
    return ports


# ----------------------------------------------------------------------------------------------
# up, down
# ----------------------------------------------------------------------------------------------


def up(data_dir: Path | None = None, *, engine: EngineSpec | None = None) -> SystemState:
    """Start the whole system for ``data_dir`` in the background; return its state.

    Raises :class:`AlreadyUp` if it is running, :class:`SystemControlError` (after stopping what it
    had started) if a component does not come up or the data root lacks the space etcd needs.
    """
    data_dir = resolve_data_dir(data_dir)
    previous = SystemState.load(data_dir)
    if previous is not None and any(p.alive() for p in previous.processes):
        raise AlreadyUp(
            f"the system of {data_dir} is already up ({previous.summary()}); "
            f"'{shlex.join(['sdpbatch', 'down', '--data-dir', str(data_dir)])}' stops it"
        )
    layout = Layout(data_dir)
    layout.logs.mkdir(parents=True, exist_ok=True)
    if not (layout.etcd / "member").is_dir():  # a new etcd preallocates its log
        try:
            check_space([(layout.etcd, ETCD_SPACE)])
        except OSError as err:
            raise SystemControlError(f"etcd cannot start: {err}") from None
    state = SystemState(
        data_dir=data_dir,
        ports=choose_ports(previous.ports if previous else {}),
        running=True,
        run_id=uuid.uuid4().hex,
        started=time.time(),
    )
    state.save()
    error = "interrupted"
    try:
        error = start_supervisor(state, layout, engine)
    finally:
        if error:
            _stop_started(state)
    if error:
        raise SystemControlError(error)
    return SystemState.load(data_dir) or state


def _stop_started(state: SystemState) -> None:
    """Stop what a failed or interrupted ``up`` started: the supervisor, then the rest."""
    if state.supervisor is not None:
        stop_process(state.supervisor.pid, started=state.supervisor.started)
    _stop_all(SystemState.load(state.data_dir) or state)


def down(data_dir: Path | None = None, *, timeout: float = 20.0) -> list[str]:
    """Stop every process of ``data_dir``'s system; return what stopped.

    The supervisor goes first (it would restart the others); then, while the database and the
    deployer run, the workflows of the blocks still going are stopped (each removes its Dask
    engine) and those blocks marked FAILED "stopped by sdpbatch down"
    (:mod:`.shutdown`), and components registered in the database but started by hand are
    stopped.  The deployer stops what is left of the processes it started when it gets
    SIGTERM, so it is stopped before the database it needs to find them.
    """
    data_dir = resolve_data_dir(data_dir)
    state = SystemState.load(data_dir)
    if state is None:
        return []
    stopped = []
    if state.supervisor is not None and stop_process(
        state.supervisor.pid, started=state.supervisor.started, timeout=timeout
    ):
        stopped.append("supervisor")
    state = SystemState.load(data_dir) or state  # as the supervisor last wrote it
    if state.ports and any(p.name == "etcd" and p.alive() for p in state.processes):
        stopped += end_blocks_and_stop_strays(
            host=HOST,
            port=state.ports["etcd_client"],
            ours={p.pid for p in state.processes},
            timeout=timeout,
        )
    return stopped + _stop_all(state, timeout=timeout)


def _stop_all(state: SystemState, *, timeout: float = 20.0) -> list[str]:
    """Stop the components: those that use the databases together, then the databases, the
    Tango database before etcd; then left-over processes of the run."""
    newest_first = list(reversed(state.processes))
    stopped = stop_together([r for r in newest_first if r.name not in DATABASES], timeout=timeout)
    for record in (r for r in newest_first if r.name in DATABASES):
        if stop_process(record.pid, timeout=timeout, started=record.started):
            stopped.append(record.name)
    leftovers = _leftovers(state.run_id)
    for proc in leftovers:
        LOG.warning("stopping left-over process %d: %s", proc.pid, " ".join(proc.cmdline()))
        stopped.append(f"left-over pid {proc.pid}")
    _terminate(leftovers, timeout=timeout)
    left = [p for p in state.processes if p.alive()]
    state.processes = left
    state.running = bool(left)
    state.supervisor = None
    state.save()
    if left:
        raise SystemControlError(f"could not stop: {state.summary()}")
    return stopped


def _leftovers(run_id: str) -> list[psutil.Process]:
    """Live processes that carry this run's marker (e.g. a Dask worker of a killed deployer)."""
    if not run_id:
        return []
    found = []
    for proc in psutil.process_iter(["pid", "status"]):
        try:
            if proc.pid == os.getpid() or proc.info["status"] == psutil.STATUS_ZOMBIE:
                continue
            if proc.environ().get(RUN_ID_ENV) == run_id:
                found.append(proc)
        except psutil.Error:
            continue
    return found


def _terminate(procs: list[psutil.Process], *, timeout: float) -> None:
    """SIGTERM, then SIGKILL what is still there after ``timeout`` s (no group needed)."""
    for proc in procs:
        with contextlib.suppress(psutil.Error):
            proc.terminate()
    _, alive = psutil.wait_procs(procs, timeout=timeout)
    for proc in alive:
        with contextlib.suppress(psutil.Error):
            proc.kill()
    psutil.wait_procs(alive, timeout=5)


# ----------------------------------------------------------------------------------------------
# status
# ----------------------------------------------------------------------------------------------


def services_status(data_dir: Path | None = None) -> dict[str, Any]:
    """The system of ``data_dir`` for ``sdpbatch status``: whether it is up, its processes
    (name, pid, alive, log), ports, environment and where logs are."""
    data_dir = resolve_data_dir(data_dir)
    state = SystemState.load(data_dir)
    layout = Layout(data_dir)
    if state is None:
        return {"data_dir": str(data_dir), "state": "never started", "processes": []}
    processes = [
        {
            "name": p.name,
            "pid": p.pid,
            "alive": p.alive(),
            "log": str(p.log_path),
            "restarts": state.restarts.get(p.name, 0),
            "last_exit": state.exits.get(p.name),
        }
        for p in state.processes
    ]
    supervisor = state.supervisor
    alive = sum(p["alive"] for p in processes)
    if not processes or alive == 0:
        status = "down"
    elif alive == len(processes) == len(COMPONENTS):
        status = "up"
    else:
        status = "degraded"
    return {
        "data_dir": str(data_dir),
        "state": status,
        "processes": processes,
        "ports": state.ports,
        "env": state.env,
        "logs": str(layout.logs),
        "tango_database": str(layout.tango_db_file),
        "supervisor": None
        if supervisor is None
        else {"pid": supervisor.pid, "alive": supervisor.alive()},
    }


def engine_line(state: SystemState) -> str:
    """The recorded engine and its size, for the summary ``up`` prints; the database is
    opened with the components' patience (:func:`.components.system_config`)."""
    from sdpbatch.control.engines import engine_status

    with system_config(state) as config:
        engine = engine_status(config)
    capacity = engine.get("capacity")
    size = f": {capacity['threads']} worker threads" if capacity else f" ({engine.get('error')})"
    return f"{engine['description']}{size}"


def format_services(services: dict[str, Any]) -> str:
    """The services of ``sdpbatch up`` as a small table, for ``sdpbatch status``."""
    lines = [f"SERVICES ({services['state']}, data in {services['data_dir']})"]
    for p in services.get("processes", []):
        alive = "running" if p["alive"] else "stopped"
        restarts = f"{p.get('restarts', 0)} restarts"
        lines.append(f"  {p['name']:<18} {p['pid']:>8}  {alive:<8} {restarts:<11} {p['log']}")
        if p.get("last_exit") and p.get("restarts"):
            lines.append(f"  {'':<18} last exit: {p['last_exit']}")
    supervisor = services.get("supervisor")
    if supervisor:
        alive = "running" if supervisor["alive"] else "stopped"
        lines.append(f"  {'supervisor':<18} {supervisor['pid']:>8}  {alive:<8}")
    if services["state"] == "never started":
        lines.append("  (start them with: sdpbatch up)")
    return "\n".join(lines)
