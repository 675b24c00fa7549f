"""Config DB: the same behaviour on the memory backend and on a real etcd on loopback."""

from __future__ import annotations

import multiprocessing
import threading
import time

import pytest

from etcd_fixture import *  # noqa: F403  (fixtures etcd_server, etcd_clean)
from sdpbatch.control.configdb import (
    Config,
    ConfigCollision,
    ConfigVanished,
    InvalidId,
    MemoryStore,
    TransactionConflict,
)
from waiting import wait_until

WORKFLOW = {"type": "batch", "id": "batch_imaging", "version": "0.1.0"}


@pytest.fixture(params=["memory", "etcd3"])
def connect(request):
    """Factory of clients of one fresh database (shared store / emptied etcd)."""
    clients = []
    if request.param == "memory":
        store = MemoryStore()

        def make(**kw):
            clients.append(Config("memory", store=store, **kw))
            return clients[-1]
    else:
        host, port = request.getfixturevalue("etcd_clean")

        def make(**kw):
            clients.append(Config("etcd3", host=host, port=port, **kw))
            return clients[-1]

    yield make
    for client in clients:
        client.close()


def _pb(pb_id: str, **extra) -> dict:
    return {"id": pb_id, "workflow": WORKFLOW, "parameters": {}, **extra}


def test_entities_round_trip_and_errors(connect):
    config = connect()
    for txn in config.txn():
        txn.create_sbi("sbi-1", {"id": "sbi-1", "status": "ACTIVE"})
        txn.create_pb(_pb("pb-a", sbi_id="sbi-1"))
        txn.create_pb_state("pb-a", {"status": "STARTING"})
        txn.create_deployment({"id": "proc-pb-a-workflow", "type": "process", "args": {}})
        txn.create_subarray("01", {"state": "ON"})
    for txn in config.txn():
        assert txn.list_sbis() == ["sbi-1"]
        assert txn.list_pbs() == ["pb-a"]  # /pb/pb-a/state is not a block
        assert txn.get_pb("pb-a")["sbi_id"] == "sbi-1"
        assert txn.get_pb("pb-a")["dependencies"] == []
        assert txn.get_pb_state("pb-a") == {"status": "STARTING"}
        assert txn.list_deployments() == ["proc-pb-a-workflow"]
        assert txn.get_subarray("01") == {"state": "ON"}
        assert txn.get_pb("pb-missing") is None
    with pytest.raises(ConfigCollision):
        for txn in config.txn():
            txn.create_pb(_pb("pb-a"))
    with pytest.raises(ConfigVanished):
        for txn in config.txn():
            txn.update_pb_state("pb-missing", {"status": "RUNNING"})
    for bad in ("pb_a", "", "x" * 65, "pb/a", "../x", "pb-a\n"):
        with pytest.raises(InvalidId, match="processing block"):
            for txn in config.txn():
                txn.create_pb(_pb(bad))
    with pytest.raises(InvalidId, match="deployment"):
        for txn in config.txn():
            txn.create_deployment({"id": "proc.x", "type": "process", "args": {}})
    with pytest.raises(InvalidId, match="subarray"):
        for txn in config.txn():
            txn.get_subarray("1")
    for txn in config.txn():  # nothing of the failed transactions was written
        assert txn.list_pbs() == ["pb-a"]
        assert txn.get_pb_state("pb-missing") is None


def test_new_pb_ids_count_up(connect):
    config = connect()
    ids = []
    for _ in range(3):
        for txn in config.txn():
            pb_id = txn.new_pb_id("sdpbatch")
            txn.create_pb(_pb(pb_id))
        ids.append(pb_id)
    assert [i.rsplit("-", 1)[1] for i in ids] == ["00001", "00002", "00003"]


def test_conflict_reruns_the_body(connect):
    config, other = connect(), connect()
    for txn in config.txn():
        txn.create("/counter", 0)
    runs = 0
    for txn in config.txn():
        runs += 1
        value = txn.get("/counter")
        if runs == 1:  # another client changes the key we read: our commit must fail
            for txn2 in other.txn():
                txn2.update("/counter", txn2.get("/counter") + 10)
        txn.update("/counter", value + 1)
    assert runs == 2
    for txn in config.txn():
        assert txn.get("/counter") == 11


