"""What real operations do to the control plane, with real processes on loopback: etcd killed
and restarted during a run, the subarray's health while the database or the controller is
away, a deployer restarted after its blocks ended.  Each test prints the time the system took
to settle (``pytest -s`` shows them)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator

import psutil
import pytest

from etcd_fixture import *  # noqa: F403  (fixtures etcd_server, etcd_clean)
from etcd_fixture import PrivateEtcd
from sdpbatch.control.configdb import Config
from sdpbatch.control.deployer import DEPLOYMENT_ENV, ROOT_ENV
from sdpbatch.control.system.processes import is_alive, start_process, stop_process
from small_runs import SMALL_BATCH
from waiting import wait_until


@pytest.fixture
def etcd(tmp_path, monkeypatch) -> Iterator[PrivateEtcd]:
    server = PrivateEtcd(tmp_path)
    server.start()
    for key, value in server.env.items():
        monkeypatch.setenv(key, value)
    try:
        yield server
    finally:
        server.stop()


def block_processes(pb_id: str) -> list[psutil.Process]:
    """Live processes the deployer started for block ``pb_id`` (marked with their deployment)."""
    found = []
    for proc in psutil.process_iter(["status"]):
        try:
            marker = proc.environ().get(DEPLOYMENT_ENV, "")
            if marker.startswith(f"proc-{pb_id}-") and proc.info["status"] != "zombie":
                found.append(proc)
        except psutil.Error:
            continue
    return found


def pb_status(port: int, pb_id: str) -> dict:
    with Config("etcd3", port=port, patience=5) as config:
        for txn in config.txn():
            return txn.get_pb_state(pb_id) or {}


def cli(*args: str, env: dict) -> str:
    result = subprocess.run(
        [sys.executable, "-m", "sdpbatch.cli", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, **env},
    )
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


@pytest.fixture
def plane(etcd, tmp_path):
    env = {
        **etcd.env,
        "SDPBATCH_DATA_DIR": str(tmp_path / "data"),
        "SDPBATCH_WORKERS_PER_CORE": "2",
        "OMP_NUM_THREADS": "1",
    }
    command = [sys.executable, "-m", "sdpbatch.cli"]
    procs = {
        name: start_process(name, [*command, name], log_path=tmp_path / f"{name}.log", env=env)
        for name in ("controller", "deployer")
    }
    try:
        yield etcd, env, procs
    finally:
        for record in procs.values():
            stop_process(record.pid, timeout=20)


@pytest.mark.slow
def test_etcd_restarted_during_a_batch_run(plane, tmp_path):
    """etcd killed while the block runs and back 5 s later on the same data: the controller,
    deployer and workflow carry on; the block ends with its products and nothing of it stays."""
    etcd, env, procs = plane
    params = tmp_path / "params.json"
    params.write_text(json.dumps(SMALL_BATCH))
    pb_id = cli("process", "batch:batch_imaging:0.1.0", str(params), env=env)
    log = tmp_path / "data" / "logs" / f"proc-{pb_id}-workflow.log"
    wait_until(
        "the simulation to run",
        lambda: log.is_file() and "Running simulation pipeline" in log.read_text(),
        120,
    )
    etcd.kill()
    time.sleep(5.0)
    etcd.start()
    restarted = time.monotonic()
    wait_until(
        "the block to end",
        lambda: pb_status(etcd.port, pb_id).get("status") in ("FINISHED", "FAILED"),
        180,
    )
    ended = time.monotonic() - restarted
    state = pb_status(etcd.port, pb_id)
    assert state["status"] == "FINISHED", state
    wait_until("the block's processes to go", lambda: not block_processes(pb_id), 30)
    settled = time.monotonic() - restarted
    print(f"\netcd outage during a run: block FINISHED {ended:.1f} s after etcd was back, "
          f"its processes gone after {settled:.1f} s")  # fmt: skip
    assert all(is_alive(p.pid) for p in procs.values()), "a component did not survive"
    img = tmp_path / "data" / f"buff-{pb_id}-img"
    assert (img / "ska_pipeline_ical_restored.fits").is_file()
    assert not list((tmp_path / "data").rglob("*.partial-*"))
    # the controller and deployer still work: a new block runs through
    quick = tmp_path / "quick.json"
    quick.write_text(json.dumps({"n_workers": 1}))
    second = cli("process", "batch:test_dask:0.1.0", str(quick), env=env)
    wait_until(
        "a new block to finish",
        lambda: pb_status(etcd.port, second).get("status") == "FINISHED",
        90,
    )


def test_etcd_outage_without_a_run_then_new_blocks_start(plane, tmp_path):
    etcd, env, procs = plane
    etcd.kill()
    time.sleep(3.0)
    etcd.start()
    back = time.monotonic()
    quick = tmp_path / "quick.json"
    quick.write_text(json.dumps({"n_workers": 1}))
    pb_id = cli("process", "batch:test_dask:0.1.0", str(quick), env=env)
    wait_until("the new block to start", lambda: pb_status(etcd.port, pb_id), 30)
    started = time.monotonic() - back
    wait_until(
        "the new block to finish",
        lambda: pb_status(etcd.port, pb_id).get("status") == "FINISHED",
        90,
    )
    print(f"\nidle etcd outage: a new block had a state {started:.1f} s after etcd was back")
    assert all(is_alive(p.pid) for p in procs.values())


def _engine_running(config: Config, deploy_id: str) -> dict:
    for txn in config.txn():
        state = txn.get_deployment_state(deploy_id) or {}
        if state.get("status") != "RUNNING":
            txn.loop(wait=True, timeout=60)
    return state


def _stop_all(pids) -> None:
    for pid in pids:
        stop_process(pid, timeout=10)


def test_restarted_deployer_stops_what_belongs_to_ended_blocks(etcd_clean, tmp_path):
    """A deployer killed outright, its block ended meanwhile (controller away), an unrecorded
    process of a dead predecessor: the next deployer leaves nothing of them running.  The
    engine's workers have the one worker environment, as a LocalCluster's."""
    from distributed import Client

    from sdpbatch.execution.worker_environment import worker_process_environment

    host, port = etcd_clean
    env = {"SDP_CONFIG_HOST": host, "SDP_CONFIG_PORT": str(port), "SDP_CONFIG_BACKEND": "etcd3"}
    data = tmp_path / "data"
    command = [sys.executable, "-m", "sdpbatch.cli", "deployer", "--data-dir", str(data)]
    first = start_process("deployer-1", command, log_path=tmp_path / "d1.log", env=env)
    started = [first.pid]
    try:
        with Config("etcd3", host=host, port=port) as config:
            for txn in config.txn():
                txn.create_pb({"id": "pb-e", "workflow": {"type": "batch", "id": "test_dask",
                               "version": "0.1.0"}, "parameters": {}})  # fmt: skip
                txn.create_pb_state("pb-e", {"status": "RUNNING"})
                txn.create_deployment({"id": "proc-pb-e-dask", "type": "dask", "args": {}})
            state = _engine_running(config, "proc-pb-e-dask")
            pids = [p["pid"] for p in state["processes"]]
            started += pids
            with Client(state["scheduler_address"], timeout="30s") as client:
                names = list(worker_process_environment(1))
                client.wait_for_workers(1, timeout=60)
                seen = client.run(lambda: {k: os.environ.get(k) for k in names})
            assert list(seen.values()) == [worker_process_environment(1)]
            orphan = start_process(
                "orphan",
                [sys.executable, "-c", "import time; time.sleep(300)"],
                log_path=tmp_path / "orphan.log",
                env={DEPLOYMENT_ENV: "proc-pb-gone-dask", ROOT_ENV: str(data.resolve())},
            )
            started.append(orphan.pid)
            os.kill(first.pid, signal.SIGKILL)  # no clean-up of its own
            for txn in config.txn():
                txn.update_pb_state("pb-e", {"status": "FAILED", "reason": "test"})
            assert all(is_alive(pid) for pid in pids) and is_alive(orphan.pid)
            t0 = time.monotonic()
            second = start_process("deployer-2", command, log_path=tmp_path / "d2.log", env=env)
            started.insert(0, second.pid)
            wait_until("the orphan to go", lambda: not is_alive(orphan.pid), 30)
            wait_until("the ended block's engine to go", lambda: not any(map(is_alive, pids)), 40)
            print(f"\nrestarted deployer: ended block's engine gone after "
                  f"{time.monotonic() - t0:.1f} s")  # fmt: skip
    finally:
        _stop_all(started)


def test_deployer_stops_its_processes_with_the_database_gone(etcd, tmp_path):
    """SIGTERM to a deployer whose etcd has died: it still stops what it started."""
    env = {**etcd.env}
    data = tmp_path / "data"
    command = [sys.executable, "-m", "sdpbatch.cli", "deployer", "--data-dir", str(data)]
    deployer = start_process("deployer", command, log_path=tmp_path / "d.log", env=env)
    started = [deployer.pid]
    try:
        with Config("etcd3", port=etcd.port) as config:
            for txn in config.txn():
                txn.create_deployment({"id": "proc-pb-f-dask", "type": "dask", "args": {}})
            state = _engine_running(config, "proc-pb-f-dask")
        pids = [p["pid"] for p in state["processes"]]
        started += pids
        etcd.kill()
        t0 = time.monotonic()
        os.kill(deployer.pid, signal.SIGTERM)
        wait_until("the deployer and its engine to stop", lambda: not any(map(is_alive, started)),
                   30)  # fmt: skip
        print(f"\ndeployer stopped its engine without etcd in {time.monotonic() - t0:.1f} s")
    finally:
        _stop_all(started)
