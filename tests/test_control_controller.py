"""Processing controller and workflow runtime on the memory backend (one process, fast)."""

from __future__ import annotations

import logging
import os
import signal
import threading
import time

import pytest

from sdpbatch.control.buffers import BufferError, buffer_path, check_buffer_name
from sdpbatch.control.configdb import Config, MemoryStore
from sdpbatch.control.controller import Controller
from sdpbatch.control.resources import (
    Capacity,
    ResourceRequest,
    fits_now,
    machine_capacity,
    never_fits,
    worker_request,
)
from sdpbatch.workflows.registry import catalog
from sdpbatch.workflows.runtime import run_workflow

CAPACITY = Capacity(cores=2, threads=4, memory_bytes=16 * 2**30)
BATCH = {"type": "batch", "id": "test_dask", "version": "0.1.0"}


@pytest.fixture
def db():
    store = MemoryStore()
    configs = []

    def connect():
        configs.append(Config("memory", store=store, lease_ttl=1.0))
        return configs[-1]

    yield connect
    for c in configs:
        c.close()


def _create(config, pb_id, *, workflow=BATCH, params=None, deps=()):
    for txn in config.txn():
        txn.create_pb(
            {
                "id": pb_id,
                "workflow": workflow,
                "parameters": params or {},
                "dependencies": [{"pb_id": d, "type": ["none"]} for d in deps],
            }
        )


def _state(config, pb_id):
    for txn in config.txn():
        return txn.get_pb_state(pb_id)


def _claim_and_wait(config, pb_id):
    """What a workflow does before its resources: own the block, WAITING."""
    for txn in config.txn():
        txn.take_pb_ownership(pb_id)
        txn.update_pb_state(pb_id, {**txn.get_pb_state(pb_id), "status": "WAITING"})


def _set_status(config, pb_id, status):
    for txn in config.txn():
        txn.update_pb_state(pb_id, {**txn.get_pb_state(pb_id), "status": status})


def test_new_block_gets_a_workflow_deployment(db):
    config = db()
    controller = Controller(config, catalog(), capacity=CAPACITY)
    _create(config, "pb-1", params={"n_workers": 2})
    controller.reconcile()
    assert _state(config, "pb-1") == {"status": "STARTING", "resources_available": False}
    for txn in config.txn():
        dep = txn.get_deployment("proc-pb-1-workflow")
    assert dep["type"] == "process"
    assert dep["args"] == {"module": "sdpbatch.workflows.run", "args": ["pb-1"]}


def test_unknown_workflow_and_impossible_request_fail_with_reasons(db):
    config = db()
    controller = Controller(config, catalog(), capacity=CAPACITY)
    _create(config, "pb-x", workflow={"type": "batch", "id": "nope", "version": "9"})
    _create(config, "pb-big", params={"n_workers": 5})
    controller.reconcile()
    state = _state(config, "pb-x")
    assert state["status"] == "FAILED"
    assert "batch:nope:9 is not registered" in state["reason"]
    assert "batch:batch_imaging:0.1.0" in state["reason"]
    state = _state(config, "pb-big")
    assert state["status"] == "FAILED"
    assert "5 worker threads but this machine has 4" in state["reason"]
    for txn in config.txn():
        assert txn.list_deployments() == []


def test_release_waits_for_dependencies_and_resources(db):
    config = db()
    controller = Controller(config, catalog(), capacity=CAPACITY)
    _create(config, "pb-a", params={"n_workers": 3})
    _create(config, "pb-b", params={"n_workers": 2}, deps=["pb-a"])
    _create(config, "pb-c", params={"n_workers": 2})
    controller.reconcile()
    for pb_id in ("pb-a", "pb-b", "pb-c"):
        _claim_and_wait(config, pb_id)
    controller.reconcile()
    assert _state(config, "pb-a")["resources_available"]  # 3 of 4 threads
    assert not _state(config, "pb-b")["resources_available"]  # dependency not finished
    assert not _state(config, "pb-c")["resources_available"]  # 3 + 2 > 4: waits
    for txn in config.txn():
        assert txn.list_allocations()["pb-a"]["threads"] == 3
    _set_status(config, "pb-a", "RUNNING")
    controller.reconcile()
    assert not _state(config, "pb-c")["resources_available"]
    _set_status(config, "pb-a", "FINISHED")
    controller.reconcile()
    for txn in config.txn():
        allocations = txn.list_allocations()
        assert "pb-a" not in allocations  # given back when the block ended
        assert txn.get_deployment("proc-pb-a-workflow") is None
    held = [p for p in ("pb-b", "pb-c") if _state(config, p)["resources_available"]]
    assert sorted(allocations) == held
    assert held == ["pb-b", "pb-c"]  # 2 + 2 = 4 fits


