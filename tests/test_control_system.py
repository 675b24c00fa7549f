"""The control plane as real processes: etcd, ``sdpbatch controller``, ``sdpbatch deployer``,
workflow processes and Dask engines, all on loopback."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time

import psutil
import pytest

from etcd_fixture import *  # noqa: F403  (fixtures etcd_server, etcd_clean)
from etcd_fixture import PrivateEtcd
from sdpbatch.control.configdb import Config
from sdpbatch.control.system.processes import start_process, stop_process
from small_runs import SMALL_BATCH
from waiting import wait_until

LEASE_TTL = 2.0


@pytest.fixture
def plane(etcd_clean, tmp_path, monkeypatch):
    """Controller and deployer processes on a clean etcd; yields (config, data_root)."""
    host, port = etcd_clean
    data_root = tmp_path / "data"
    env = {
        "SDP_CONFIG_BACKEND": "etcd3",
        "SDP_CONFIG_HOST": host,
        "SDP_CONFIG_PORT": str(port),
        "SDP_CONFIG_LEASE_TTL": str(LEASE_TTL),
        "SDPBATCH_DATA_DIR": str(data_root),
        "SDPBATCH_WORKERS_PER_CORE": "2",
        "OMP_NUM_THREADS": "1",
    }
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    cli = [sys.executable, "-m", "sdpbatch.cli"]
    controller = start_process(
        "controller", [*cli, "controller"], log_path=tmp_path / "controller.log", env=env
    )
    deployer = start_process(
        "deployer", [*cli, "deployer"], log_path=tmp_path / "deployer.log", env=env
    )
    config = Config("etcd3", host=host, port=port)
    try:
        yield config, data_root
    finally:
        stop_process(controller.pid, timeout=10)
        stop_process(deployer.pid, timeout=20)  # stops whatever still runs
        config.close()


def _cli(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    result = subprocess.run(
        [sys.executable, "-m", "sdpbatch.cli", *args], capture_output=True, text=True, timeout=60
    )
    if check:
        assert result.returncode == 0, result.stderr
    return result


def _process(tmp_path, workflow: str, params: dict, *extra: str) -> str:
    path = tmp_path / f"params-{time.monotonic_ns()}.json"
    path.write_text(json.dumps(params))
    return _cli("process", workflow, str(path), *extra).stdout.strip()


def _wait_until(config, pb_id, statuses, timeout) -> dict:
    end = time.monotonic() + timeout
    for txn in config.txn():
        state = txn.get_pb_state(pb_id) or {}
        if state.get("status") not in statuses:
            assert time.monotonic() < end, f"{pb_id} still {state} after {timeout} s"
            txn.loop(wait=True, timeout=max(0.1, end - time.monotonic()))
    return state


class History:
    """Every value a key took, in order, from an etcd watch (no change can be missed)."""

    def __init__(self, config, key):
        self.values: list = []
        self._cancel = None
        client = config.backend.client
        self._id = client.add_watch_callback(key, self._on_event)
        self._client = client

    def _on_event(self, response) -> None:
        if isinstance(response, Exception):
            return
        for event in response.events:
            self.values.append(json.loads(event.value) if event.value else None)

    def stop(self):
        self._client.cancel_watch(self._id)


def _alive(pids) -> list[int]:
    alive = []
    for pid in pids:
        try:
            if psutil.Process(pid).status() != psutil.STATUS_ZOMBIE:
                alive.append(pid)
        except psutil.NoSuchProcess:
            pass
    return alive


def _watch_pids(config, deploy_id) -> History:
    return History(config, f"/deploy/{deploy_id}/state")


def _transitions(history: History) -> list[str]:
    """The statuses a block's state went through, each change once."""
    statuses = [v["status"] for v in history.values if v]
    return [s for i, s in enumerate(statuses) if i == 0 or statuses[i - 1] != s]


def _pids(history: History) -> set[int]:
    return {p["pid"] for v in history.values if v for p in v.get("processes", [])}


