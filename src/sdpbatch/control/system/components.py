"""The processes of the system on this machine and how each is started.

:data:`STARTERS` starts each component in the background as its own process, with its log
under ``DATA/logs/``, records it in the state (saved at once) and waits until it answers:
etcd (data in ``DATA/etcd``), the Tango database (SQLite file ``DATA/tango/tango_database.db``),
the subarray device server (``mid_sdp/elt/subarray_1`` and ``_2``), the processing controller,
the deployer (buffers under ``DATA``) and the read-only web page.  ``up`` calls them in order;
the supervisor (:mod:`.supervisor`) calls the same function to restart a component that exits.
A component that fails to start is reported with the cause it gave in its log
(:mod:`.logcause`).
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path

from sdpbatch.control.configdb import Config
from sdpbatch.control.engines import EngineSpec
from sdpbatch.control.system.data_root import Layout
from sdpbatch.control.system.etcd_server import start_etcd, wait_healthy
from sdpbatch.control.system.logcause import failure_cause
from sdpbatch.control.system.processes import ProcessRecord, start_process
from sdpbatch.control.system.state import HOST, WEB_URL_ENV, SystemControlError, SystemState

SUBARRAY_DEVICES = ("mid_sdp/elt/subarray_1", "mid_sdp/elt/subarray_2")
SUBARRAY_SERVER = "SDPSubarray/1"
SUBARRAY_CLASS = "SDPSubarray"
START_TIMEOUT = 60.0  # s, for each component to come up


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
        if not record.alive():
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


def _started(state: SystemState, record: ProcessRecord) -> ProcessRecord:
    """Record a just-started process in the state file, before waiting for it."""
    state.record(record)
    state.save()
    return record


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
    _started(state, record)
    _wait_for(
        "etcd",
        record,
        lambda: wait_healthy(HOST, state.ports["etcd_client"], timeout=2) is None,
    )
    return record


def _start_tango_database(state: SystemState, layout: Layout) -> ProcessRecord:
    import tango

    port = state.ports["tango_db"]
    layout.tango.mkdir(parents=True, exist_ok=True)
    db_file = layout.tango_db_file.resolve()
    command = [sys.executable, "-m", "tango.databaseds.database", "--host", HOST]
    record = start_process(
        "tango-database",
        [*command, "--port", str(port), "2"],
        log_path=layout.logs / "tango-database.log",
        env={**state.child_env, "PYTANGO_DATABASE_NAME": str(db_file)},
        cwd=layout.tango,
    )
    _started(state, record)

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


def _start_subarray_server(state: SystemState, layout: Layout) -> ProcessRecord:
    import tango

    record = start_process(
        "subarray-server",
        [sys.executable, "-m", "sdpbatch.control.subarray.server", "1"],
        log_path=layout.logs / "subarray-server.log",
        env=state.child_env,
        cwd=layout.data_dir,
    )
    _started(state, record)

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
    _started(state, record)
    end = time.monotonic() + 1.5
    while time.monotonic() < end:
        if not record.alive():
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

COMPONENTS = tuple(STARTERS)
"""The processes of a running system, in start order."""


# ----------------------------------------------------------------------------------------------
# what ``up`` does once, between and after the components
# ----------------------------------------------------------------------------------------------


def system_config(state: SystemState) -> Config:
    """The configuration database of the system, for ``up`` and its clients: each call rides
    out a short unavailability (up to :data:`START_TIMEOUT` s), as the components' calls do."""
    return Config("etcd3", host=HOST, port=state.ports["etcd_client"], patience=START_TIMEOUT)


def choose_engine(state: SystemState, engine: EngineSpec | None) -> None:
    """Record ``engine`` (None: keep the recorded one) and check that it answers (etcd runs)."""
    from sdpbatch.control import engines

    with system_config(state) as config:
        spec = engine or engines.load_engine_spec(config)
        try:
            engines.make_engine(spec, state.data_dir).capacity()
        except engines.EngineError as err:
            raise SystemControlError(f"engine {spec.describe()}: {err}") from None
        engines.record_engine(config, spec)


def register_devices(state: SystemState) -> None:
    """Register the subarray devices in the Tango database (which runs)."""
    import tango

    db = tango.Database(HOST, state.ports["tango_db"])
    for name in SUBARRAY_DEVICES:
        info = tango.DbDevInfo()
        info.server = SUBARRAY_SERVER
        info._class = SUBARRAY_CLASS
        info.name = name
        db.add_device(info)


def start_all(state: SystemState, layout: Layout, engine: EngineSpec | None) -> None:
    """Start every component in order, with what ``up`` does once between them (the engine
    once etcd runs, the devices once the Tango database runs); run by the supervisor."""
    for name, start in STARTERS.items():
        start(state, layout)
        if name == "etcd":
            choose_engine(state, engine)
        elif name == "tango-database":
            register_devices(state)


def start_supervisor(state: SystemState, layout: Layout, engine: EngineSpec | None) -> str:
    """Start the supervisor, which starts the components (so it is their parent and sees how
    each exits, e.g. killed by a signal), then keeps them running; wait for its report.

    Returns "" once every component is up, else why not (the supervisor has then exited).
    It records itself in the state file; its record is also returned in ``state.supervisor``.
    """
    read_fd, write_fd = os.pipe()
    command = [sys.executable, "-m", "sdpbatch.control.system.supervisor", str(state.data_dir)]
    command += ["--report-fd", str(write_fd)]
    if engine is not None:
        command += ["--engine", json.dumps(engine.to_dict())]
    try:
        state.supervisor = start_process(
            "supervisor",
            command,
            log_path=layout.logs / "supervisor.log",
            env=state.child_env,
            cwd=layout.data_dir,
            pass_fds=(write_fd,),
        )
    finally:
        os.close(write_fd)
    with os.fdopen(read_fd) as report:
        line = report.readline()
    if not line:  # it died before reporting
        log = state.supervisor.log_path
        return f"the supervisor exited while starting the components; log {log}:\n{_log_tail(log)}"
    return str(json.loads(line).get("error", ""))