def test_dependants_of_failed_or_cancelled_blocks_are_cancelled(db):
    config = db()
    controller = Controller(config, catalog(), capacity=CAPACITY)
    _create(config, "pb-a")
    _create(config, "pb-b", deps=["pb-a"])
    _create(config, "pb-c", deps=["pb-b"])
    controller.reconcile()
    _claim_and_wait(config, "pb-b")
    _set_status(config, "pb-a", "FAILED")
    controller.reconcile()
    assert _state(config, "pb-b")["status"] == "CANCELLED"
    assert _state(config, "pb-b")["reason"] == "dependency pb-a is FAILED"
    controller.reconcile()
    assert _state(config, "pb-c") == {
        "status": "CANCELLED",
        "reason": "dependency pb-b is CANCELLED",
        "resources_available": False,
    }
    _create(config, "pb-d", deps=["pb-c"])  # created after: never deployed
    controller.reconcile()
    assert _state(config, "pb-d")["status"] == "CANCELLED"
    for txn in config.txn():
        assert [d for d in txn.list_deployments() if "pb-d" in d or "pb-b" in d] == []


def test_owner_lost_marks_the_block_failed(db):
    config, workflow = db(), db()
    controller = Controller(config, catalog(), capacity=CAPACITY)
    _create(config, "pb-1")
    controller.reconcile()
    _claim_and_wait(workflow, "pb-1")
    controller.reconcile()
    assert _state(config, "pb-1")["status"] == "WAITING"
    workflow.stop_keepalive()  # the workflow process hangs or dies
    stop = threading.Event()
    thread = threading.Thread(target=controller.run, args=(stop,), kwargs={"timeout": 0.5})
    thread.start()
    try:
        for txn in config.txn():
            if txn.get_pb_state("pb-1")["status"] != "FAILED":
                txn.loop(wait=True, timeout=5)
    finally:
        stop.set()  # seen at the next pass, at most 0.5 s later
        thread.join(timeout=5)
    state = _state(config, "pb-1")
    assert state["status"] == "FAILED" and state["reason"].startswith("owner lost")


def test_owner_cut_off_longer_than_its_lease_may_take_the_block_again(db):
    """An owner whose lease expired (the database was away longer than its TTL) but whose
    process lives takes the block again: the controller waits one lease TTL before "owner
    lost", and a block retaken within it carries on."""
    config, workflow = db(), db()
    controller = Controller(config, catalog(), capacity=CAPACITY)
    _create(config, "pb-1")
    controller.reconcile()
    _claim_and_wait(workflow, "pb-1")
    workflow.stop_keepalive()
    for txn in config.txn():  # the owner key goes with the lease
        if txn.get_pb_owner("pb-1") is not None:
            txn.loop(wait=True, timeout=5)
    controller.reconcile()
    assert _state(config, "pb-1")["status"] == "WAITING"  # within the grace
    again = db()  # the same process with a new lease, as Config.lease_id grants it
    for txn in again.txn():
        txn.take_pb_ownership("pb-1")
    time.sleep(config.lease_ttl + 0.1)
    controller.reconcile()
    assert _state(config, "pb-1")["status"] == "WAITING"
    again.close()  # owner lost again (its lease revoked), for good this time
    controller.reconcile()
    assert _state(config, "pb-1")["status"] == "WAITING"
    time.sleep(config.lease_ttl + 0.1)
    controller.reconcile()
    assert _state(config, "pb-1")["reason"].startswith("owner lost")


def test_runtime_marks_a_raising_workflow_failed(db):
    config = db()
    Controller(config, catalog(), capacity=CAPACITY).reconcile()
    _create(config, "pb-r")

    def broken(block):
        raise ValueError("the science went wrong")

    workflow_config = db()
    assert run_workflow("pb-r", broken, config=workflow_config) == 1
    state = _state(config, "pb-r")
    assert state["status"] == "FAILED"
    assert state["reason"] == "ValueError: the science went wrong"
    workflow_config.close()
    for txn in config.txn():
        assert txn.get_pb_owner("pb-r") is None  # released with the lease at exit
    assert run_workflow("pb-missing", broken, config=db()) == 1


