"""``sdpbatch up --engine scheduler=ADDRESS``: blocks run on a Dask cluster started apart.

The cluster (a scheduler and two workers of two threads) is started here as plain
``dask scheduler``/``dask worker`` processes on loopback; the system must size blocks by
what that scheduler reports, run them there, and start or stop nothing of its own.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from sdpbatch.control.engines.scheduler import scheduler_identity
from sdpbatch.control.system.etcd_server import free_port
from sdpbatch.control.system.processes import ProcessRecord, is_alive, start_process, stop_process
from system_fixture import exports as printed_exports
from waiting import wait_until

pytestmark = pytest.mark.slow

CLIENT_ENV = ("TANGO_HOST", "SDP_CONFIG_HOST", "SDP_CONFIG_PORT", "SDP_CONFIG_BACKEND")
WORKERS, THREADS = 2, 2


def sdpbatch(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "sdpbatch.cli", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.fixture(scope="module")
def dask_cluster(tmp_path_factory) -> Iterator[tuple[str, list[ProcessRecord]]]:
    """(address, processes) of a Dask cluster that is not sdpbatch's."""
    root = tmp_path_factory.mktemp("cluster")
    port = free_port()
    cli = [sys.executable, "-m"]
    records = [
        start_process(
            "ext-scheduler",
            [*cli, "distributed.cli.dask_scheduler", "--host", "127.0.0.1", "--port", str(port)]
            + ["--dashboard-address", "127.0.0.1:0"],
            log_path=root / "cluster.log",
        )
    ]
    address = f"tcp://127.0.0.1:{port}"
    try:
        for i in range(WORKERS):
            records.append(
                start_process(
                    f"ext-worker-{i}",
                    [*cli, "distributed.cli.dask_worker", address, "--host", "127.0.0.1"]
                    + ["--nthreads", str(THREADS), "--memory-limit", "2GiB", "--name", f"ext-{i}"],
                    log_path=root / "cluster.log",
                    cwd=root,
                )
            )

        def up() -> bool:
            try:
                return len(scheduler_identity(address)["workers"]) == WORKERS
            except Exception:  # noqa: BLE001 - not up yet
                return False

        wait_until(f"the Dask cluster (log {root / 'cluster.log'})", up, 60, poll=0.3)
        yield address, records
    finally:
        for record in reversed(records):
            stop_process(record.pid, timeout=10)


@pytest.fixture(scope="module")
def system(dask_cluster, tmp_path_factory) -> Iterator[tuple[Path, dict[str, str]]]:
    address, _ = dask_cluster
    data_dir = tmp_path_factory.mktemp("scheduler-system") / "data"
    env = {k: v for k, v in os.environ.items() if k not in CLIENT_ENV}
    env["SDPBATCH_DATA_DIR"] = str(data_dir)
    try:
        result = sdpbatch(
            "up", "--data-dir", str(data_dir), "--engine", f"scheduler={address}", env=env
        )
        assert result.returncode == 0, result.stderr
        assert f"# engine:  scheduler={address} (an existing Dask cluster)" in result.stdout
        exports = printed_exports(result.stdout)
        yield data_dir, {**env, **exports}
    finally:
        sdpbatch("down", "--data-dir", str(data_dir), env=env)


def _process(env: dict[str, str], tmp: Path, workflow: str, params: dict) -> str:
    path = tmp / f"params-{time.monotonic_ns()}.json"
    path.write_text(json.dumps(params))
    result = sdpbatch("process", workflow, str(path), env=env)
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


def _config(env: dict[str, str]):
    from sdpbatch.control.configdb import Config

    return Config("etcd3", host=env["SDP_CONFIG_HOST"], port=int(env["SDP_CONFIG_PORT"]))


def _wait_ended(config, pb_id: str, timeout: float, on_poll=lambda: None) -> dict:
    states: list[dict] = []

    def ended() -> bool:
        on_poll()
        for txn in config.txn():
            state = txn.get_pb_state(pb_id) or {}
        states.append(state)
        return state.get("status") in ("FINISHED", "FAILED", "CANCELLED")

    wait_until(f"{pb_id} to end", ended, timeout, poll=0.2)
    return states[-1]


def test_blocks_run_on_the_existing_cluster_and_nothing_is_started(system, dask_cluster, tmp_path):
    address, cluster = dask_cluster
    data_dir, env = system
    shown = json.loads(sdpbatch("status", "--json", env=env).stdout)["engine"]
    assert shown["spec"] == {"kind": "scheduler", "address": address, "dask_host": "127.0.0.1"}
    assert shown["capacity"]["where"] == f"the Dask cluster at {address}"
    assert (shown["capacity"]["threads"], shown["capacity"]["workers"]) == (4, 2)
    assert shown["capacity"]["memory_bytes"] == WORKERS * 2 * 2**30

    seen: list[dict] = []
    with _config(env) as config:
        pb_id = _process(env, tmp_path, "batch:test_dask:0.1.0", {"n_workers": 2})

        def record_engine() -> None:
            for txn in config.txn():
                dep = txn.get_deployment_state(f"proc-{pb_id}-dask")
            if dep and dep.get("status") == "RUNNING":
                seen.append(dep)

        state = _wait_ended(config, pb_id, 120, record_engine)
    assert state["status"] == "FINISHED", state
    assert seen and all(d["scheduler_address"] == address for d in seen)
    assert all(d["processes"] == [] for d in seen)  # nothing of ours ran
    result = json.loads((data_dir / f"buff-{pb_id}-out" / "result.json").read_text())
    assert result["sum_of_squares"] == sum(i * i for i in range(100))
    assert result["workers"] == sorted(scheduler_identity(address)["workers"])
    assert all(is_alive(r.pid, started=r.started) for r in cluster)  # still there
    assert len(scheduler_identity(address)["workers"]) == WORKERS
    assert not (data_dir / "dask").exists()


def test_block_larger_than_the_cluster_is_refused(system, dask_cluster, tmp_path):
    address, _ = dask_cluster
    _, env = system
    with _config(env) as config:
        pb_id = _process(env, tmp_path, "batch:test_dask:0.1.0", {"n_workers": 3})
        state = _wait_ended(config, pb_id, 60)
    assert state["status"] == "FAILED"
    assert (
        state["reason"]
        == f"cannot run: it asks for 3 workers but the Dask cluster at {address} has 2"
    )


def test_unreachable_scheduler_is_refused_by_up(tmp_path):
    data_dir = tmp_path / "data"
    env = {k: v for k, v in os.environ.items() if k not in CLIENT_ENV}
    address = f"tcp://127.0.0.1:{free_port()}"
    result = sdpbatch(
        "up", "--data-dir", str(data_dir), "--engine", f"scheduler={address}", env=env
    )
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(
        f"sdpbatch up: error: engine scheduler={address} (an existing Dask cluster): cannot "
        f"reach the Dask scheduler at {address}"
    ), result.stderr
    recorded = json.loads((data_dir / "system.json").read_text())
    assert not [p for p in recorded["processes"] if is_alive(p["pid"], started=p["started"])]