def test_dask_workflow_runs_through_all_states(plane, tmp_path):
    config, data_root = plane
    for txn in config.txn():
        pb_id = txn.new_pb_id("sdpbatch")  # the id the CLI will take
    states = History(config, f"/pb/{pb_id}/state")
    dask = _watch_pids(config, f"proc-{pb_id}-dask")
    workflow = _watch_pids(config, f"proc-{pb_id}-workflow")
    assert _process(tmp_path, "batch:test_dask:0.1.0", {"n_workers": 2}) == pb_id
    state = _wait_until(config, pb_id, ("FINISHED", "FAILED"), timeout=90)
    assert state["status"] == "FINISHED", state
    assert _transitions(states) == ["STARTING", "WAITING", "RUNNING", "FINISHED"]
    result = json.loads((data_root / f"buff-{pb_id}-out" / "result.json").read_text())
    assert result["sum_of_squares"] == sum(i * i for i in range(100))
    assert len(result["workers"]) == 2
    assert len(_pids(dask)) == 3  # scheduler + 2 workers, all gone at the end
    wait_until(
        "the engine and workflow processes to go",
        lambda: not _alive(_pids(dask)) and not _alive(_pids(workflow)),
        30,
    )
    for txn in config.txn():
        if txn.list_allocations() or any(d.startswith("proc-") for d in txn.list_deployments()):
            txn.loop(wait=True, timeout=10)
    for txn in config.txn():
        assert txn.list_allocations() == {}  # resources given back
        assert txn.list_deployments() == [f"buff-{pb_id}-out"]  # the buffer is kept
    status = json.loads(_cli("status", "--json").stdout)
    assert status["buffers"][0]["path"] == str(data_root / f"buff-{pb_id}-out")
    log = _cli("logs", pb_id).stdout.splitlines()
    assert log[:5] == [
        f"INFO:test_dask:Claimed processing block {pb_id}",
        "INFO:test_dask:Waiting for resources to be available",
        "INFO:test_dask:Resources are available",
        "INFO:test_dask:Creating buffer reservations",
        "INFO:test_dask:Deploying Dask EE",
    ]
    _cli("buffers", "delete", f"buff-{pb_id}-out")
    assert not (data_root / f"buff-{pb_id}-out").exists()
    for h in (states, dask, workflow):
        h.stop()


def test_raising_workflow_fails_and_leaves_no_process(plane, tmp_path):
    config, _ = plane
    for txn in config.txn():
        pb_id = txn.new_pb_id("sdpbatch")
    dask = _watch_pids(config, f"proc-{pb_id}-dask")
    _process(tmp_path, "batch:test_dask:0.1.0", {"n_workers": 1, "fail": "boom in the science"})
    state = _wait_until(config, pb_id, ("FINISHED", "FAILED"), timeout=90)
    assert state["status"] == "FAILED"
    assert state["reason"] == "RuntimeError: boom in the science"
    assert len(_pids(dask)) == 2
    wait_until("the engine processes to go", lambda: not _alive(_pids(dask)), 30)
    dask.stop()


def test_killed_owner_is_noticed_and_realtime_follows_its_sbi(plane):
    config, _ = plane
    for txn in config.txn():
        txn.create_sbi("sbi-test-1", {"id": "sbi-test-1", "status": "ACTIVE"})
        for pb_id in ("pb-rt-1", "pb-rt-2"):
            txn.create_pb(
                {
                    "id": pb_id,
                    "sbi_id": "sbi-test-1",
                    "workflow": {"type": "realtime", "id": "test_realtime", "version": "0.2.0"},
                    "parameters": {},
                }
            )
    for pb_id in ("pb-rt-1", "pb-rt-2"):
        _wait_until(config, pb_id, ("RUNNING",), timeout=60)
    for txn in config.txn():
        pid = txn.get_pb_owner("pb-rt-1")["pid"]
    os.kill(pid, signal.SIGKILL)  # the workflow dies without a word
    t0 = time.monotonic()
    state = _wait_until(config, "pb-rt-1", ("FAILED",), timeout=6 * LEASE_TTL)
    assert time.monotonic() - t0 < 3 * LEASE_TTL + 1
    assert state["reason"].startswith("owner lost")
    for txn in config.txn():
        txn.update_sbi("sbi-test-1", {"id": "sbi-test-1", "status": "FINISHED"})
    assert _wait_until(config, "pb-rt-2", ("FINISHED", "FAILED"), 30)["status"] == "FINISHED"


