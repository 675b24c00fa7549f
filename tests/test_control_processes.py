"""Processes started by id into their own session, logged to a file, stopped with their children."""

from __future__ import annotations

import sys
import time

import psutil

from sdpbatch.control.system.processes import ProcessRecord, is_alive, start_process, stop_process
from waiting import wait_until

SPAWNER = """
import subprocess, sys, time
child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
print("child", child.pid, flush=True)
time.sleep(60)
"""

STUBBORN = """
import signal, time
signal.signal(signal.SIGTERM, signal.SIG_IGN)
print("ready", flush=True)
time.sleep(60)
"""


def _wait_for_line(path, prefix, timeout=10.0) -> str:
    def lines() -> list[str]:
        return [line for line in path.read_text().splitlines() if line.startswith(prefix)]

    wait_until(f"{prefix!r} in {path}", lines, timeout, poll=0.05)
    return lines()[0]


def test_stop_takes_the_whole_group(tmp_path):
    log = tmp_path / "logs" / "spawner.log"
    record = start_process("spawner", [sys.executable, "-c", SPAWNER], log_path=log)
    child_pid = int(_wait_for_line(log, "child").split()[1])
    assert is_alive(record.pid) and is_alive(child_pid)
    assert ProcessRecord.from_dict(record.to_dict()) == record
    assert stop_process(record.pid, timeout=5)
    assert not is_alive(record.pid)
    assert not psutil.pid_exists(child_pid) or not is_alive(child_pid)
    assert stop_process(record.pid) is False  # already gone


def test_sigterm_ignored_then_killed(tmp_path):
    log = tmp_path / "stubborn.log"
    record = start_process("stubborn", [sys.executable, "-c", STUBBORN], log_path=log)
    _wait_for_line(log, "ready")
    t0 = time.monotonic()
    assert stop_process(record.pid, timeout=0.5)
    assert 0.4 < time.monotonic() - t0 < 5
    assert not is_alive(record.pid)


def test_env_and_output_and_no_shell(tmp_path):
    log = tmp_path / "env.log"
    record = start_process(
        "env",
        [sys.executable, "-c", "import os; print(os.environ['SDP_X']); print('$HOME')"],
        log_path=log,
        env={"SDP_X": "42"},
    )
    wait_until("the process to end", lambda: not is_alive(record.pid), 10, poll=0.05)
    assert log.read_text().split() == ["42", "$HOME"]  # arguments are not shell-expanded


def test_reused_pid_is_not_ours(tmp_path):
    record = start_process(
        "sleeper", [sys.executable, "-c", "import time; time.sleep(30)"], log_path=tmp_path / "s"
    )
    assert not is_alive(record.pid, started=record.started - 100)
    assert stop_process(record.pid, started=record.started - 100) is False
    assert stop_process(record.pid, started=record.started)


def test_stop_a_process_that_leads_no_group():
    """A pid that is not a group leader is stopped by itself, promptly, not the caller's group."""
    import subprocess

    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        start = time.monotonic()
        assert stop_process(child.pid, timeout=10.0)
        assert child.wait(timeout=5) is not None
        assert time.monotonic() - start < 5.0
    finally:
        if child.poll() is None:
            child.kill()