def test_runtime_stops_quietly_when_cancelled(db):
    config = db()
    controller = Controller(config, catalog(), capacity=CAPACITY)
    _create(config, "pb-a")
    _create(config, "pb-b", deps=["pb-a"])
    controller.reconcile()
    seen = []

    def workflow(block):
        seen.append("started")
        block.wait_for_resources()
        seen.append("released")

    result = []
    thread = threading.Thread(
        target=lambda: result.append(run_workflow("pb-b", workflow, config=db()))
    )
    thread.start()
    for txn in config.txn():
        if (txn.get_pb_state("pb-b") or {}).get("status") != "WAITING":
            txn.loop(wait=True, timeout=5)
    _set_status(config, "pb-a", "CANCELLED")
    controller.reconcile()
    thread.join(timeout=5)
    assert result == [0] and seen == ["started"]
    assert _state(config, "pb-b")["status"] == "CANCELLED"


def test_resource_model():
    capacity = machine_capacity(workers_per_core=2, memory_bytes=8 * 2**30)
    assert capacity.threads == 2 * capacity.cores
    seed = worker_request(4, memory_per_worker_gb=1)  # the seed's n_workers on 2 cores
    assert seed == ResourceRequest(threads=4, memory_bytes=4 * 2**30, workers=4)
    assert never_fits(seed, Capacity(2, 4, 8 * 2**30)) is None
    assert "5 worker threads" in never_fits(worker_request(5), Capacity(2, 4, 8 * 2**30))
    assert "GiB" in never_fits(worker_request(2, memory_per_worker_gb=8), Capacity(2, 4, 2**30))
    assert fits_now(worker_request(2), [worker_request(2)], Capacity(2, 4, 8 * 2**30))
    assert not fits_now(worker_request(3), [worker_request(2)], Capacity(2, 4, 8 * 2**30))


@pytest.mark.parametrize("name", ["../etc", "a/b", "a.b", "", "x" * 97, "logs", ".", "a b"])
def test_unsafe_buffer_names_are_refused(tmp_path, name):
    with pytest.raises(BufferError, match="invalid buffer name"):
        buffer_path(tmp_path, name)


def test_buffer_paths_stay_in_the_root(tmp_path):
    assert buffer_path(tmp_path, "buff-pb-1-vis") == (tmp_path / "buff-pb-1-vis").resolve()
    assert check_buffer_name("buff-pb-1-vis") == "buff-pb-1-vis"
    (tmp_path / "escape").symlink_to("/tmp")
    with pytest.raises(BufferError, match="outside the data root"):
        buffer_path(tmp_path, "escape")


def _science_until(stop_after: float, seen: list):
    """A workflow whose science runs (in Python, interruptible) for ``stop_after`` s."""

    def workflow(block):
        block.update_state(status="RUNNING")
        seen.append("running")
        end = time.monotonic() + stop_after
        while time.monotonic() < end:
            time.sleep(0.05)
        seen.append("done")

    return workflow


def test_workflow_takes_its_block_again_after_its_lease_expired(db):
    """The process was cut off longer than its lease: nobody else took the block, so the
    keeper takes it again (new lease) and the work goes on to FINISHED."""
    config, workflow_config = db(), db()
    _create(config, "pb-l")
    seen: list = []
    revoked = []

    def expire_lease():
        for txn in config.txn():
            if (txn.get_pb_state("pb-l") or {}).get("status") != "RUNNING":
                txn.loop(wait=True, timeout=5)
        lease = workflow_config.lease_id
        config.backend.lease_revoke(lease)  # as etcd does when a lease's TTL runs out
        revoked.append(lease)

    thread = threading.Thread(target=expire_lease)
    thread.start()
    assert run_workflow("pb-l", _science_until(3.0, seen), config=workflow_config) == 0
    thread.join(timeout=5)
    assert seen == ["running", "done"]
    assert _state(config, "pb-l")["status"] == "FINISHED"
    assert workflow_config.lease_generation == 2 and workflow_config.lease_id != revoked[0]


def test_workflow_stops_its_work_when_the_block_is_ended_under_it(db):
    config, workflow_config = db(), db()
    _create(config, "pb-s")
    seen: list = []

    def fail_it():
        for txn in config.txn():
            if (txn.get_pb_state("pb-s") or {}).get("status") != "RUNNING":
                txn.loop(wait=True, timeout=5)
        for txn in config.txn():
            state = txn.get_pb_state("pb-s")
            txn.update_pb_state("pb-s", {**state, "status": "FAILED", "reason": "told so"})

    thread = threading.Thread(target=fail_it)
    thread.start()
    t0 = time.monotonic()
    assert run_workflow("pb-s", _science_until(30.0, seen), config=workflow_config) == 0
    settle = time.monotonic() - t0
    thread.join(timeout=5)
    assert seen == ["running"] and settle < 5  # stopped within a few keeper periods
    print(f"\nblock ended under its workflow: work stopped {settle:.1f} s after the start")
    state = _state(config, "pb-s")
    assert state["status"] == "FAILED" and state["reason"] == "told so"  # reason kept