def test_cli_refuses_bad_input_clearly(plane, tmp_path):
    config, _ = plane
    params = tmp_path / "p.json"
    params.write_text(json.dumps({"n_workers": 1}))
    result = _cli("process", "batch:nope:1.0", str(params), check=False)
    assert result.returncode == 2 and "unknown workflow 'batch:nope:1.0'" in result.stderr
    result = _cli(
        "process", "batch:test_dask:0.1.0", str(params), "--dependency", "pb_x", check=False
    )
    assert result.returncode == 2 and "invalid processing block id 'pb_x'" in result.stderr
    for bad, message in (("../etc", "parameter 'buffer_vis'"), ("a.b", "safe directory name")):
        params.write_text(json.dumps({"buffer_vis": bad}))
        result = _cli("process", "batch:batch_imaging:0.1.0", str(params), check=False)
        assert result.returncode == 2 and message in result.stderr, result.stderr
    result = _cli("buffers", "delete", "../../etc", check=False)
    assert result.returncode == 2 and "invalid buffer name" in result.stderr
    for field in ("sky_model", "layout", "calibration_model"):
        params.write_text(json.dumps({field: "/etc/passwd"}))
        result = _cli("process", "batch:batch_imaging:0.1.0", str(params), check=False)
        assert result.returncode == 2 and f"parameter '{field}'" in result.stderr, result.stderr
    for txn in config.txn():
        assert txn.list_pbs() == []  # nothing was created


def test_config_ls_at_the_root_and_recursively(plane, tmp_path):
    config, _ = plane
    for txn in config.txn():
        txn.create_sbi("sbi-ls-1", {"id": "sbi-ls-1", "status": "ACTIVE"})
    for txn in config.txn():
        if len(txn.list_components()) < 2:  # the controller and deployer are starting
            txn.loop(wait=True, timeout=30)
    top = _cli("config", "ls").stdout.splitlines()
    assert "/sb/  (1 key)" in top
    assert any(line.startswith("/component/  (") for line in top)  # controller, deployer
    assert _cli("config", "ls", "/sb/").stdout.splitlines() == ["/sb/sbi-ls-1"]
    everything = _cli("config", "ls", "-R", "/").stdout.splitlines()
    assert '/sb/sbi-ls-1 = {"id": "sbi-ls-1", "status": "ACTIVE"}' in everything


def test_dependency_on_a_cancelled_block_is_cancelled(plane, tmp_path):
    config, _ = plane
    path = tmp_path / "big.json"
    path.write_text(json.dumps({"n_workers": 64}))
    refused = _cli("process", "batch:test_dask:0.1.0", str(path), check=False)
    assert refused.returncode == 2, refused.stderr  # refused at the door...
    assert "64 worker threads" in refused.stderr and "Traceback" not in refused.stderr
    first = "pb-written-directly-00001"  # ...and by the controller when written straight in
    for txn in config.txn():
        txn.create_pb(
            {
                "id": first,
                "workflow": {"type": "batch", "id": "test_dask", "version": "0.1.0"},
                "parameters": {"n_workers": 64},
            }
        )
    second = _process(tmp_path, "batch:test_dask:0.1.0", {"n_workers": 1}, "--dependency", first)
    third = _process(tmp_path, "batch:test_dask:0.1.0", {"n_workers": 1}, "--dependency", second)
    state = _wait_until(config, first, ("FAILED",), 30)
    assert "64 worker threads" in state["reason"]
    assert (
        _wait_until(config, second, ("CANCELLED",), 30)["reason"] == f"dependency {first} is FAILED"
    )
    assert _wait_until(config, third, ("CANCELLED",), 30)["reason"] == (
        f"dependency {second} is CANCELLED"
    )


