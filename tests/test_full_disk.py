"""A full disk, for real: a size-limited tmpfs (mounting one needs root; elsewhere these tests
skip and say why).  Every failure is one line naming the directory and the space needed,
exit status 2 for commands, FAILED with that reason for a block, and nothing half-written."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from etcd_fixture import PrivateEtcd
from sdpbatch.control.system.processes import start_process, stop_process

SIZE_MB = 30
SMALL_RUN = {
    "n_workers": 2,
    "nfreqwin": 3,
    "ntimes": 10,
    "rmax": 300.0,
    "npixel": 256,
    "cellsize": 0.0015,
    "nmajor": 1,
    "niter": 100,
    "flux_limit": 5.0,
}
TOO_BIG = {**SMALL_RUN, "nfreqwin": 8, "ntimes": 100}  # ~ 300 MB of MeasurementSets


@pytest.fixture
def small_fs(tmp_path) -> Iterator[Path]:
    """A 30 MB tmpfs mounted for the test."""
    if os.geteuid() != 0:
        pytest.skip("a size-limited filesystem needs root to mount (mount -t tmpfs -o size=30m)")
    mount = tmp_path / "small"
    mount.mkdir()
    result = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={SIZE_MB}m", "tmpfs", str(mount)],
        capture_output=True,
        text=True,
    )
    if result.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {result.stderr.strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], capture_output=True)


def sdpbatch(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "sdpbatch.cli", *args],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, **(env or {})},
    )


def error_lines(result: subprocess.CompletedProcess) -> list[str]:
    return [line for line in result.stderr.splitlines() if line.startswith("sdpbatch ")]


def partials(root: Path) -> list[Path]:
    return list(root.rglob("*.partial-*"))


def test_a_run_that_cannot_fit_is_refused_before_any_work(small_fs, tmp_path):
    params = tmp_path / "big.json"
    params.write_text(json.dumps(TOO_BIG))
    result = sdpbatch("run", str(params), "--data-dir", str(small_fs), "--no-progress")
    assert result.returncode == 2, result.stderr
    (line,) = error_lines(result)
    assert line.startswith(f"sdpbatch run: error: no space left on device under {small_fs}/")
    assert "needed about" in line and "MB free" in line and "Traceback" not in result.stderr
    assert list(small_fs.iterdir()) == []  # nothing was written


def _fill_when_writing_starts(root: Path, done: threading.Event) -> None:
    """Another writer fills the disk as soon as the run starts writing a product."""
    end = time.monotonic() + 120
    while not partials(root) and time.monotonic() < end and not done.is_set():
        time.sleep(0.005)
    try:
        with open(root / "someone-elses-file", "wb") as f:
            while True:
                f.write(b"\0" * 2**20)
                f.flush()
    except OSError:
        pass


def test_disk_filled_during_a_dask_run_is_one_line_and_leaves_nothing(small_fs, tmp_path):
    """The Dask workers die inside casacore ("FilebufIO: write error"): the command still
    says what happened in one line, and no half-written MeasurementSet is left."""
    params = tmp_path / "small.json"
    params.write_text(json.dumps(SMALL_RUN))
    done = threading.Event()
    filler = threading.Thread(target=_fill_when_writing_starts, args=(small_fs, done))
    filler.start()
    t0 = time.monotonic()
    result = sdpbatch("run", str(params), "--data-dir", str(small_fs), "--no-progress")
    settled = time.monotonic() - t0
    done.set()
    filler.join()
    assert result.returncode == 2, result.stderr
    (line,) = error_lines(result)
    assert line.startswith(f"sdpbatch run: error: no space left on device under {small_fs}/")
    assert partials(small_fs) == []
    print(f"\nfull disk during a Dask run: one-line error after {settled:.1f} s")


def test_up_on_a_small_filesystem_says_why(small_fs):
    from sdpbatch.control.system import lifecycle as system
    from sdpbatch.control.system.components import STARTERS
    from sdpbatch.control.system.data_root import Layout
    from sdpbatch.control.system.state import SystemControlError, SystemState

    result = sdpbatch("up", "--data-dir", str(small_fs / "data"))
    assert result.returncode == 2
    (line,) = error_lines(result)
    assert "etcd cannot start: no space left on device under" in line
    assert "needed about 70 MB" in line
    # without the pre-flight, etcd's own cause is reported from its log, not a Go stack
    state = SystemState(
        small_fs / "data", ports=system.choose_ports({}), running=True, run_id="full"
    )
    layout = Layout(state.data_dir)
    layout.logs.mkdir(parents=True, exist_ok=True)
    try:
        with pytest.raises(SystemControlError) as err:
            STARTERS["etcd"](state, layout)
    finally:
        system.down(state.data_dir)
    text = str(err.value)
    assert text.startswith("etcd exited during start-up: failed to create WAL: no space left")
    assert "\n" not in text and "goroutine" not in text


def test_block_fails_with_the_space_it_needed(small_fs, tmp_path, monkeypatch):
    etcd = PrivateEtcd(tmp_path)
    etcd.start()
    env = {**etcd.env, "SDPBATCH_DATA_DIR": str(small_fs), "SDPBATCH_WORKERS_PER_CORE": "2"}
    cli = [sys.executable, "-m", "sdpbatch.cli"]
    procs = [
        start_process(name, [*cli, name], log_path=tmp_path / f"{name}.log", env=env)
        for name in ("controller", "deployer")
    ]
    try:
        params = tmp_path / "big.json"
        params.write_text(json.dumps(TOO_BIG))
        created = sdpbatch("process", "batch:batch_imaging:0.1.0", str(params), env=env)
        assert created.returncode == 0, created.stderr
        pb_id = created.stdout.strip()
        from sdpbatch.control.configdb import Config

        with Config("etcd3", port=etcd.port, patience=5) as config:
            for txn in config.txn():
                state = txn.get_pb_state(pb_id) or {}
                if state.get("status") not in ("FINISHED", "FAILED"):
                    txn.loop(wait=True, timeout=90)
        assert state["status"] == "FAILED"
        assert state["reason"].startswith(
            f"no space left on device under {small_fs}/buff-{pb_id}-vis: needed about"
        )
        assert partials(small_fs) == []
    finally:
        for record in procs:
            stop_process(record.pid, timeout=20)
        etcd.stop()
