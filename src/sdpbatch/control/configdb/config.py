"""Configuration database client: optimistic transactions, wait loops, leases and entities.

Usage, as in the SDP prototype::

    config = Config()                      # backend from $SDP_CONFIG_BACKEND (etcd3 default)
    for txn in config.txn():               # the body re-runs when it conflicts with a writer
        state = txn.get_pb_state(pb_id)
        if not state["resources_available"]:
            txn.loop(wait=True)            # commit, sleep until a key read here changes, re-run

Bodies must be free of side effects: they may run several times.  Reads are recorded with
their revisions, writes are buffered and applied in one atomic commit that fails (and re-runs
the body) if any key read has changed meanwhile.  Note: leaving the loop with ``break``
skips the commit.
"""

from __future__ import annotations

import contextlib
import logging
import os
import random
import socket
import sys
import threading
import time
from collections.abc import Iterator
from typing import Any

from sdpbatch.control.configdb.backend import (
    Backend,
    ConfigError,
    TransactionConflict,
)
from sdpbatch.control.configdb.transaction import DEPLOYMENT_TYPES, Transaction
from sdpbatch.vocabulary import ETCD_PORT, LOOPBACK

LOG = logging.getLogger(__name__)

BACKEND_ENV, HOST_ENV, PORT_ENV = "SDP_CONFIG_BACKEND", "SDP_CONFIG_HOST", "SDP_CONFIG_PORT"
LEASE_TTL_ENV = "SDP_CONFIG_LEASE_TTL"
FOREVER = None
"""``patience`` of the long-running components: retry until the database is back."""
BACKENDS = ("etcd3", "memory")
DEFAULT_MAX_RETRIES = 200