@pytest.mark.slow
def test_batch_imaging_end_to_end(plane, tmp_path):
    config, data_root = plane
    for txn in config.txn():
        pb_id = txn.new_pb_id("sdpbatch")
    states = History(config, f"/pb/{pb_id}/state")
    dask = _watch_pids(config, f"proc-{pb_id}-dask")
    _process(tmp_path, "batch:batch_imaging:0.1.0", SMALL_BATCH)
    state = _wait_until(config, pb_id, ("FINISHED", "FAILED"), timeout=240)
    assert state["status"] == "FINISHED", state
    assert _transitions(states) == ["STARTING", "WAITING", "RUNNING", "FINISHED"]
    vis, img = data_root / f"buff-{pb_id}-vis", data_root / f"buff-{pb_id}-img"
    assert sorted(p.name for p in vis.glob("*.ms")) == [
        f"ska_pipeline_simulation_vislist_{i}.ms" for i in range(3)
    ]
    for name in ("deconvolved", "residual", "restored"):
        assert (img / f"ska_pipeline_ical_{name}.fits").is_file()
    log = [line for line in _cli("logs", pb_id).stdout.splitlines() if "batch_imaging:" in line]
    expected = [
        f"Claimed processing block {pb_id}",
        "Waiting for resources to be available",
        "Resources are available",
        "Creating buffer reservations",
        "Deploying Dask EE",
        "Running simulation pipeline",
        "Running ICAL pipeline",
        "Finished processing",
        "Removing Dask EE deployment",
    ]
    messages = [line.split(":", 2)[2] for line in log]
    assert [m for m in messages if m in expected] == expected
    wait_until("the engine processes to go", lambda: not _alive(_pids(dask)), 30)
    assert len(_pids(dask)) == 3
    states.stop()
    dask.stop()


def test_restarted_deployer_stops_what_its_predecessor_started(etcd_clean, tmp_path):
    host, port = etcd_clean
    env = {"SDP_CONFIG_HOST": host, "SDP_CONFIG_PORT": str(port), "SDP_CONFIG_BACKEND": "etcd3"}
    command = [sys.executable, "-m", "sdpbatch.cli", "deployer", "--data-dir", str(tmp_path)]
    first = start_process(
        "deployer-1", [*command, "--keep-running"], log_path=tmp_path / "d1.log", env=env
    )
    with Config("etcd3", host=host, port=port) as config:
        for txn in config.txn():
            txn.create_deployment(
                {"id": "proc-pb-x-dask", "type": "dask", "args": {"n_workers": 1}}
            )
        for txn in config.txn():
            state = txn.get_deployment_state("proc-pb-x-dask") or {}
            if state.get("status") != "RUNNING":
                txn.loop(wait=True, timeout=30)
        pids = [p["pid"] for p in state["processes"]]
        stop_process(first.pid)
        assert len(_alive(pids)) == 2  # --keep-running: the engine outlives its deployer
        second = start_process("deployer-2", command, log_path=tmp_path / "d2.log", env=env)
        try:
            for txn in config.txn():
                txn.delete_deployment("proc-pb-x-dask")
            for txn in config.txn():
                if txn.get_deployment_state("proc-pb-x-dask") is not None:
                    txn.loop(wait=True, timeout=30)
            assert _alive(pids) == []
        finally:
            stop_process(second.pid)


def test_engine_line_of_up_rides_out_a_database_that_answers_late(tmp_path):
    """What ``up`` prints after its components started opens the database with their
    patience: an etcd that answers only a few seconds later is waited for, not an error."""
    from sdpbatch.control.system.lifecycle import engine_line
    from sdpbatch.control.system.state import SystemState

    server = PrivateEtcd(tmp_path)
    state = SystemState(tmp_path, ports={"etcd_client": server.port})
    late = threading.Timer(2.0, server.start)
    late.start()
    try:
        t0 = time.monotonic()
        assert engine_line(state).startswith("local (Dask processes on this machine): ")
        assert time.monotonic() - t0 >= 2.0
    finally:
        late.join()
        server.stop()