def test_listing_conflicts_with_a_new_key(connect):
    config, other = connect(), connect()
    runs = 0
    for txn in config.txn():
        runs += 1
        n = len(txn.list_pbs())
        if runs == 1:
            for txn2 in other.txn():
                txn2.create_pb(_pb("pb-new"))
        txn.create("/count", n)
    assert runs == 2
    for txn in config.txn():
        assert txn.get("/count") == 1


def test_bounded_retries(connect):
    config, other = connect(), connect()
    for txn in config.txn():
        txn.create("/k", 0)
    with pytest.raises(TransactionConflict):
        for txn in config.txn(max_retries=3):
            txn.get("/k")
            for txn2 in other.txn():
                txn2.update("/k", txn2.get("/k") + 1)
            txn.create("/never", 1)


def test_wait_loop_wakes_on_change_only(connect):
    config, other = connect(), connect()
    for txn in config.txn():
        txn.create("/flag", "no")
        txn.create("/unrelated", 0)
    runs = []

    def waiter():
        for txn in config.txn():
            runs.append(time.monotonic())
            if txn.get("/flag") != "yes":
                txn.loop(wait=True)

    thread = threading.Thread(target=waiter)
    thread.start()
    wait_until("the waiter's first pass", lambda: len(runs) == 1, 10)
    for i in range(3):  # writes to keys not read by the waiter do not wake it
        for txn in other.txn():
            txn.update("/unrelated", i)
    time.sleep(0.3)
    assert len(runs) == 1
    t_set = time.monotonic()
    for txn in other.txn():
        txn.update("/flag", "yes")
    thread.join(timeout=10)
    assert not thread.is_alive()
    assert len(runs) == 2
    assert runs[1] - t_set < 1.0


def test_watcher_iterates_on_change(connect):
    config, other = connect(), connect()
    seen = []

    def controller():
        for watcher in config.watcher(timeout=10):
            for txn in watcher.txn():
                pbs = txn.list_pbs()
            seen.append(pbs)
            if len(pbs) == 2:
                return

    thread = threading.Thread(target=controller)
    thread.start()
    for pb_id in ("pb-1", "pb-2"):
        time.sleep(0.2)
        for txn in other.txn():
            txn.create_pb(_pb(pb_id))
    thread.join(timeout=10)
    assert not thread.is_alive()
    assert seen[0] == [] and seen[-1] == ["pb-1", "pb-2"]
    assert len(seen) <= 4


def test_owner_key_lives_with_its_lease(connect):
    ttl = 2.0
    owner, observer = connect(lease_ttl=ttl), connect()
    for txn in owner.txn():
        txn.create_pb(_pb("pb-own"))
    for txn in owner.txn():
        txn.take_pb_ownership("pb-own")
    with pytest.raises(ConfigCollision, match="already claimed"):
        for txn in observer.txn():
            txn.take_pb_ownership("pb-own")
    time.sleep(ttl * 1.5)  # kept alive beyond its TTL
    for txn in observer.txn():
        assert txn.get_pb_owner("pb-own")["pid"] == owner.owner_info["pid"]
    owner.stop_keepalive()  # the owner hangs: its key must vanish, and a waiter must wake
    t0 = time.monotonic()
    for txn in observer.txn():
        if txn.get_pb_owner("pb-own") is not None:
            txn.loop(wait=True, timeout=4 * ttl)
    assert time.monotonic() - t0 < 3 * ttl
    for txn in observer.txn():
        assert txn.get_pb_owner("pb-own") is None


def test_close_releases_ownership(connect):
    owner, observer = connect(), connect()
    for txn in owner.txn():
        txn.create_pb(_pb("pb-c"))
    for txn in owner.txn():
        txn.take_pb_ownership("pb-c")
    owner.close()
    for txn in observer.txn():
        assert txn.get_pb_owner("pb-c") is None
        txn.take_pb_ownership("pb-c")