def test_sigterm_ends_the_run_cleanly_and_the_engine_goes_first(db, caplog):
    """SIGTERM during the science: one log line, no traceback, the Dask engine removed while
    the block is still RUNNING, then the block FAILED "stopped by SIGTERM"."""
    config, workflow_config = db(), db()
    _create(config, "pb-t")
    dask_id = "proc-pb-t-dask"
    seen: list = []

    def deployer() -> None:  # plays the deployer for the block's engine
        for txn in config.txn():
            if txn.get_deployment(dask_id) is None:
                txn.loop(wait=True, timeout=10)
        for txn in config.txn():
            txn.create_deployment_state(
                dask_id, {"status": "RUNNING", "type": "dask", "scheduler_address": "tcp://x:1"}
            )
        for txn in config.txn():
            if txn.get_deployment(dask_id) is not None:
                txn.loop(wait=True, timeout=10)
        seen.append(_state(config, "pb-t")["status"])  # when the engine is removed
        for txn in config.txn():
            txn.delete_deployment_state(dask_id)

    def science(block) -> None:
        block.update_state(status="RUNNING")
        block.deploy_dask(1)
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(30)

    thread = threading.Thread(target=deployer)
    thread.start()
    t0 = time.monotonic()
    with caplog.at_level(logging.INFO, logger="workflow"):
        assert run_workflow("pb-t", science, config=workflow_config) == 1
    thread.join(timeout=10)
    assert time.monotonic() - t0 < 5.0
    assert seen == ["RUNNING"]
    state = _state(config, "pb-t")
    assert state["status"] == "FAILED" and state["reason"].startswith("stopped by SIGTERM")
    stops = [r for r in caplog.records if r.getMessage().startswith("Stopping: stopped by SIGTERM")]
    assert len(stops) == 1 and not any(r.exc_info for r in caplog.records), caplog.text


def test_resume_waits_until_the_last_run_is_removed_then_starts_again(db, tmp_path):
    from sdpbatch.control.resume import ResumeRefused, request_resume
    from sdpbatch.io.checkpoint import Checkpoint, checkpoint_dir, write_checkpoint

    config = db()
    controller = Controller(config, catalog(), capacity=CAPACITY)
    _create(config, "pb-r", params={"buffer_img": "img-r"})
    controller.reconcile()
    _claim_and_wait(config, "pb-r")
    with pytest.raises(ResumeRefused, match="pb-r is WAITING: only a FAILED block"):
        request_resume(config, "pb-r", data_root=tmp_path)
    _set_status(config, "pb-r", "FAILED")
    for txn in config.txn():  # the deployer has not finished removing the last run
        txn.create_deployment_state("proc-pb-r-workflow", {"status": "EXITED"})
    controller.reconcile()  # ended: its deployment entries go, the state stays
    with pytest.raises(ResumeRefused, match="still being removed"):
        request_resume(config, "pb-r", data_root=tmp_path)
    for txn in config.txn():  # a request already made waits for the removal too
        txn.update_pb_state("pb-r", {**txn.get_pb_state("pb-r"), "resume_requested": True})
    controller.reconcile()
    assert _state(config, "pb-r")["status"] == "FAILED"
    for txn in config.txn():
        txn.delete("/deploy/proc-pb-r-workflow/state")
        txn.update_pb_state("pb-r", {**txn.get_pb_state("pb-r"), "resume_requested": False})
    with pytest.raises(ResumeRefused, match="no checkpoint at .*img-r.checkpoint"):
        request_resume(config, "pb-r", data_root=tmp_path)
    write_checkpoint(checkpoint_dir(tmp_path / "img-r"), Checkpoint({"next_cycle": 3}, {}))
    found = request_resume(config, "pb-r", data_root=tmp_path)
    assert found.cycles_done == 2
    controller.reconcile()
    state = _state(config, "pb-r")
    assert state == {"status": "STARTING", "resources_available": False, "resume": True,
                     "resumed": 1}  # fmt: skip
    for txn in config.txn():
        assert txn.get_deployment("proc-pb-r-workflow") is not None
