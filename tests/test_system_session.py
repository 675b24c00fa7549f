"""The seed's iTango session, at reduced size, through the whole running system for real.

``sdpbatch up`` (a subprocess) starts etcd, the Tango database, the subarray devices, the
processing controller and the deployer; the test talks to ``mid_sdp/elt/subarray_1`` by its
plain name through ``TANGO_HOST``, as the seed did from iTango, watches the processing blocks
in the config DB, reads the batch workflow's log and products, and ``sdpbatch down`` must
leave no process behind.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
import tango

from sdpbatch.control.subarray.state_machine import ObsState
from system_fixture import *  # noqa: F403  (fixture system)
from system_fixture import exports, sdpbatch
from waiting import wait_until

pytestmark = pytest.mark.slow

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
SBI = json.loads((EXAMPLES / "sbi-small.json").read_text())
RT_PB, BATCH_PB = (pb["id"] for pb in SBI["processing_blocks"])
BATCH_PARAMS = SBI["processing_blocks"][1]["parameters"]
SEED_LOG_LINES = [
    f"INFO:batch_imaging:Claimed processing block {BATCH_PB}",
    "INFO:batch_imaging:Waiting for resources to be available",
    "INFO:batch_imaging:Resources are available",
    "INFO:batch_imaging:Creating buffer reservations",
    "INFO:batch_imaging:Deploying Dask EE",
    "INFO:batch_imaging:Running simulation pipeline",
    "INFO:batch_imaging:Running ICAL pipeline",
]
ROUNDS = 5  # of up/down in a loop
FITS = [f"ska_pipeline_ical_{kind}.fits" for kind in ("deconvolved", "residual", "restored")]


def ours(data_dir: Path) -> list[psutil.Process]:
    """Live processes started (directly or not) for this data root: they inherit its env."""
    found = []
    for proc in psutil.process_iter(["pid", "cmdline", "status"]):
        try:
            if proc.info["status"] == psutil.STATUS_ZOMBIE or proc.pid == os.getpid():
                continue
            inherited = proc.environ().get("SDPBATCH_DATA_DIR") == str(data_dir)
            if inherited or str(data_dir) in " ".join(proc.info["cmdline"] or []):
                found.append(proc)
        except psutil.Error:
            continue
    return found


def test_seed_session_through_tango(system):
    from sdpbatch.control.configdb import Config

    data_dir, env = system
    recorded = json.loads((data_dir / "system.json").read_text())["processes"]
    assert [p["name"] for p in recorded] == [
        "etcd",
        "tango-database",
        "subarray-server",
        "controller",
        "deployer",
        "web",
    ]
    assert "is already up" in sdpbatch("up", "--data-dir", str(data_dir), env=env)

    # the seed's session: a plain device name, resolved through our Tango database
    d = tango.DeviceProxy("mid_sdp/elt/subarray_1")
    assert str(data_dir / "tango" / "tango_database.db") in tango.Database().get_info()
    if d.state() == tango.DevState.OFF:
        d.On()
    d.AssignResources(json.dumps(SBI))
    assert d.obsState == ObsState.IDLE

    config = Config()

    def status(pb_id: str) -> str | None:
        for txn in config.txn():
            state = txn.get_pb_state(pb_id)
        return state and state["status"]

    def batch_state() -> dict:
        for txn in config.txn():
            return txn.get_pb_state(BATCH_PB) or {}

    try:
        wait_until(
            "real-time block RUNNING and batch block WAITING",
            lambda: (status(RT_PB), status(BATCH_PB)) == ("RUNNING", "WAITING"),
            timeout=60,
        )
        time.sleep(1.0)  # the batch block must stay held while the real-time one runs
        assert (status(RT_PB), status(BATCH_PB)) == ("RUNNING", "WAITING")
        assert not batch_state().get("resources_available")

        d.ReleaseResources()
        assert d.obsState == ObsState.EMPTY
        for txn in config.txn():
            assert txn.get_sbi(SBI["id"])["status"] == "FINISHED"
        wait_until("real-time block FINISHED", lambda: status(RT_PB) == "FINISHED", 30)
        wait_until(
            "batch block released",
            lambda: bool(batch_state().get("resources_available")),
            30,
        )
        wait_until(
            "batch block FINISHED",
            lambda: status(BATCH_PB) in ("FINISHED", "FAILED", "CANCELLED"),
            150,
        )
        assert status(BATCH_PB) == "FINISHED", batch_state()
    finally:
        config.close()

    # the workflow's log has the seed's lines in the seed's order
    logs = [p for p in (data_dir / "logs").rglob("*") if p.is_file() and BATCH_PB in p.read_text()]
    workflow_log = next((p for p in logs if SEED_LOG_LINES[0] in p.read_text()), None)
    assert workflow_log is not None, f"no log with {SEED_LOG_LINES[0]!r} in {logs}"
    lines = workflow_log.read_text().splitlines()
    positions = [
        next((i for i, line in enumerate(lines) if line == want), -1) for want in SEED_LOG_LINES
    ]
    assert -1 not in positions, f"missing seed lines in {workflow_log}:\n" + "\n".join(lines)
    assert positions == sorted(positions), "seed's log lines out of order"

    # products in the two buffers
    vis = next(data_dir.rglob(BATCH_PARAMS["buffer_vis"]))
    img = next(data_dir.rglob(BATCH_PARAMS["buffer_img"]))
    for i in range(BATCH_PARAMS["nfreqwin"]):
        assert (vis / f"ska_pipeline_simulation_vislist_{i}.ms" / "table.dat").is_file()
    for name in FITS:
        assert (img / name).is_file() and (img / name).stat().st_size > 0

    # down leaves nothing running, and the data stays
    printed = sdpbatch("down", "--data-dir", str(data_dir), env=env)
    assert "stopped" in printed
    for record in recorded:
        assert (
            not psutil.pid_exists(record["pid"])
            or psutil.Process(record["pid"]).status() == psutil.STATUS_ZOMBIE
        ), f"{record['name']} still running"
    left = ours(data_dir)
    assert not left, [" ".join(p.cmdline()) for p in left]
    assert (img / FITS[2]).is_file()
    assert (data_dir / "tango" / "tango_database.db").is_file()


def test_tango_database_on_a_taken_port_is_detected(tmp_path):
    """The pitfall: a second database on a taken port exits 0 after a bind error; ``up``
    must notice instead of talking to someone else's database."""
    from sdpbatch.control.system.components import STARTERS
    from sdpbatch.control.system.data_root import Layout
    from sdpbatch.control.system.lifecycle import choose_ports, down
    from sdpbatch.control.system.processes import stop_process
    from sdpbatch.control.system.state import SystemControlError, SystemState

    start_database = STARTERS["tango-database"]
    first = SystemState(tmp_path / "first", ports=choose_ports({}), run_id="t1")
    second = SystemState(tmp_path / "second", ports=dict(first.ports), run_id="t2")
    for state in (first, second):
        Layout(state.data_dir).logs.mkdir(parents=True)
    record = start_database(first, Layout(first.data_dir))
    try:
        with pytest.raises(SystemControlError) as err:
            start_database(second, Layout(second.data_dir))
        assert "Tango database" in str(err.value)
        assert str(second.data_dir / "logs" / "tango-database.log") in str(err.value)
        down(second.data_dir)  # only what the second system started goes
        assert not [p for p in second.processes if p.alive()]
        assert record.alive()  # someone else's database is left alone
    finally:
        stop_process(record.pid, started=record.started)


