"""``sdpbatch up --engine slurm`` against a real single-node SLURM cluster on loopback.

The whole system runs as ``sdpbatch up`` starts it; the small SBI's batch block comes in with
``sdpbatch process``.  Its Dask workers must be SLURM jobs (squeue sees them), a worker job
cancelled mid-run must be replaced without changing the products, nothing may stay in the
queue once a block has ended (finished or failed), and a block larger than the partition is
refused with a reason before any job is submitted.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from slurm_fixture import *  # noqa: F403  (fixture slurm_cluster, squeue)
from slurm_fixture import SlurmCluster, squeue
from system_fixture import exports as printed_exports

pytestmark = pytest.mark.slow

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
SMALL = json.loads((EXAMPLES / "sbi-small.json").read_text())["processing_blocks"][1]
BATCH = "batch:batch_imaging:0.1.0"
CLIENT_ENV = ("TANGO_HOST", "SDP_CONFIG_HOST", "SDP_CONFIG_PORT", "SDP_CONFIG_BACKEND")
RESTORED = "ska_pipeline_ical_restored.fits"


def sdpbatch(*args: str, env: dict[str, str], check: bool = True) -> subprocess.CompletedProcess:
    result = subprocess.run(
        [sys.executable, "-m", "sdpbatch.cli", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )
    if check:
        assert result.returncode == 0, f"sdpbatch {args}:\n{result.stdout}{result.stderr}"
    return result


class System:
    """The system ``sdpbatch up --engine slurm`` started, and how to talk to it."""

    def __init__(self, data_dir: Path, env: dict[str, str], tmp: Path):
        from sdpbatch.control.configdb import Config

        self.data_dir, self.env, self.tmp = data_dir, env, tmp
        self.config = Config("etcd3", host=env["SDP_CONFIG_HOST"], port=int(env["SDP_CONFIG_PORT"]))

    def process(self, workflow: str, params: dict) -> str:
        path = self.tmp / f"params-{time.monotonic_ns()}.json"
        path.write_text(json.dumps(params))
        return sdpbatch("process", workflow, str(path), env=self.env).stdout.strip()

    def state(self, pb_id: str) -> dict:
        for txn in self.config.txn():
            state = txn.get_pb_state(pb_id) or {}
        return state

    def deployment(self, deploy_id: str) -> dict | None:
        for txn in self.config.txn():
            state = txn.get_deployment_state(deploy_id)
        return state

    def wait_ended(self, pb_id: str, timeout: float) -> dict:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            state = self.state(pb_id)
            if state.get("status") in ("FINISHED", "FAILED", "CANCELLED"):
                return state
            time.sleep(0.3)
        raise AssertionError(f"{pb_id} still {self.state(pb_id)} after {timeout} s")

    def workflow_log(self, pb_id: str) -> str:
        path = self.data_dir / "logs" / f"proc-{pb_id}-workflow.log"
        return path.read_text(errors="replace") if path.is_file() else ""


class QueueWatch:
    """Polls squeue (all states) in the background: every (job id, name, state) seen."""

    def __init__(self) -> None:
        self.seen: set[tuple[str, str, str]] = set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)

    def _poll(self) -> None:
        while not self._stop.is_set():
            self.seen |= {tuple(row) for row in squeue("--states=all") if len(row) == 3}
            self._stop.wait(0.3)

    def __enter__(self) -> QueueWatch:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def running(self, name: str) -> set[str]:
        return {job for job, jname, state in self.seen if jname == name and state == "RUNNING"}


@pytest.fixture(scope="module")
def system(slurm_cluster: SlurmCluster, tmp_path_factory) -> Iterator[System]:
    tmp = tmp_path_factory.mktemp("slurm-system")
    data_dir = tmp / "data"
    env = {k: v for k, v in os.environ.items() if k not in CLIENT_ENV}
    env.update(slurm_cluster.env, SDPBATCH_DATA_DIR=str(data_dir))
    try:
        printed = sdpbatch("up", "--data-dir", str(data_dir), "--engine", "slurm", env=env)
        assert "# engine:  slurm" in printed.stdout, printed.stdout
        exports = printed_exports(printed.stdout)
        system = System(data_dir, {**env, **exports}, tmp)
        yield system
        system.config.close()
    finally:
        sdpbatch("down", "--data-dir", str(data_dir), env=env, check=False)


@pytest.fixture(scope="module")
def reference_run(system: System) -> dict:
    """The small SBI's batch block on SLURM, start to end, with squeue watched throughout."""
    with QueueWatch() as watch:
        pb_id = system.process(BATCH, _params())
        state = system.wait_ended(pb_id, timeout=300)
    return {"pb_id": pb_id, "state": state, "seen": watch.seen}


def _params(**changes) -> dict:
    params = {k: v for k, v in SMALL["parameters"].items() if not k.startswith("buffer_")}
    return params | changes


def test_engine_is_recorded_and_shown(system: System, slurm_cluster: SlurmCluster):
    snapshot = json.loads(sdpbatch("status", "--json", env=system.env).stdout)
    engine = snapshot["engine"]
    assert engine["spec"]["kind"] == "slurm"
    assert engine["capacity"]["where"] == "SLURM partition 'debug'"
    assert engine["capacity"]["threads"] == slurm_cluster.cpus
    assert engine["capacity"]["memory_bytes"] == slurm_cluster.memory_mib * 2**20
    text = sdpbatch("status", env=system.env).stdout
    assert "ENGINE\n  slurm (partition (default)" in text
    controller_log = (system.data_dir / "logs" / "controller.log").read_text()
    assert "SLURM partition 'debug'" in controller_log


