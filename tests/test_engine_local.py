"""The engine choice (``--engine``), its record in the configuration database, the local
engine's Dask processes, and what the controller does while an engine does not answer."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest

from sdpbatch.control import engines
from sdpbatch.control.configdb import Config
from sdpbatch.control.configdb.backend_memory import MemoryStore
from sdpbatch.control.controller import Controller
from sdpbatch.control.engines import EngineError, EngineSpec, parse_engine
from sdpbatch.control.engines.base import DaskRequest
from sdpbatch.control.engines.slurm_commands import slurm_seconds
from sdpbatch.control.resources import Capacity, machine_capacity
from sdpbatch.control.status import format_status, system_status
from sdpbatch.control.system.etcd_server import free_port
from sdpbatch.control.system.processes import is_alive
from sdpbatch.workflows.registry import catalog


@pytest.fixture
def config():
    with Config("memory", store=MemoryStore()) as c:
        yield c


@pytest.mark.parametrize(
    ("text", "options", "spec"),
    [
        ("local", {}, EngineSpec()),
        ("slurm", {}, EngineSpec("slurm")),
        (
            "slurm",
            {
                "partition": "gpu-1",
                "account": "ska",
                "walltime": "2:00:00",
                "dask_host": "10.1.2.3",
            },
            EngineSpec("slurm", None, "gpu-1", "ska", "2:00:00", "10.1.2.3"),
        ),
        ("scheduler=10.0.0.5:8786", {}, EngineSpec("scheduler", "tcp://10.0.0.5:8786")),
        ("scheduler=tcp://host-a:8786", {}, EngineSpec("scheduler", "tcp://host-a:8786")),
    ],
)
def test_engine_option_is_parsed(text, options, spec):
    assert parse_engine(text, **options) == spec
    assert EngineSpec.from_dict(spec.to_dict()) == spec


@pytest.mark.parametrize(
    ("text", "options", "message"),
    [
        ("kubernetes", {}, "--engine 'kubernetes': allowed are local, slurm or scheduler=ADDRESS"),
        ("scheduler", {}, "allowed are local, slurm or scheduler=ADDRESS"),
        ("slurm=x", {}, "allowed are local, slurm or scheduler=ADDRESS"),
        ("scheduler=http://h:1", {}, "give tcp://HOST:PORT or HOST:PORT"),
        ("scheduler=hostonly", {}, "missing port"),
        ("local", {"partition": "debug"}, "--slurm-partition: only with --engine slurm"),
        ("slurm", {"partition": "a b"}, "--slurm-partition 'a b': allowed are letters"),
        ("slurm", {"account": "x;rm"}, "--slurm-account 'x;rm': allowed are letters"),
        ("slurm", {"walltime": "soon"}, "--slurm-walltime 'soon': allowed are SLURM times"),
        ("slurm", {"dask_host": "-oops"}, "--dask-host '-oops': give an IP address"),
    ],
)
def test_bad_engine_options_are_refused_with_the_option_named(text, options, message):
    with pytest.raises(EngineError) as err:
        parse_engine(text, **options)
    assert message in str(err.value)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("30", 30 * 60),
        ("30:15", 30 * 60 + 15),
        ("1:30:00", 90 * 60),
        ("2-12", (2 * 24 + 12) * 3600),
        ("1-02:03", (24 + 2) * 3600 + 3 * 60),
        ("1-02:03:04", (24 + 2) * 3600 + 3 * 60 + 4),
        ("infinite", None),
        ("UNLIMITED", None),
    ],
)
def test_slurm_times(text, seconds):
    assert slurm_seconds(text) == seconds


def test_dask_request_checks_its_fields():
    assert DaskRequest.from_args("d", {"n_workers": 2}) == DaskRequest(2, 1, "auto")
    for args, field in [
        ({"n_workers": 0}, "n_workers"),
        ({"n_workers": True}, "n_workers"),
        ({"threads_per_worker": 300}, "threads_per_worker"),
        ({"memory_limit": [1]}, "memory_limit"),
    ]:
        with pytest.raises(EngineError, match=field):
            DaskRequest.from_args("d", args)


def test_engine_is_recorded_and_local_by_default(config):
    assert engines.load_engine_spec(config) == EngineSpec()
    spec = parse_engine("slurm", partition="debug")
    engines.record_engine(config, spec)
    assert engines.load_engine_spec(config) == spec
    engines.record_engine(config, EngineSpec())
    assert engines.load_engine_spec(config).kind == "local"
    snapshot = system_status(config)
    assert snapshot["engine"]["spec"] == {"kind": "local", "dask_host": "127.0.0.1"}
    assert snapshot["engine"]["capacity"]["where"] == "this machine"
    assert "ENGINE\n  local (Dask processes on this machine)\n  this machine:" in format_status(
        snapshot
    )


def test_blocks_wait_while_the_engine_does_not_answer(config, monkeypatch):
    """An existing cluster that is not there: new blocks are left alone, not failed."""
    from sdpbatch.control.engines import scheduler

    monkeypatch.setattr(scheduler, "CONNECT_TIMEOUT", 0.5)
    engines.record_engine(config, parse_engine(f"scheduler=127.0.0.1:{free_port()}"))
    local = Capacity(cores=2, threads=4, memory_bytes=8 * 2**30)
    assert engines.EngineCapacity(config, local=local).get() is None
    for txn in config.txn():
        txn.create_pb(
            {
                "id": "pb-wait",
                "sbi_id": None,
                "workflow": {"type": "batch", "id": "test_dask", "version": "0.1.0"},
                "parameters": {"n_workers": 1},
                "dependencies": [],
            }
        )
    Controller(config, catalog(), capacity=local).reconcile()
    for txn in config.txn():
        assert txn.get_pb_state("pb-wait") is None
        assert txn.list_deployments() == []
    status = engines.engine_status(config)
    assert "cannot reach the Dask scheduler" in status["error"]
    assert "does not answer: cannot reach" in format_status(system_status(config))


def test_local_engine_runs_dask_processes_and_stops_them(config, tmp_path):
    from distributed import Client

    deployer_side = engines.Engines(config, tmp_path)
    state = deployer_side.start(
        "proc-pb-local-dask", {"n_workers": 2, "threads_per_worker": 1}, log_path=tmp_path / "l"
    )
    assert state["engine"] == {"kind": "local", "dask_host": "127.0.0.1"}
    assert state["scheduler_address"].startswith("tcp://127.0.0.1:")
    pids = [p["pid"] for p in state["processes"]]
    try:
        with Client(state["scheduler_address"], timeout="30s") as client:
            client.wait_for_workers(2, timeout=60)
            workers = client.scheduler_info()["workers"].values()
            assert sorted(w["name"] for w in workers) == [
                "proc-pb-local-dask-worker-0",
                "proc-pb-local-dask-worker-1",
            ]
            assert all(w["nthreads"] == 1 for w in workers)
        assert deployer_side.check("proc-pb-local-dask", state) is None
    finally:
        deployer_side.stop("proc-pb-local-dask", state)
    assert not [pid for pid in pids if is_alive(pid)]
    assert not (tmp_path / "dask" / "proc-pb-local-dask").exists()


def test_local_capacity_is_this_machine(config):
    local = machine_capacity()
    capacity = engines.EngineCapacity(config, local=local).get()
    assert capacity == local and capacity.where == "this machine"


def test_up_refuses_a_bad_engine_before_starting_anything(tmp_path):
    data_dir = tmp_path / "data"
    for args, message in [
        (["--engine", "yarn"], "--engine 'yarn': allowed are local, slurm or scheduler=ADDRESS"),
        (["--slurm-walltime", "1:00:00"], "--slurm-walltime: only with --engine slurm"),
    ]:
        start = time.monotonic()
        result = subprocess.run(
            [sys.executable, "-m", "sdpbatch.cli", "up", "--data-dir", str(data_dir), *args],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert result.returncode == 2, result
        assert result.stderr.strip() == f"sdpbatch up: error: {message}"
        assert time.monotonic() - start < 30
    assert not data_dir.exists()