def _system_json(data_dir: Path) -> dict:
    return json.loads((data_dir / "system.json").read_text())


def _pid_of(data_dir: Path, name: str) -> int:
    return next(p["pid"] for p in _system_json(data_dir)["processes"] if p["name"] == name)


def _alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def test_up_supervises_its_components_and_down_says_why(system):
    """Components killed outright are restarted (counted in status); etcd killed: the
    subarray reports FAILED, then OK; a controller started by hand is known and stopped by
    down; the block down interrupts says 'stopped by sdpbatch down'."""
    import signal

    from sdpbatch.control.configdb import Config
    from sdpbatch.control.subarray.state_machine import HealthState

    data_dir, env = system
    sbi = {**SBI, "processing_blocks": [SBI["processing_blocks"][0]]}  # the real-time block
    d = tango.DeviceProxy(f"tango://{env['TANGO_HOST']}/mid_sdp/elt/subarray_1")
    wait_until("health OK", lambda: d.healthState == HealthState.OK, 30)
    d.AssignResources(json.dumps(sbi))

    def status(pb_id: str) -> dict:
        with Config(patience=10) as config:
            for txn in config.txn():
                return txn.get_pb_state(pb_id) or {}

    wait_until("the block RUNNING", lambda: status(RT_PB).get("status") == "RUNNING", 60)
    settle = {}
    for name in ("controller", "etcd"):
        old = _pid_of(data_dir, name)
        os.kill(old, signal.SIGKILL)
        t0 = time.monotonic()
        if name == "etcd":
            wait_until("health FAILED", lambda: d.healthState == HealthState.FAILED, 20)
        wait_until(
            f"{name} restarted",
            lambda n=name, o=old: _pid_of(data_dir, n) != o and _alive(_pid_of(data_dir, n)),
            60,
        )
        wait_until("health OK", lambda: d.healthState == HealthState.OK, 60)
        settle[name] = time.monotonic() - t0
        assert _system_json(data_dir)["restarts"][name] == 1
    print(
        "\nsupervisor: controller back (health OK) "
        f"{settle['controller']:.1f} s after SIGKILL, etcd {settle['etcd']:.1f} s"
    )
    assert status(RT_PB)["status"] == "RUNNING"  # its workflow rode out the outage
    text = sdpbatch("status", "--data-dir", str(data_dir), env=env)
    assert "1 restarts" in text and f"{_pid_of(data_dir, 'controller')}" in text
    exits = _system_json(data_dir)["exits"]
    assert exits["controller"] == exits["etcd"] == "killed by SIGKILL", exits
    assert text.count("last exit: killed by SIGKILL") >= 2, text

    by_hand = subprocess.Popen(
        [sys.executable, "-m", "sdpbatch.cli", "controller"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    wait_until(
        "the hand-started controller in status",
        lambda: str(by_hand.pid) in sdpbatch("status", "--data-dir", str(data_dir), env=env),
        30,
    )
    printed = sdpbatch("down", "--data-dir", str(data_dir), env=env)
    assert f"controller pid {by_hand.pid} (started by hand)" in printed
    assert by_hand.wait(timeout=10) is not None
    left = ours(data_dir)
    assert not left, [" ".join(p.cmdline()) for p in left]
    sdpbatch("up", "--data-dir", str(data_dir), env=env)  # the database keeps the reason
    reason = status(RT_PB)
    assert reason["status"] == "FAILED" and reason["reason"] == "stopped by sdpbatch down"


SHELL_HOSTILE = "my data;touch PWNED $HOME `touch PWNED2` 'q' \"dq\" $(touch PWNED3)"


def test_exports_of_a_data_root_with_shell_characters_come_back_exact(tmp_path):
    """``eval "$(sdpbatch up)"`` in a real bash: the variables are the exact values, nothing
    in the path runs, and ``down`` with what was exported finds and stops the system."""
    data_dir = tmp_path / SHELL_HOSTILE
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SDP", "TANGO_HOST"))}
    up = [sys.executable, "-m", "sdpbatch.cli", "up", "--data-dir", str(data_dir)]
    printed = subprocess.run(up, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=180)
    try:
        assert printed.returncode == 0, printed.stdout + printed.stderr
        state = json.loads((data_dir / "system.json").read_text())
        shell = subprocess.run(
            ["bash", "-c", 'eval "$1"; env -0', "bash", printed.stdout],
            env=env, cwd=tmp_path, capture_output=True, text=True, timeout=30,
        )  # fmt: skip
        assert shell.returncode == 0, shell.stderr
        got = dict(item.split("=", 1) for item in shell.stdout.split("\0") if "=" in item)
        assert {k: got.get(k) for k in state["env"]} == state["env"]
        assert got["SDPBATCH_DATA_DIR"] == str(data_dir)
        assert not list(tmp_path.glob("PWNED*")), "a command in the data root's name ran"
        down = subprocess.run(
            ["bash", "-c", 'eval "$1"; exec "$2" -m sdpbatch.cli down', "bash",
             printed.stdout, sys.executable],
            env=env, cwd=tmp_path, capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        assert down.returncode == 0 and "stopped" in down.stdout, down.stdout + down.stderr
        assert not ours(data_dir), [" ".join(p.cmdline()) for p in ours(data_dir)]
    finally:
        subprocess.run(
            [*up[:3], "down", "--data-dir", str(data_dir)],
            env=env,
            capture_output=True,
            timeout=120,
        )


def test_down_during_a_run_ends_the_block_cleanly_and_quickly(system, tmp_path):
    """``down`` while a block RUNS on its Dask engine: the workflow ends on SIGTERM (one line,
    no traceback), its engine goes before the block is FAILED, and ``down`` takes seconds."""
    from sdpbatch.control.configdb import Config

    data_dir, env = system
    params = tmp_path / "hold.json"
    params.write_text(json.dumps({"n_workers": 1, "hold": 120}))
    pb_id = sdpbatch("process", "batch:test_dask:0.1.0", str(params), env=env).strip()
    log = data_dir / "logs" / f"proc-{pb_id}-workflow.log"
    config = Config(patience=10)
    events: list[tuple[int, str, str]] = []  # (revision, key, status or DELETE)

    def on_event(response) -> None:
        for event in getattr(response, "events", []):
            value = json.loads(event.value) if event.value else {}
            events.append((event.mod_revision, event.key.decode(), value.get("status", "DELETE")))

    try:
        wait_until("the engine held", lambda: "Holding the engine" in _text(log), 120)
        for txn in config.txn():
            engine = txn.get_deployment_state(f"proc-{pb_id}-dask")
            assert txn.get_pb_state(pb_id)["status"] == "RUNNING"
        engine_pids = [p["pid"] for p in engine["processes"]]
        client = config.backend.client
        client.add_watch_callback(f"/deploy/proc-{pb_id}-dask/state", on_event)
        client.add_watch_callback(f"/pb/{pb_id}/state", on_event)
        t0 = time.monotonic()
        printed = sdpbatch("down", "--data-dir", str(data_dir), env=env)
        took = time.monotonic() - t0
    finally:
        config.close()
    print(f"\ndown during a run took {took:.1f} s")
    assert took < 5.0, printed
    assert not [pid for pid in engine_pids if _alive(pid)], "the Dask engine outlived down"
    removed = next(r for r, key, what in events if key.startswith("/deploy/") and what == "DELETE")
    failed = next(r for r, key, what in events if key.startswith("/pb/") and what == "FAILED")
    assert removed < failed, events  # the engine went before the block was marked FAILED
    text = _text(log)
    assert "Traceback" not in text, text
    assert "Stopping: stopped by SIGTERM" in text, text
    sdpbatch("up", "--data-dir", str(data_dir), env=env)
    with Config(patience=10) as config:
        for txn in config.txn():
            state = txn.get_pb_state(pb_id)
    assert state["status"] == "FAILED" and state["reason"] == "stopped by sdpbatch down", state


def _text(path: Path) -> str:
    return path.read_text() if path.is_file() else ""


def test_up_and_down_again_and_again(tmp_path):
    """Every ``up`` of a loop of up/down exits 0 and prints the whole environment."""
    data_dir = tmp_path / "data"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SDP", "TANGO_HOST"))}
    t0 = time.monotonic()
    try:
        for _ in range(ROUNDS):
            printed = sdpbatch("up", "--data-dir", str(data_dir), env=env, timeout=120)
            assert "# engine:  local" in printed, printed
            assert set(exports(printed)) == set(_system_json(data_dir)["env"]), printed
            assert "stopped" in sdpbatch("down", "--data-dir", str(data_dir), env=env)
    finally:
        sdpbatch("down", "--data-dir", str(data_dir), env=env)
    print(f"\n{ROUNDS} rounds of up/down in {time.monotonic() - t0:.1f} s")
