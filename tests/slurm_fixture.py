"""A real single-node SLURM cluster on loopback for the tests (and the engine benchmark).

Debian's ``slurm-wlm`` and ``munge`` are installed by the test set-up where they are missing
(:func:`system_packages.ensure_debian_packages`); the cluster lives in a scratch directory:
its own munge key and socket, ``slurm.conf`` with free ports, state, spool, logs and pid files.
``slurmctld`` and ``slurmd`` run as root (SLURM starts jobs as their users).  Stopping cancels
every job, waits for the queue to empty and stops the daemons by their pid files.

Use it in a test module with ``from slurm_fixture import *  # noqa: F403``; the fixture sets
``SLURM_CONF`` for the session so ``sbatch``/``squeue`` and everything started from the tests
talk to this cluster.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psutil
import pytest

from sdpbatch.control.system.etcd_server import free_port
from sdpbatch.control.system.processes import stop_process
from system_packages import ensure_debian_packages

__all__ = ["SlurmCluster", "slurm_cluster", "squeue"]

PACKAGES = ["slurm-wlm", "munge"]
BINARIES = ["munged", "slurmctld", "slurmd", "sbatch", "squeue", "scancel", "sinfo"]
PARTITION = "debug"
START_TIMEOUT = 60.0


def squeue(*args: str) -> list[list[str]]:
    """``squeue --noheader --format=%i|%j|%T ARGS``, split: [[job id, name, state], ...]."""
    out = subprocess.run(
        ["squeue", "--noheader", "--format=%i|%j|%T", *args],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    ).stdout
    return [line.strip().split("|") for line in out.splitlines() if line.strip()]


@dataclass
class SlurmCluster:
    """A single-node cluster in ``root``: one node of all CPUs, partition ``debug``."""

    root: Path
    node: str = ""
    cpus: int = 0
    memory_mib: int = 0

    @property
    def conf(self) -> Path:
        return self.root / "slurm.conf"

    @property
    def env(self) -> dict[str, str]:
        return {"SLURM_CONF": str(self.conf)}

    def start(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        for name in ("munge", "state", "spool", "log"):
            (self.root / name).mkdir(mode=0o700, exist_ok=True)
        self.node = socket.gethostname().split(".")[0]
        self.cpus = os.cpu_count() or 1
        self.memory_mib = min(8192, psutil.virtual_memory().total // 2**21)  # at most half
        key = self.root / "munge" / "munge.key"
        key.write_bytes(os.urandom(1024))
        key.chmod(0o400)
        self._run(
            "munged",
            "--force",
            f"--socket={self.root / 'munge' / 'munge.socket'}",
            f"--key-file={key}",
            f"--pid-file={self._pid_file('munged')}",
            f"--log-file={self.root / 'log' / 'munged.log'}",
            f"--seed-file={self.root / 'munge' / 'munged.seed'}",
        )
        self.conf.write_text(self._slurm_conf())
        self._run("slurmctld", "-f", str(self.conf))
        self._run("slurmd", "-f", str(self.conf), "-N", self.node)
        self._wait_idle()

    def _slurm_conf(self) -> str:
        r = self.root
        return f"""ClusterName=sdpbatch-test
SlurmctldHost={self.node}(127.0.0.1)
SlurmUser=root
SlurmctldPort={free_port()}
SlurmdPort={free_port()}
AuthType=auth/munge
AuthInfo=socket={r / "munge" / "munge.socket"}
CredType=cred/munge
StateSaveLocation={r / "state"}
SlurmdSpoolDir={r / "spool"}
SlurmctldPidFile={self._pid_file("slurmctld")}
SlurmdPidFile={self._pid_file("slurmd")}
SlurmctldLogFile={r / "log" / "slurmctld.log"}
SlurmdLogFile={r / "log" / "slurmd.log"}
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
JobAcctGatherType=jobacct_gather/none
MpiDefault=none
ReturnToService=2
NodeName={self.node} NodeAddr=127.0.0.1 CPUs={self.cpus} RealMemory={self.memory_mib} State=UNKNOWN
PartitionName={PARTITION} Nodes={self.node} Default=YES MaxTime=INFINITE State=UP
"""

    def _pid_file(self, daemon: str) -> Path:
        return self.root / f"{daemon}.pid"

    def _run(self, *command: str) -> None:
        """Start a daemon (it forks into the background and writes its pid file)."""
        result = subprocess.run(
            command, capture_output=True, text=True, timeout=30, env=self._env(), check=False
        )
        if result.returncode != 0:
            raise RuntimeError(f"{command[0]} did not start: {result.stderr or result.stdout}")

    def _env(self) -> dict[str, str]:
        return {**os.environ, **self.env}

    def _wait_idle(self) -> None:
        end = time.monotonic() + START_TIMEOUT
        state = ""
        while time.monotonic() < end:
            result = subprocess.run(
                ["sinfo", "--noheader", "--Node", "--format=%t"],
                capture_output=True,
                text=True,
                env=self._env(),
                check=False,
            )
            state = result.stdout.strip() or result.stderr.strip()
            if result.returncode == 0 and state in ("idle", "mix", "alloc"):
                return
            time.sleep(0.5)
        raise RuntimeError(f"the SLURM node is not up after {START_TIMEOUT:.0f} s ({state})")

    def stop(self) -> None:
        """Cancel every job, wait for the queue to empty, stop the daemons by pid file."""
        if self.conf.is_file() and self._pid_file("slurmctld").is_file():
            subprocess.run(["scancel", "--user=root"], env=self._env(), check=False, timeout=30)
            end = time.monotonic() + 45
            while time.monotonic() < end:
                out = subprocess.run(
                    ["squeue", "--noheader"], capture_output=True, text=True, env=self._env()
                )
                if out.returncode != 0 or not out.stdout.strip():
                    break
                time.sleep(0.5)
        for daemon in ("slurmd", "slurmctld", "munged"):
            path = self._pid_file(daemon)
            try:
                pid = int(path.read_text().split()[0])
            except (OSError, ValueError, IndexError):
                continue
            stop_process(pid, timeout=15)


def _reason_not_available() -> str | None:
    reason = ensure_debian_packages(PACKAGES, BINARIES)
    if reason:
        return reason
    if os.geteuid() != 0:
        return "a SLURM cluster's slurmd runs as root to start jobs; these tests are not root"
    return None


@pytest.fixture(scope="session")
def slurm_cluster(tmp_path_factory) -> Iterator[SlurmCluster]:
    """A running single-node SLURM cluster; ``SLURM_CONF`` points to it for the session."""
    reason = _reason_not_available()
    if reason:
        pytest.skip(reason)
    root = Path(tmp_path_factory.mktemp("slurm"))
    if len(str(root / "munge" / "munge.socket")) > 100:  # a unix socket path's limit is 108
        root = Path(shutil.mkdtemp(prefix="sdpbatch-slurm-"))
    cluster = SlurmCluster(root)
    saved = os.environ.get("SLURM_CONF")
    try:
        cluster.start()
        os.environ["SLURM_CONF"] = str(cluster.conf)
        yield cluster
    finally:
        cluster.stop()
        if saved is None:
            os.environ.pop("SLURM_CONF", None)
        else:
            os.environ["SLURM_CONF"] = saved