def test_batch_workflow_finishes_with_its_workers_as_slurm_jobs(system: System, reference_run):
    pb_id = reference_run["pb_id"]
    assert reference_run["state"]["status"] == "FINISHED", reference_run["state"]
    dask_id = f"proc-{pb_id}-dask"
    jobs = {job for job, name, _ in reference_run["seen"] if name == dask_id}
    seen = reference_run["seen"]
    running = {job for job, name, state in seen if (name, state) == (dask_id, "RUNNING")}
    assert len(running) == SMALL["parameters"]["n_workers"], reference_run["seen"]
    for job in jobs:  # each job ran a Dask worker of the block's scheduler
        log = (system.data_dir / "logs" / f"{dask_id}-job-{job}.log").read_text()
        assert "Starting Worker" in log and "Registered to:" in log, log
        assert f"{dask_id}-job-{job}" in log  # the worker's name
    # nothing left: no queued job, no deployment, the scheduler process and work dir gone
    assert squeue() == []
    assert system.deployment(dask_id) is None
    assert not (system.data_dir / "dask" / dask_id).exists()
    img = system.data_dir / f"buff-{pb_id}-img"
    assert (img / RESTORED).is_file()
    assert "Finished processing" in system.workflow_log(pb_id)


def _busy_worker_job(address: str) -> str:
    """The job of the first worker by address: where ICAL's one group of windows runs."""
    from distributed import Client

    with Client(address, timeout="20s") as client:
        workers = client.scheduler_info()["workers"]
        first = sorted(workers)[0]
        return str(workers[first]["name"]).rsplit("-", 1)[1]


def test_cancelled_worker_job_is_replaced_and_products_stay_right(system: System, reference_run):
    from sdpbatch.io.fits_image import read_fits_image

    assert reference_run["state"]["status"] == "FINISHED"
    with QueueWatch() as watch:
        pb_id = system.process(BATCH, _params())
        dask_id = f"proc-{pb_id}-dask"
        end = time.monotonic() + 240
        while "ICAL cycle 0:" not in system.workflow_log(pb_id):  # mid-ICAL, between cycles
            status = system.state(pb_id).get("status")
            assert time.monotonic() < end and status not in ("FAILED", "CANCELLED"), status
            time.sleep(0.2)
        victim = _busy_worker_job(system.deployment(dask_id)["scheduler_address"])
        subprocess.run(["scancel", victim], check=True, timeout=30)
        replaced: list = []
        while not replaced and system.state(pb_id).get("status") == "RUNNING":
            replaced = (system.deployment(dask_id) or {}).get("replaced", [])
            time.sleep(0.2)
        state = system.wait_ended(pb_id, timeout=300)
    assert state["status"] == "FINISHED", state
    assert [r["job_id"] for r in replaced] == [victim], replaced
    assert replaced[0]["state"] in ("CANCELLED", "COMPLETING", "gone")
    assert (victim, dask_id, "CANCELLED") in watch.seen
    assert replaced[0]["by"] in {job for job, name, _ in watch.seen if name == dask_id}
    assert squeue() == []

    log = system.workflow_log(pb_id)
    assert "Finished processing" in log
    ours, _ = read_fits_image(system.data_dir / f"buff-{pb_id}-img" / RESTORED)
    ref_pb = reference_run["pb_id"]
    reference, _ = read_fits_image(system.data_dir / f"buff-{ref_pb}-img" / RESTORED)
    peak = np.abs(reference).max()
    assert peak > 1.0  # Jy/beam: the field's bright sources are there
    # the same computation, some of it redone on another worker: equal to rounding
    np.testing.assert_allclose(ours, reference, rtol=0, atol=1e-5 * peak)


def test_failed_block_leaves_nothing_in_the_queue(system: System):
    with QueueWatch() as watch:
        pb_id = system.process(
            "batch:test_dask:0.1.0", {"n_workers": 1, "fail": "failing on purpose"}
        )
        state = system.wait_ended(pb_id, timeout=120)
    assert state["status"] == "FAILED" and "failing on purpose" in state["reason"]
    assert watch.running(f"proc-{pb_id}-dask"), watch.seen  # its worker did run as a job
    end = time.monotonic() + 60  # the controller removes the engine of a failed block
    while squeue() and time.monotonic() < end:
        time.sleep(0.3)
    assert squeue() == []


def test_block_too_large_for_the_partition_is_refused(system: System, slurm_cluster):
    too_many = slurm_cluster.cpus + 1
    pb_id = system.process(BATCH, _params(n_workers=too_many))
    state = system.wait_ended(pb_id, timeout=60)
    assert state["status"] == "FAILED"
    assert state["reason"] == (
        f"cannot run: it asks for {too_many} worker threads but SLURM partition 'debug' has "
        f"{slurm_cluster.cpus} (1 node, {slurm_cluster.cpus} CPUs; a worker thread is one CPU)"
    )
    assert not [row for row in squeue("--states=all") if pb_id in row[1]]
    shown = sdpbatch("status", env=system.env).stdout
    assert "asks for" in shown and pb_id in shown