class Config:
    """A connection to the configuration database.

    Parameters
    ----------
    backend : ``"etcd3"`` or ``"memory"``; default ``$SDP_CONFIG_BACKEND``, else etcd3.
    host, port : etcd address; default ``$SDP_CONFIG_HOST`` (loopback,
        :data:`~sdpbatch.vocabulary.LOOPBACK`), ``$SDP_CONFIG_PORT``
        (:data:`~sdpbatch.vocabulary.ETCD_PORT`).
    lease_ttl : seconds the owner keys of this client outlive a stopped keep-alive; default
        ``$SDP_CONFIG_LEASE_TTL``, else 10.
    store : memory backend only: the :class:`MemoryStore` to share (default: process-wide).
    patience : seconds each database call keeps retrying, with bounded back-off, while the
        server is unreachable (:data:`FOREVER`: until it is back, as the controller, deployer
        and workflows do); default 0: a command fails at once with a clear message.
    """

    def __init__(
        self,
        backend: str | None = None,
        *,
        host: str | None = None,
        port: int | None = None,
        lease_ttl: float | None = None,
        store: Any = None,
        patience: float | None = 0.0,
    ):
        name = backend or os.environ.get(BACKEND_ENV) or "etcd3"
        if name not in BACKENDS:
            raise ConfigError(f"unknown config backend {name!r}; allowed: {', '.join(BACKENDS)}")
        self.backend_name = name
        try:
            self.lease_ttl = float(lease_ttl or os.environ.get(LEASE_TTL_ENV) or 10.0)
        except ValueError as err:
            raise ConfigError(f"{LEASE_TTL_ENV} must be a number of seconds") from err
        if name == "memory":
            from sdpbatch.control.configdb.backend_memory import MemoryBackend

            self.backend: Backend = MemoryBackend(store)
        else:
            from sdpbatch.control.configdb.backend_etcd import EtcdBackend

            host = host or os.environ.get(HOST_ENV) or LOOPBACK
            raw_port = port if port is not None else os.environ.get(PORT_ENV) or ETCD_PORT
            try:
                port = int(raw_port)
            except ValueError as err:
                raise ConfigError(f"{PORT_ENV} must be a port number, got {raw_port!r}") from err
            self.backend = EtcdBackend(host, port, patience=patience)
        self.owner_info = {
            "pid": os.getpid(),
            "hostname": socket.gethostname(),
            "command": sys.argv,
        }
        self._lease_id: int | None = None
        self._lease_lock = threading.Lock()
        self._lease_lost = False
        self.lease_generation = 0  # how many leases this client was granted
        self._stop_keepalive = threading.Event()
        self._keepalive_thread: threading.Thread | None = None

    @contextlib.contextmanager
    def patience(self, seconds: float | None) -> Iterator[None]:
        """Calls in this block retry for ``seconds`` at most while the server is unreachable
        (e.g. one last read at shutdown that must not wait for an outage to end)."""
        if not hasattr(self.backend, "patience"):  # the memory backend is always there
            yield
            return
        previous, self.backend.patience = self.backend.patience, seconds
        try:
            yield
        finally:
            self.backend.patience = previous

    # --- lifetime -----------------------------------------------------------------------------

    def close(self) -> None:
        """Stop the keep-alive, revoke the lease (removing owner keys) and disconnect."""
        self._stop_keepalive.set()
        if self._keepalive_thread is not None:
            self._keepalive_thread.join(timeout=5)
        if self._lease_id is not None and not self._lease_lost:
            try:
                self.backend.lease_revoke(self._lease_id)
            except ConfigError:
                pass
        self._lease_id = None
        self.backend.close()

    def __enter__(self) -> Config:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- leases ---------------------------------------------------------------------------------

    @property
    def lease_id(self) -> int:
        """This client's lease (granted on first use, kept alive by a thread).

        If the lease expired (the process was cut off from the database for longer than its
        time to live), a new one is granted: the keys of the old lease are gone, and whoever
        owned something with it must check and take it again (see :attr:`lease_generation`).
        """
        with self._lease_lock:
            if self._lease_lost:
                LOG.warning("lease %x expired: granting a new one", self._lease_id)
                self._lease_id, self._lease_lost = None, False
            if self._lease_id is None:
                self._lease_id = self.backend.lease_grant(self.lease_ttl)
                self.lease_generation += 1
                self._keepalive_thread = threading.Thread(
                    target=self._keepalive,
                    args=(self._lease_id,),
                    name="configdb-keepalive",
                    daemon=True,
                )
                self._keepalive_thread.start()
            return self._lease_id

    @property
    def lease_lost(self) -> bool:
        """True once the current lease expired (until :attr:`lease_id` grants a new one)."""
        return self._lease_lost

    def _keepalive(self, lease_id: int) -> None:
        interval = max(0.2, self.lease_ttl / 4)
        failing_since = None
        while not self._stop_keepalive.wait(interval):
            try:
                alive = self.backend.lease_keepalive(lease_id)
            except Exception as err:  # noqa: BLE001 - keep trying while the server is away
                if failing_since is None:
                    failing_since = time.monotonic()
                    LOG.warning("lease keep-alive failed (retrying): %s", err)
                continue
            if failing_since is not None:
                LOG.warning("lease keep-alive works again")
                failing_since = None
            if not alive:
                LOG.error("lease %x expired: the keys it held are gone", lease_id)
                with self._lease_lock:
                    if self._lease_id == lease_id:
                        self._lease_lost = True
                return

    def stop_keepalive(self) -> None:
        """Stop refreshing the lease without revoking it (simulates a hung owner; tests)."""
        self._stop_keepalive.set()

    # --- transactions -----------------------------------------------------------------------------

    def txn(self, *, max_retries: int = DEFAULT_MAX_RETRIES) -> Iterator[Transaction]:
        """Transactions as a retry loop: ``for txn in config.txn(): ...``."""
        yield from self._txn_loop(max_retries=max_retries)

    def _txn_loop(self, *, max_retries: int, on_commit=None) -> Iterator[Transaction]:
        conflicts = 0
        while True:
            txn = Transaction(self)
            yield txn
            revision = txn._commit()
            if revision is None:
                conflicts += 1
                if conflicts > max_retries:
                    raise TransactionConflict(
                        f"transaction still conflicting after {max_retries} retries"
                    )
                time.sleep(random.uniform(0, min(0.05, 0.0005 * 2 ** min(conflicts, 10))))
                continue
            conflicts = 0
            if on_commit is not None:
                on_commit(txn, revision)
            if not txn._loop:
                return
            if txn._wait:
                self.backend.wait(
                    keys=txn._reads,
                    prefixes=txn._prefixes,
                    after_revision=revision,
                    timeout=txn._timeout,
                )

    def watcher(self, *, timeout: float | None = None) -> Iterator[Watcher]:
        """Reconcile loop: each iteration's ``watcher.txn()`` transactions record what they
        read; the next iteration starts when any of it changes (or after ``timeout`` s)."""
        while True:
            watcher = Watcher(self)
            yield watcher
            if watcher.revision is None:
                time.sleep(timeout if timeout is not None else 1.0)
                continue
            wake = [t for t in (timeout, watcher.wake_after) if t is not None]
            self.backend.wait(
                keys=watcher.keys,
                prefixes=watcher.prefixes,
                after_revision=watcher.revision,
                timeout=min(wake) if wake else None,
            )


class Watcher:
    """One iteration of :meth:`Config.watcher`."""

    def __init__(self, config: Config):
        self.config = config
        self.keys: set[str] = set()
        self.prefixes: set[str] = set()
        self.revision: int | None = None
        self.wake_after: float | None = None

    def txn(self, *, max_retries: int = DEFAULT_MAX_RETRIES) -> Iterator[Transaction]:
        yield from self.config._txn_loop(max_retries=max_retries, on_commit=self._record)

    def wake_within(self, seconds: float) -> None:
        """Start the next iteration after at most ``seconds`` even if nothing changes (a
        step that waits for time to pass: a grace period)."""
        seconds = max(0.05, seconds)
        self.wake_after = seconds if self.wake_after is None else min(self.wake_after, seconds)

    def _record(self, txn: Transaction, revision: int) -> None:
        self.keys |= set(txn._reads)
        self.prefixes |= set(txn._prefixes)
        self.revision = revision if self.revision is None else min(self.revision, revision)


__all__ = ["BACKENDS", "DEPLOYMENT_TYPES", "FOREVER", "Config", "Transaction", "Watcher"]
