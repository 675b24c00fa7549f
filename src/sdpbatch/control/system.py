"""The whole system on this machine: ``sdpbatch up`` / ``down`` / status.

``up`` starts, each in the background as its own process (logs under ``DATA/logs/``):
etcd (data in ``DATA/etcd``), the Tango database (SQLite file ``DATA/tango/tango_database.db``),
the subarray device server (``mid_sdp/elt/subarray_1`` and ``_2``), the processing controller,
the deployer (buffers under ``DATA``) and the read-only web page (``sdpbatch web``, its address
exported as ``SDPBATCH_WEB_URL``), then a supervisor (:mod:`.supervisor`) that restarts any of
them that exits, with back-off, as Kubernetes restarts a pod.  The execution engine chosen with
``engine`` (``--engine``) is checked to answer once etcd runs, before the other components
start, and recorded in the configuration database; without one, the engine recorded by the last
``up`` stays (``local`` at first).  Every process is recorded in ``DATA/system.json`` (written
atomically after each start or restart, with the restart counts) so ``status`` and ``down`` know
the current pids; ``down`` stops the supervisor, marks the blocks still going FAILED "stopped by
sdpbatch down", then stops the processes by id, in reverse order.  All data stays in ``DATA``,
so ``down`` then ``up`` continues where it stopped; the ports of the last run are reused when
free, so the printed environment stays the same.  A component that fails to start is reported
with the cause it gave in its log (:mod:`.logcause`), and ``up`` first checks the data root has
the space etcd needs.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

from sdpbatch.control.engines import EngineSpec
from sdpbatch.control.etcd_server import free_port, start_etcd, wait_healthy
from sdpbatch.control.logcause import failure_cause
from sdpbatch.control.processes import ProcessRecord, is_alive, start_process, stop_process
from sdpbatch.control.shutdown import end_blocks_and_stop_strays
from sdpbatch.io.atomic import atomic_path
from sdpbatch.io.space import check_space

LOG = logging.getLogger(__name__)

DATA_DIR_ENV = "SDPBATCH_DATA_DIR"
WEB_URL_ENV = "SDPBATCH_WEB_URL"
DEFAULT_DATA_DIR = "sdp-data"
STATE_FILE = "system.json"
RUN_ID_ENV = "SDPBATCH_SYSTEM_ID"
HOST = "127.0.0.1"
SUBARRAY_DEVICES = ("mid_sdp/elt/subarray_1", "mid_sdp/elt/subarray_2")
SUBARRAY_SERVER = "SDPSubarray/1"
SUBARRAY_CLASS = "SDPSubarray"
START_TIMEOUT = 60.0  # s, for each component to come up
ETCD_SPACE = 70 * 10**6  # bytes: etcd preallocates a 64 MB write-ahead log segment


class SystemControlError(RuntimeError):
    """The system could not be started or stopped; the text names the component and its log."""


class AlreadyUp(SystemControlError):
    """``up`` found the system of this data directory running."""


def default_data_dir() -> Path:
    """``$SDPBATCH_DATA_DIR``, else ``./sdp-data``."""
    return Path(os.environ.get(DATA_DIR_ENV) or DEFAULT_DATA_DIR)


@dataclass
class SystemState:
    """What ``DATA/system.json`` holds: ports, environment and the processes of this run."""

    data_dir: Path
    ports: dict[str, int] = field(default_factory=dict)
    processes: list[ProcessRecord] = field(default_factory=list)
    running: bool = False
    started: float = 0.0
    run_id: str = ""  # marks every process of this run (env SDPBATCH_SYSTEM_ID), see down()
    restarts: dict[str, int] = field(default_factory=dict)  # by the supervisor, per component
    exits: dict[str, str] = field(default_factory=dict)  # the last exit cause per component
    supervisor: ProcessRecord | None = None

    def record(self, record: ProcessRecord) -> None:
        """Add a started process, replacing the earlier process of the same name."""
        names = [p.name for p in self.processes]
        if record.name in names:
            self.processes[names.index(record.name)] = record
        else:
            self.processes.append(record)

    @property
    def env(self) -> dict[str, str]:
        """The environment a client of this system needs."""
        if not self.ports:
            return {}
        env = {
            "TANGO_HOST": f"{HOST}:{self.ports['tango_db']}",
            "SDP_CONFIG_HOST": HOST,
            "SDP_CONFIG_PORT": str(self.ports["etcd_client"]),
            "SDP_CONFIG_BACKEND": "etcd3",
            DATA_DIR_ENV: str(self.data_dir),
        }
        if "web" in self.ports:
            env[WEB_URL_ENV] = f"http://{HOST}:{self.ports['web']}/"
        return env

    @property
    def child_env(self) -> dict[str, str]:
        """The client environment plus the run's marker, for the processes ``up`` starts."""
        return {**self.env, RUN_ID_ENV: self.run_id, "PYTHONUNBUFFERED": "1"}

    def to_dict(self) -> dict[str, Any]:
        return {
            "data_dir": str(self.data_dir),
            "running": self.running,
            "started": self.started,
            "run_id": self.run_id,
            "ports": self.ports,
            "env": self.env,
            "processes": [p.to_dict() for p in self.processes],
            "restarts": self.restarts,
            "exits": self.exits,
            "supervisor": self.supervisor.to_dict() if self.supervisor else None,
        }

    @classmethod
    def load(cls, data_dir: Path) -> SystemState | None:
        path = data_dir / STATE_FILE
        if not path.is_file():
            return None
        try:
            raw = json.loads(path.read_text())
            return cls(
                data_dir=data_dir,
                ports={k: int(v) for k, v in raw.get("ports", {}).items()},
                processes=[ProcessRecord.from_dict(p) for p in raw.get("processes", [])],
                running=bool(raw.get("running")),
                started=float(raw.get("started", 0.0)),
                run_id=str(raw.get("run_id", "")),
                restarts={k: int(v) for k, v in raw.get("restarts", {}).items()},
                exits={k: str(v) for k, v in raw.get("exits", {}).items()},
                supervisor=(
                    ProcessRecord.from_dict(raw["supervisor"]) if raw.get("supervisor") else None
                ),
            )
        except (ValueError, KeyError, TypeError) as err:
            raise SystemControlError(f"{path} is not a valid system state file: {err}") from err

    def save(self) -> None:
        with atomic_path(self.data_dir / STATE_FILE) as tmp:
            tmp.write_text(json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n")


@dataclass(frozen=True)
class Layout:
    """Where things live under the data root."""

    data_dir: Path

    @property
    def logs(self) -> Path:
        return self.data_dir / "logs"

    @property
    def etcd(self) -> Path:
        return self.data_dir / "etcd"

    @property
    def tango(self) -> Path:
        return self.data_dir / "tango"

    @property
    def tango_db_file(self) -> Path:
        return self.tango / "tango_database.db"


def _alive(record: ProcessRecord) -> bool:
    return is_alive(record.pid, started=record.started)


def _port_free(port: int) -> bool:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as servers do: TIME_WAIT is ok
        try:
            s.bind((HOST, port))
        except OSError:
            return False
        return True


def _choose_ports(previous: dict[str, int]) -> dict[str, int]:
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


def _log_tail(path: Path, lines: int = 15) -> str:
    try:
        text = path.read_text(errors="replace").splitlines()[-lines:]
    except OSError:
        return "(no log)"
    return "\n".join("    " + line for line in text)


def _died(what: str, record: ProcessRecord) -> SystemControlError:
    """A component exited while starting: the cause from its log in one line if it gave
    one, else the tail of the log."""
    cause = failure_cause(record.log_path)
    if cause:
        return SystemControlError(f"{what} exited during start-up: {cause} (log {record.log_path})")
    return SystemControlError(
        f"{what} exited during start-up; log {record.log_path}:\n{_log_tail(record.log_path)}"
    )


def _wait_for(
    what: str, record: ProcessRecord, ready: Callable[[], bool], timeout: float = START_TIMEOUT
) -> None:
    """Poll ``ready()`` until true; fail early if the process died."""
    end = time.monotonic() + timeout
    last = ""
    while time.monotonic() < end:
        if not _alive(record):
            raise _died(what, record)
        try:
            if ready():
                return
        except SystemControlError as err:
            raise SystemControlError(
                f"{what}: {err}; log {record.log_path}:\n{_log_tail(record.log_path)}"
            ) from None
        except Exception as err:  # noqa: BLE001 - not ready yet
            last = str(err).strip().splitlines()[0] if str(err).strip() else repr(err)
        time.sleep(0.2)
    raise SystemControlError(
        f"{what} not ready after {timeout:.0f} s ({last}); log {record.log_path}:\n"
        f"{_log_tail(record.log_path)}"
    )


# ----------------------------------------------------------------------------------------------
# the components, in start order
# ----------------------------------------------------------------------------------------------


def _start_etcd(state: SystemState, layout: Layout) -> ProcessRecord:
    record = start_etcd(
        layout.etcd,
        client_port=state.ports["etcd_client"],
        peer_port=state.ports["etcd_peer"],
        log_path=layout.logs / "etcd.log",
    )
    state.record(record)
    state.save()
    _wait_for(
        "etcd",
        record,
        lambda: wait_healthy(HOST, state.ports["etcd_client"], timeout=2) is None,
    )
    return record


def _choose_engine(state: SystemState, engine: EngineSpec | None) -> None:
    """Record ``engine`` (None: keep the recorded one) and check that it answers."""
    from sdpbatch.control import engines
    from sdpbatch.control.configdb import Config

    with Config("etcd3", host=HOST, port=state.ports["etcd_client"]) as config:
        spec = engine or engines.load_engine_spec(config)
        try:
            engines.make_engine(spec, state.data_dir).capacity()
        except engines.EngineError as err:
            raise SystemControlError(f"engine {spec.describe()}: {err}") from None
        engines.record_engine(config, spec)


def _start_tango_database(state: SystemState, layout: Layout) -> ProcessRecord:
    import tango

    port = state.ports["tango_db"]
    layout.tango.mkdir(parents=True, exist_ok=True)
    db_file = layout.tango_db_file.resolve()
    record = start_process(
        "tango-database",
        [
            sys.executable,
            "-m",
            "tango.databaseds.database",
            "--host",
            HOST,
            "--port",
            str(port),
            "2",
        ],
        log_path=layout.logs / "tango-database.log",
        env={**state.child_env, "PYTANGO_DATABASE_NAME": str(db_file)},
        cwd=layout.tango,
    )
    state.record(record)
    state.save()

    def ours() -> bool:
        # the database exits 0 with a bind error if the port is taken: check it serves OUR file
        info = tango.Database(HOST, port).get_info()
        if str(db_file) not in info:
            raise SystemControlError(
                f"the Tango database on port {port} is not ours (it serves "
                f"{info.splitlines()[0] if info else '?'})"
            )
        return True

    _wait_for("Tango database", record, ours)
    return record


def _register_devices(state: SystemState) -> None:
    import tango

    db = tango.Database(HOST, state.ports["tango_db"])
    for name in SUBARRAY_DEVICES:
        info = tango.DbDevInfo()
        info.server = SUBARRAY_SERVER
        info._class = SUBARRAY_CLASS
        info.name = name
        db.add_device(info)


def _start_subarray_server(state: SystemState, layout: Layout) -> ProcessRecord:
    import tango

    record = start_process(
        "subarray-server",
        [sys.executable, "-m", "sdpbatch.control.subarray.server", "1"],
        log_path=layout.logs / "subarray-server.log",
        env=state.child_env,
        cwd=layout.data_dir,
    )
    state.record(record)
    state.save()

    def ready() -> bool:
        for name in SUBARRAY_DEVICES:
            tango.DeviceProxy(f"tango://{state.env['TANGO_HOST']}/{name}").ping()
        return True

    _wait_for("subarray device server", record, ready)
    return record


def _start_cli_component(
    state: SystemState, layout: Layout, name: str, args: list[str]
) -> ProcessRecord:
    """Start ``sdpbatch <args>`` (controller, deployer) and check it stays up for a moment."""
    record = start_process(
        name,
        [sys.executable, "-m", "sdpbatch.cli", *args],
        log_path=layout.logs / f"{name}.log",
        env=state.child_env,
        cwd=layout.data_dir,
    )
    state.record(record)
    state.save()
    end = time.monotonic() + 1.5
    while time.monotonic() < end:
        if not _alive(record):
            raise _died(name, record)
        time.sleep(0.1)
    return record


def _start_web(state: SystemState, layout: Layout) -> ProcessRecord:
    """``sdpbatch web`` on loopback at the chosen port, ready when it answers /api/health."""
    from urllib.request import urlopen

    url = state.env[WEB_URL_ENV]
    args = ["web", "--data-dir", str(layout.data_dir), "--host", HOST]
    record = _start_cli_component(state, layout, "web", [*args, "--port", str(state.ports["web"])])

    def ready() -> bool:
        with urlopen(f"{url}api/health", timeout=2) as response:
            return response.status == 200

    _wait_for("web server", record, ready)
    return record


def _start_controller(state: SystemState, layout: Layout) -> ProcessRecord:
    return _start_cli_component(state, layout, "controller", ["controller"])


def _start_deployer(state: SystemState, layout: Layout) -> ProcessRecord:
    return _start_cli_component(
        state, layout, "deployer", ["deployer", "--data-dir", str(state.data_dir)]
    )


STARTERS: dict[str, Callable[[SystemState, Layout], ProcessRecord]] = {
    "etcd": _start_etcd,
    "tango-database": _start_tango_database,
    "subarray-server": _start_subarray_server,
    "controller": _start_controller,
    "deployer": _start_deployer,
    "web": _start_web,
}
"""How each component is started (by ``up``) and restarted (by the supervisor)."""


def _start_supervisor(state: SystemState, layout: Layout) -> None:
    state.supervisor = start_process(
        "supervisor",
        [sys.executable, "-m", "sdpbatch.control.supervisor", str(state.data_dir)],
        log_path=layout.logs / "supervisor.log",
        env=state.child_env,
        cwd=layout.data_dir,
    )
    state.save()


# ----------------------------------------------------------------------------------------------
# up, down, status
# ----------------------------------------------------------------------------------------------


def up(data_dir: Path | None = None, *, engine: EngineSpec | None = None) -> SystemState:
    """Start the whole system for ``data_dir`` in the background; return its state.

    Raises :class:`AlreadyUp` if it is running, :class:`SystemControlError` (after stopping what it
    had started) if a component does not come up or the data root lacks the space etcd needs.
    """
    data_dir = Path(data_dir or default_data_dir()).resolve()
    previous = SystemState.load(data_dir)
    if previous is not None and any(_alive(p) for p in previous.processes):
        raise AlreadyUp(
            f"the system of {data_dir} is already up ({_summary(previous)}); "
            f"'sdpbatch down --data-dir {data_dir}' stops it"
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
        ports=_choose_ports(previous.ports if previous else {}),
        running=True,
        run_id=uuid.uuid4().hex,
        started=time.time(),
    )
    state.save()
    try:
        for name, start in STARTERS.items():
            start(state, layout)
            if name == "etcd":
                _choose_engine(state, engine)
            elif name == "tango-database":
                _register_devices(state)
        _start_supervisor(state, layout)
    except BaseException:
        _stop_all(state)
        raise
    return state


def down(data_dir: Path | None = None, *, timeout: float = 20.0) -> list[str]:
    """Stop every process of ``data_dir``'s system, newest first; return what stopped.

    The supervisor goes first (it would restart the others); then the blocks still going
    are marked FAILED "stopped by sdpbatch down" while the database is up, and components
    registered in the database but started by hand are stopped.  The deployer stops the
    workflow and Dask processes it started when it gets SIGTERM, so it is stopped before the
    database it needs to find them.
    """
    data_dir = Path(data_dir or default_data_dir()).resolve()
    state = SystemState.load(data_dir)
    if state is None:
        return []
    stopped = []
    if state.supervisor is not None and stop_process(
        state.supervisor.pid, started=state.supervisor.started, timeout=timeout
    ):
        stopped.append("supervisor")
    state = SystemState.load(data_dir) or state  # as the supervisor last wrote it
    if state.ports and any(p.name == "etcd" and _alive(p) for p in state.processes):
        stopped += end_blocks_and_stop_strays(
            host=HOST,
            port=state.ports["etcd_client"],
            ours={p.pid for p in state.processes},
            timeout=timeout,
        )
    return stopped + _stop_all(state, timeout=timeout)


def _stop_all(state: SystemState, *, timeout: float = 20.0) -> list[str]:
    stopped = []
    for record in reversed(state.processes):
        if stop_process(record.pid, timeout=timeout, started=record.started):
            stopped.append(record.name)
    leftovers = _leftovers(state.run_id)
    for proc in leftovers:
        LOG.warning("stopping left-over process %d: %s", proc.pid, " ".join(proc.cmdline()))
        stopped.append(f"left-over pid {proc.pid}")
    _terminate(leftovers, timeout=timeout)
    left = [p for p in state.processes if _alive(p)]
    state.processes = left
    state.running = bool(left)
    state.supervisor = None
    state.save()
    if left:
        raise SystemControlError(f"could not stop: {_summary(state)}")
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


def _summary(state: SystemState) -> str:
    return ", ".join(f"{p.name} pid {p.pid}" for p in state.processes if _alive(p))


def services_status(data_dir: Path | None = None) -> dict[str, Any]:
    """The system of ``data_dir`` for ``sdpbatch status``: whether it is up, its processes
    (name, pid, alive, log), ports, environment and where logs are."""
    data_dir = Path(data_dir or default_data_dir()).resolve()
    state = SystemState.load(data_dir)
    layout = Layout(data_dir)
    if state is None:
        return {"data_dir": str(data_dir), "state": "never started", "processes": []}
    processes = [
        {
            "name": p.name,
            "pid": p.pid,
            "alive": _alive(p),
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
        else {"pid": supervisor.pid, "alive": _alive(supervisor)},
    }


COMPONENTS = tuple(STARTERS)
"""The processes of a running system, in start order."""


def export_lines(state: SystemState) -> list[str]:
    """``export NAME=value`` lines a user pastes (or evals) to talk to the system."""
    return [f"export {k}={v}" for k, v in state.env.items()]


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
