"""The web server's JSON API, events and files, against a real ``sdpbatch web`` process and a
real etcd: what it shows is what the database and the files hold, it serves nothing outside the
buffers and logs of its data root, and nothing can be changed through it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import numpy as np
import psutil
import pytest
from matplotlib import image as mpimg

from etcd_fixture import *  # noqa: F403  (fixtures etcd_server, etcd_clean)
from sdpbatch.control.buffers import make_buffer
from sdpbatch.control.configdb import Config
from sdpbatch.control.system.processes import stop_process
from sdpbatch.vocabulary import DEFAULT_PRODUCT_PREFIX, product_files
from web_fixture import EventStream, get, get_json, make_product, start_web

SBI_ID = "sbi-web-20200101-00000"
PB_RT, PB_BATCH = "pb-web-20200101-00001", "pb-web-20200101-00002"
IMG = f"buff-{PB_BATCH}-img"
DASK = f"proc-{PB_RT}-dask"
SECRET = "secret-outside-the-data-root"
LOG_LINES = [f"INFO:batch_imaging:line {k}" for k in range(5)]
WORKFLOW = {"type": "batch", "id": "batch_imaging", "version": "0.1.0"}


def _fill_database(config: Config, data: os.PathLike, log: os.PathLike) -> None:
    for txn in config.txn():
        txn.create_sbi(
            SBI_ID,
            {
                "id": SBI_ID,
                "status": "ACTIVE",
                "subarray_id": "01",
                "pb_realtime": [PB_RT],
                "pb_batch": [PB_BATCH],
                "scan_types": [],
            },
        )
        txn.create_pb({"id": PB_RT, "sbi_id": SBI_ID, "workflow": {**WORKFLOW, "type": "realtime"}})
        txn.create_pb(
            {
                "id": PB_BATCH,
                "sbi_id": SBI_ID,
                "workflow": WORKFLOW,
                "dependencies": [{"pb_id": PB_RT, "type": ["none"]}],
            }
        )
        txn.create_pb_state(PB_RT, {"status": "RUNNING", "resources_available": True})
        txn.create_pb_state(
            PB_BATCH, {"status": "FAILED", "reason": "disk full (test)", "log": str(log)}
        )
        txn.create_deployment({"id": IMG, "type": "buffer", "args": {"pb_id": PB_BATCH}})
        txn.create_deployment({"id": DASK, "type": "dask", "args": {"n_workers": 1}})
        scheduler = {
            "name": f"{DASK}-scheduler",
            "pid": os.getpid(),
            "command": ["dask", "scheduler"],
            "log_path": str(log.parent / f"{DASK}.log"),
            "started": psutil.Process().create_time(),
        }
        txn.create_deployment_state(
            DASK,
            {
                "status": "RUNNING",
                "type": "dask",
                "scheduler_address": "tcp://127.0.0.1:41234",
                "dashboard": 41235,
                "log": scheduler["log_path"],
                "processes": [scheduler],
            },
        )
    make_buffer(config, data, IMG, pb_id=PB_BATCH)


@pytest.fixture
def site(etcd_clean, tmp_path):
    """A data root with an SBI, two blocks, a product, a log and traps outside; its server."""
    host, port = etcd_clean
    data = tmp_path / "data"
    (data / "logs").mkdir(parents=True)
    log = data / "logs" / f"proc-{PB_BATCH}-workflow.log"
    log.write_text("\n".join(LOG_LINES) + "\n")
    (tmp_path / "secret.txt").write_text(SECRET)
    (data / "system.json").write_text('{"note": "' + SECRET + '"}')
    config = Config("etcd3", host=host, port=port)
    _fill_database(config, data, log)
    product = make_product(data / IMG)
    (data / IMG / "link-out").symlink_to(tmp_path / "secret.txt")
    (data / "buff-linked").symlink_to(tmp_path)  # a buffer-like name leading outside
    env = {"SDP_CONFIG_BACKEND": "etcd3", "SDP_CONFIG_HOST": host, "SDP_CONFIG_PORT": str(port)}
    record, url = start_web(data, tmp_path / "web.log", env)
    try:
        yield {"url": url, "config": config, "data": data, "log": log, "product": product}
    finally:
        stop_process(record.pid, timeout=10)
        config.close()


def test_overview_and_block_show_the_database(site):
    url = site["url"]
    snapshot = get_json(url, "/api/overview")
    assert [s["id"] for s in snapshot["sbis"]] == [SBI_ID]
    assert snapshot["sbis"][0]["processing_blocks"] == [PB_RT, PB_BATCH]
    blocks = {pb["id"]: pb for pb in snapshot["processing_blocks"]}
    assert blocks[PB_RT]["status"] == "RUNNING"
    assert blocks[PB_BATCH]["status"] == "FAILED"
    assert blocks[PB_BATCH]["reason"] == "disk full (test)"
    assert blocks[PB_BATCH]["dependencies"] == [PB_RT]
    assert blocks[PB_RT]["resources_held"] and not blocks[PB_BATCH]["resources_held"]
    assert [b["name"] for b in snapshot["buffers"]] == [IMG] and snapshot["buffers"][0]["product"]

    block = get_json(url, f"/api/blocks/{PB_BATCH}")
    assert (block["status"], block["reason"]) == ("FAILED", "disk full (test)")
    assert block["workflow_log"] == f"logs/{site['log'].name}"
    realtime = get_json(url, f"/api/blocks/{PB_RT}")
    assert realtime["dependents"] == [PB_BATCH]
    [dask] = realtime["deployments"]
    assert dask["dashboard_url"] == "http://127.0.0.1:41235/status"
    assert dask["processes"][0]["alive"] is True and dask["log"] == f"logs/{DASK}.log"
    [buffer] = block["buffers"]
    files = {f["name"]: f for f in buffer["files"]}
    for name in (product_files(DEFAULT_PRODUCT_PREFIX)["restored"], "qa.json"):
        assert files[name]["size_bytes"] == (site["data"] / IMG / name).stat().st_size
    assert buffer["product"] is True
    assert [d["id"] for d in block["deployments"]] == [IMG]  # the buffer's deployment entry

    log = get_json(url, f"/api/blocks/{PB_BATCH}/log?offset=0")
    assert log["lines"] == LOG_LINES and log["next_offset"] == site["log"].stat().st_size
    for missing in ("/api/blocks/pb-none-20200101-00009", "/api/blocks/bad..id",
                    "/api/buffers/buff-none", "/api/products/buff-none"):  # fmt: skip
        status, _, body = get(url, missing)
        assert status == 404, missing
        assert "error" in json.loads(body)


TRAVERSALS = [
    "/files/../secret.txt",
    "/files/../system.json",
    "/files/%2e%2e/system.json",
    "/files/..%2fsystem.json",
    f"/files/{IMG}/../../secret.txt",
    f"/files/{IMG}/..%2f..%2fsecret.txt",
    f"/files/{IMG}/%2e%2e/%2e%2e/secret.txt",
    "/files//etc/passwd",
    "/files/%2fetc%2fpasswd",
    "/files/system.json",
    "/files/etcd/member/snap/db",
    "/files/tango/tango_database.db",
    f"/files/{IMG}/link-out",
    "/files/buff-linked/secret.txt",
    f"/files/logs/../{IMG}/../system.json",
    f"/files/{IMG}/qa.json%00.png",
    f"/files/{IMG}\\..\\..\\secret.txt",
    "/render/..%2f..%2fsecret/restored.png",
    "/api/products/..%2f..",
    "/api/products/buff-linked",
    "/api/buffers/..%2fetc",
]


def test_only_files_of_buffers_and_logs_are_served(site):
    url = site["url"]
    status, headers, body = get(url, f"/files/{IMG}/qa.json")
    assert status == 200 and body == (site["data"] / IMG / "qa.json").read_bytes()
    assert headers["Content-Security-Policy"] == "sandbox"  # never a page of this site
    status, _, body = get(url, f"/files/logs/{site['log'].name}")
    assert status == 200 and body.decode().splitlines() == LOG_LINES
    for path in TRAVERSALS:
        status, _, body = get(url, path)
        assert status in (400, 404), (path, status)
        assert SECRET.encode() not in body, path


def test_nothing_can_be_changed_through_the_server(site):
    url, config = site["url"], site["config"]

    def everything() -> dict:
        for txn in config.txn():
            return {k: txn.get(k) for k in txn.list_keys("/", recurse=True)}

    before = everything()
    files_before = sorted(p.relative_to(site["data"]) for p in site["data"].rglob("*"))
    paths = ["/", "/api/overview", f"/api/blocks/{PB_BATCH}", f"/api/buffers/{IMG}",
             f"/files/{IMG}/qa.json", "/api/events", "/static/common.js", "/nowhere"]  # fmt: skip
    for path in paths:
        for method in ("POST", "PUT", "PATCH", "DELETE"):
            status, headers, _ = get(url, path, method=method)
            assert status == 405 and headers["Allow"] == "GET, HEAD", (method, path)
    assert everything() == before
    assert sorted(p.relative_to(site["data"]) for p in site["data"].rglob("*")) == files_before
    status, _, _ = get(url, "/api/overview", headers={"Host": "attacker.example"})
    assert status == 400  # bound to loopback: no DNS rebinding
    status, headers, body = get(url, "/")
    assert status == 200 and "form-action 'none'" in headers["Content-Security-Policy"]
    assert b"<form" not in body


def test_events_follow_the_database(site):
    url, config = site["url"], site["config"]
    stream = EventStream(url, "/api/events")
    try:
        first = json.loads(stream.next("overview")[1])
        assert {pb["id"]: pb["status"] for pb in first["processing_blocks"]}[PB_RT] == "RUNNING"
        latencies = []
        for status in ("FINISHED", "RUNNING", "FINISHED"):
            for txn in config.txn():
                txn.update_pb_state(PB_RT, {"status": status, "resources_available": True})
            committed = time.time()
            while True:
                snapshot = json.loads(stream.next("overview")[1])
                states = {pb["id"]: pb["status"] for pb in snapshot["processing_blocks"]}
                if states[PB_RT] == status:
                    latencies.append(time.time() - committed)
                    break
        print(f"database commit -> overview event: {[f'{1e3 * t:.0f} ms' for t in latencies]}")
        assert max(latencies) < 5.0  # a watch, not the 2 s refresh: well under it on a quiet box
    finally:
        stream.close()


def test_the_workflow_log_streams(site):
    url, log = site["url"], site["log"]
    stream = EventStream(url, f"/api/blocks/{PB_BATCH}/log/stream")
    try:
        event_id, data = stream.next("lines")
        assert json.loads(data)["lines"] == LOG_LINES and int(event_id) == log.stat().st_size
        with open(log, "a") as f:
            f.write("INFO:batch_imaging:Running ICAL pipeline\npartial")
        event_id, data = stream.next("lines")
        assert json.loads(data)["lines"] == ["INFO:batch_imaging:Running ICAL pipeline"]
        with open(log, "a") as f:
            f.write(" line ends\n")
        assert json.loads(stream.next("lines")[1])["lines"] == ["partial line ends"]
    finally:
        stream.close()
    resumed = EventStream(
        url, f"/api/blocks/{PB_BATCH}/log/stream", headers={"Last-Event-ID": event_id}
    )
    try:
        assert json.loads(resumed.next("lines")[1])["lines"] == ["partial line ends"]
    finally:
        resumed.close()


def test_the_product_is_shown_as_the_files_hold_it(site, tmp_path):
    url, p = site["url"], site["product"]
    view = get_json(url, f"/api/products/{IMG}")
    restored = view["images"]["restored"]
    assert restored["beam"]["bmaj_deg"] == pytest.approx(np.degrees(p.beam[0]), rel=1e-12)
    assert restored["beam"]["bpa_deg"] == pytest.approx(np.degrees(p.beam[2]), rel=1e-12)
    assert restored["peak"] == pytest.approx(5.0, rel=1e-6)  # float32 in the FITS
    assert restored["npixel"] == [p.npixel, p.npixel]
    assert restored["cell_deg"] == pytest.approx(np.degrees(p.cellsize), rel=1e-12)
    assert view["images"]["residual"]["beam"] is None  # drawn with the restored image's
    assert view["gains"] == [{"term": "G", "stations": 6, "times": 4, "frequencies": 1}]

    [term] = get_json(url, f"/api/products/{IMG}/gains")["terms"]
    assert term["stations"] == p.stations and term["axis"] == "time"
    assert term["x"] == pytest.approx((p.times - p.times[0]) / 60.0)
    for s in range(len(p.stations)):
        want = np.degrees(np.angle(p.gains[:, s, 0]))
        got = term["phase_deg"][s]
        for t in range(len(p.times)):
            if p.weights[t, s, 0] == 0:
                assert got[t] is None and term["amplitude"][s][t] is None
            else:
                assert got[t] == pytest.approx(want[t], abs=1e-9)
                assert term["amplitude"][s][t] == pytest.approx(abs(p.gains[t, s, 0]), rel=1e-12)
    assert get_json(url, f"/api/products/{IMG}/qa")["cycles"] == p.cycles

    for figure in ("restored", "residual", "gains", "qa"):
        status, headers, body = get(url, f"/render/{IMG}/{figure}.png")
        assert status == 200 and headers["Content-Type"] == "image/png", figure
        (tmp_path / f"{figure}.png").write_bytes(body)
        assert mpimg.imread(tmp_path / f"{figure}.png").shape[0] > 300
    assert get(url, f"/render/{IMG}/other.png")[0] == 404


def test_a_product_named_otherwise_is_shown_with_its_images(site, tmp_path):
    """A block run with ``prefix`` (``-name``) field1: the overview, the block and the product
    page show it, with its images, as they show a product of the default name."""
    url, config, data = site["url"], site["config"], site["data"]
    custom = f"buff-{PB_BATCH}-named"
    make_buffer(config, data, custom, pb_id=PB_BATCH)
    make_product(data / custom, prefix="field1")
    assert not (data / custom / product_files(DEFAULT_PRODUCT_PREFIX)["restored"]).exists()
    buffers = {b["name"]: b for b in get_json(url, "/api/overview")["buffers"]}
    assert buffers[custom]["product"] is True and buffers[IMG]["product"] is True
    block = {b["name"]: b for b in get_json(url, f"/api/blocks/{PB_BATCH}")["buffers"]}
    assert block[custom]["product"] is True

    view = get_json(url, f"/api/products/{custom}")
    assert view["prefix"] == "field1"
    assert {role: s["file"] for role, s in view["images"].items()} == {
        "restored": "field1_restored.fits", "residual": "field1_residual.fits"
    }  # fmt: skip
    assert view["gains"] == [{"term": "G", "stations": 6, "times": 4, "frequencies": 1}]
    assert len(get_json(url, f"/api/products/{custom}/gains")["terms"]) == 1
    status, headers, body = get(url, f"/products/{custom}")  # the page: its script reads these
    assert status == 200 and headers["Content-Type"].startswith("text/html")
    for figure in (*view["images"], "gains", "qa"):
        status, headers, body = get(url, f"/render/{custom}/{figure}.png")
        assert status == 200 and headers["Content-Type"] == "image/png", figure
        (tmp_path / f"{figure}.png").write_bytes(body)
        assert mpimg.imread(tmp_path / f"{figure}.png").shape[0] > 300


def test_the_command_refuses_bad_input(tmp_path):
    def web(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-m", "sdpbatch.cli", "web", *args],
            capture_output=True,
            text=True,
            timeout=60,
        )

    result = web("--data-dir", str(tmp_path / "missing"))
    assert result.returncode == 2 and "--data-dir" in result.stderr
    assert "Traceback" not in result.stderr and len(result.stderr.splitlines()) == 1
    result = web("--data-dir", str(tmp_path), "--port", "70000")
    assert result.returncode == 2 and "--port 70000" in result.stderr
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        result = web("--data-dir", str(tmp_path), "--port", str(port))
    assert result.returncode == 2 and f"127.0.0.1:{port}" in result.stderr
    assert "Traceback" not in result.stderr


def test_without_the_database_the_files_are_still_shown(tmp_path):
    """etcd away: the database's pages say so (JSON errors, an error event), the products and
    logs under the data root are still served."""
    from sdpbatch.control.system.etcd_server import free_port

    data = tmp_path / "data"
    make_product(data / IMG)
    env = {"SDP_CONFIG_BACKEND": "etcd3", "SDP_CONFIG_HOST": "127.0.0.1",
           "SDP_CONFIG_PORT": str(free_port())}  # fmt: skip
    record, url = start_web(data, tmp_path / "web.log", env)
    try:
        for path in ("/api/overview", f"/api/blocks/{PB_BATCH}"):
            status, headers, body = get(url, path)
            assert status >= 500 and "error" in json.loads(body), (path, status, body[:200])
        assert get_json(url, "/api/system")["database"]["ok"] is False
        assert get_json(url, f"/api/products/{IMG}")["images"]["restored"]["peak"] > 4
        assert get(url, f"/render/{IMG}/qa.png")[0] == 200
        stream = EventStream(url, "/api/events")
        try:
            assert json.loads(stream.next("overview")[1])["error"]  # the page says why
        finally:
            stream.close()
    finally:
        stop_process(record.pid, timeout=10)
