"""Starting and stopping the system's processes: by id, never through a shell.

Each process gets its own session (so its process group id is its pid and stopping it stops
everything it spawned), stdin from /dev/null and stdout+stderr appended to a log file.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import psutil

_CHILDREN: dict[int, subprocess.Popen] = {}  # our own children, reaped by is_alive
_EXIT_CODES: dict[int, int] = {}  # exit status of reaped children


@dataclass(frozen=True)
class ProcessRecord:
    """A started process: enough to find, show and stop it later (also from another process)."""

    name: str
    pid: int
    command: list[str]
    log_path: Path
    started: float = field(default_factory=time.time)  # unix time (s)

    def alive(self) -> bool:
        """True if this process still runs (not a zombie, its pid not reused)."""
        return is_alive(self.pid, started=self.started)

    def to_dict(self) -> dict:
        return {**asdict(self), "log_path": str(self.log_path)}

    @classmethod
    def from_dict(cls, raw: dict) -> ProcessRecord:
        return cls(
            name=raw["name"],
            pid=int(raw["pid"]),
            command=list(raw["command"]),
            log_path=Path(raw["log_path"]),
            started=float(raw["started"]),
        )


def start_process(
    name: str,
    command: list[str],
    *,
    log_path: Path,
    env: dict[str, str] | None = None,
    cwd: Path | str | None = None,
    pass_fds: tuple[int, ...] = (),
) -> ProcessRecord:
    """Start ``command`` in a new session with its output appended to ``log_path``.

    ``env`` entries are added to this process's environment; ``pass_fds`` stay open in it.
    """
    if not command or not all(isinstance(part, str) for part in command):
        raise ValueError(f"process {name}: command must be a non-empty list of strings")
    log_path = Path(log_path)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    full_env = {**os.environ, **(env or {})}
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=full_env,
            cwd=cwd,
            start_new_session=True,
            close_fds=True,
            pass_fds=pass_fds,
        )
    _CHILDREN[proc.pid] = proc
    started = time.time()
    try:
        started = psutil.Process(proc.pid).create_time()
    except psutil.Error:
        pass
    return ProcessRecord(name, proc.pid, list(command), log_path, started)


def _reap(pid: int) -> None:
    proc = _CHILDREN.get(pid)
    if proc is not None and proc.poll() is not None:
        _EXIT_CODES[pid] = proc.returncode
        del _CHILDREN[pid]


def _same_process(pid: int, started: float | None) -> psutil.Process | None:
    """The live (non-zombie) process ``pid``, if it is the one started at ``started``."""
    _reap(pid)
    try:
        proc = psutil.Process(pid)
        if proc.status() == psutil.STATUS_ZOMBIE:
            return None
        if started is not None and abs(proc.create_time() - started) > 1.0:
            return None  # the pid was reused by another process
        return proc
    except psutil.Error:
        return None


def is_alive(pid: int, *, started: float | None = None) -> bool:
    """True if ``pid`` runs (not a zombie) and, with ``started``, is the same process."""
    return _same_process(pid, started) is not None


def _is_zombie(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.Error:
        return True


def _group_members(pgid: int) -> list[psutil.Process]:
    members = []
    for proc in psutil.process_iter(["pid", "status"]):
        try:
            if proc.info["status"] != psutil.STATUS_ZOMBIE and os.getpgid(proc.pid) == pgid:
                members.append(proc)
        except (ProcessLookupError, psutil.Error):
            continue
    return members


def stop_process(pid: int, *, timeout: float = 10.0, started: float | None = None) -> bool:
    """Stop process ``pid`` and its process group: SIGTERM, then SIGKILL after ``timeout`` s.

    Returns True if something was stopped, False if it was already gone.
    """
    leader = _same_process(pid, started)
    if leader is None and psutil.pid_exists(pid) and not _is_zombie(pid):
        return False  # the pid now belongs to another process: not ours to stop
    members = _group_members(pid)  # a group id is not reused while the group has members
    if leader is None and not members:
        return False
    try:
        group_leader = os.getpgid(pid) == pid
    except ProcessLookupError:
        group_leader = True  # the leader is gone but its group still has members
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            if group_leader:
                os.killpg(pid, sig)
            elif leader is not None:
                leader.send_signal(sig)
        except (ProcessLookupError, psutil.NoSuchProcess):
            pass
        except PermissionError:
            if leader is not None:
                leader.send_signal(sig)
        end = time.monotonic() + (timeout if sig == signal.SIGTERM else 5.0)
        while time.monotonic() < end:
            _reap(pid)
            if not is_alive(pid) and not _group_members(pid):
                return True
            time.sleep(0.05)
    _reap(pid)
    return True


def stop_together(records: list[ProcessRecord], *, timeout: float = 10.0) -> list[str]:
    """Stop the processes of ``records`` (and their groups) at once: SIGTERM to all, then
    :func:`stop_process` each (SIGKILL after ``timeout`` s); the names of those stopped."""
    for record in records:
        leader = _same_process(record.pid, record.started)
        if leader is not None:
            try:
                os.killpg(record.pid, signal.SIGTERM)
            except (ProcessLookupError, PermissionError):
                with contextlib.suppress(psutil.Error):
                    leader.terminate()
    return [r.name for r in records if stop_process(r.pid, started=r.started, timeout=timeout)]


def exit_code(pid: int) -> int | None:
    """Exit status of a child started by this process, if it has ended (else None)."""
    proc = _CHILDREN.get(pid)
    if proc is None:
        return _EXIT_CODES.get(pid)
    return proc.poll()