def test_threads_lose_no_update(connect):
    config = connect()
    for txn in config.txn():
        txn.create("/counter", 0)
    clients = [connect() for _ in range(4)]

    def work(client):
        for _ in range(25):
            for txn in client.txn():
                txn.update("/counter", txn.get("/counter") + 1)

    threads = [threading.Thread(target=work, args=(c,)) for c in clients]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for txn in config.txn():
        assert txn.get("/counter") == 100


# --- several processes against a real etcd ----------------------------------------------------


def _increment(host: str, port: int, n: int) -> None:
    with Config("etcd3", host=host, port=port) as config:
        for _ in range(n):
            for txn in config.txn():
                txn.update("/counter", txn.get("/counter") + 1)


def _claim(host: str, port: int, start, results, ready) -> None:
    with Config("etcd3", host=host, port=port) as config:
        for txn in config.txn():  # connected
            txn.get_pb("pb-claim")
        ready.release()
        start.wait()
        try:
            for txn in config.txn():
                txn.take_pb_ownership("pb-claim")
            results.put("won")
            time.sleep(0.5)  # keep the claim while the other tries
        except ConfigCollision:
            results.put("lost")


def test_processes_lose_no_update(etcd_clean):
    host, port = etcd_clean
    with Config("etcd3", host=host, port=port) as config:
        for txn in config.txn():
            txn.create("/counter", 0)
        ctx = multiprocessing.get_context("spawn")
        procs = [ctx.Process(target=_increment, args=(host, port, 30)) for _ in range(4)]
        for p in procs:
            p.start()
        for p in procs:
            p.join(timeout=60)
            assert p.exitcode == 0
        for txn in config.txn():
            assert txn.get("/counter") == 120


def test_two_processes_claim_one_block_exactly_one_wins(etcd_clean):
    host, port = etcd_clean
    with Config("etcd3", host=host, port=port) as config:
        for txn in config.txn():
            txn.create_pb(_pb("pb-claim"))
        ctx = multiprocessing.get_context("spawn")
        start, results, ready = ctx.Event(), ctx.Queue(), ctx.Semaphore(0)
        args = (host, port, start, results, ready)
        procs = [ctx.Process(target=_claim, args=args) for _ in range(2)]
        for p in procs:
            p.start()
        for _ in procs:  # both connected and waiting
            assert ready.acquire(timeout=60)
        start.set()
        outcomes = sorted(results.get(timeout=30) for _ in procs)
        for p in procs:
            p.join(timeout=30)
        assert outcomes == ["lost", "won"]


def test_calls_wait_for_an_absent_etcd_with_bounded_back_off(tmp_path):
    """patience 0 fails at once; a bounded patience fails after it; FOREVER carries on when
    the server comes (the pause between tries never exceeds MAX_BACKOFF)."""
    from etcd_fixture import PrivateEtcd
    from sdpbatch.control.configdb import FOREVER, BackendUnavailable
    from sdpbatch.control.configdb.backend_etcd import MAX_BACKOFF

    server = PrivateEtcd(tmp_path)  # not started yet
    t0 = time.monotonic()
    with pytest.raises(BackendUnavailable, match="not reachable"):
        with Config("etcd3", port=server.port) as config:
            for txn in config.txn():
                txn.get("/x")
    assert time.monotonic() - t0 < 1.0
    t0 = time.monotonic()
    with pytest.raises(BackendUnavailable):
        with Config("etcd3", port=server.port, patience=1.5) as config:
            for txn in config.txn():
                txn.get("/x")
    assert 1.4 < time.monotonic() - t0 < 1.5 + MAX_BACKOFF
    got = []

    def patient() -> None:
        with Config("etcd3", port=server.port, patience=FOREVER) as config:
            for txn in config.txn():
                txn.create("/x", 1)
            for txn in config.txn():
                got.append(txn.get("/x"))

    thread = threading.Thread(target=patient)
    thread.start()
    time.sleep(3.0)
    assert thread.is_alive() and got == []
    server.start()
    started = time.monotonic()
    thread.join(timeout=30)
    try:
        assert got == [1] and time.monotonic() - started < MAX_BACKOFF + 2
    finally:
        server.stop()
