"""etcd v3 backend (gRPC client ``pyetcd`` of PyPI ``etcd-sdk-python``).

Commit is one etcd ``Txn``: compare the ``mod_revision`` of every key read (0 for a key read
as absent) and, for every prefix listed, that no key in the range was modified after the
listing; then put/delete everything.  Waits are etcd watches from the revision after the
transaction, so a change between commit and watch is never missed.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Iterable, Mapping

import grpc
import pyetcd
from pyetcd import exceptions as etcd_exceptions
from pyetcd import utils as etcd_utils

from sdpbatch.control.configdb.backend import BackendUnavailable, KeyValue, Put

LOG = logging.getLogger(__name__)
_RPC_TIMEOUT = 10.0
FIRST_BACKOFF = 0.1  # s, doubled after each failed try
MAX_BACKOFF = 2.0  # s: the longest pause between two tries while the server is away
# gRPC's own reconnection back-off grows to 120 s by default: after a few seconds of outage a
# client would find the restarted server seconds late, and its lease (kept by a refresh every
# TTL/4) would expire meanwhile.  Reconnect at least every second instead.
_GRPC_OPTIONS = [
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.min_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 1000),
]


def _kv(raw) -> KeyValue:
    return KeyValue(raw.key.decode(), raw.value.decode(), raw.mod_revision, raw.lease)


class EtcdBackend:
    """A connection to one etcd server.

    ``patience``: seconds a call keeps retrying (pausing 0.1 s, doubling up to
    :data:`MAX_BACKOFF`) while the server is unreachable before it raises
    :class:`BackendUnavailable`; None retries until the server is back, 0 never retries.
    """

    def __init__(self, host: str, port: int, *, patience: float | None = 0.0):
        self.host, self.port = host, port
        self.patience = patience
        self.client = pyetcd.client(
            host=host, port=port, timeout=_RPC_TIMEOUT, grpc_options=_GRPC_OPTIONS
        )
        for endpoint in self.client.endpoints.values():
            endpoint.time_retry = 0.0  # pyetcd shuns a node for 300 s after one failure
        self.t = self.client.transactions
        self._outage_since: float | None = None

    def _unavailable(self, err: Exception) -> BackendUnavailable:
        return BackendUnavailable(
            f"etcd at {self.host}:{self.port} is not reachable ({err}); start it with "
            "'sdpbatch etcd --data-dir DIR' or set SDP_CONFIG_HOST/SDP_CONFIG_PORT"
        )

    def _call(self, fn, *args, retry: bool = True, **kwargs):
        """``fn(*args, **kwargs)``, retried with bounded back-off while etcd is unreachable."""
        start = time.monotonic()
        pause = FIRST_BACKOFF
        while True:
            try:
                result = self._call_once(fn, *args, **kwargs)
            except BackendUnavailable as err:
                waited = time.monotonic() - start
                if not retry or (self.patience is not None and waited >= self.patience):
                    raise
                if self._outage_since is None:
                    self._outage_since = time.monotonic()
                    LOG.warning("%s; retrying every %.0f s at most", err, MAX_BACKOFF)
                if self.patience is not None:
                    pause = min(pause, max(0.01, self.patience - waited))
                time.sleep(pause)
                pause = min(2 * pause, MAX_BACKOFF)
                continue
            if self._outage_since is not None:
                LOG.warning(
                    "etcd at %s:%d is reachable again after %.1f s",
                    self.host,
                    self.port,
                    time.monotonic() - self._outage_since,
                )
                self._outage_since = None
            return result

    def _call_once(self, fn, *args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except grpc.RpcError as err:
            if err.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
                raise self._unavailable(err) from err
            raise
        except (
            etcd_exceptions.ConnectionFailedError,
            etcd_exceptions.ConnectionTimeoutError,
            etcd_exceptions.NoServerAvailableError,
        ) as err:
            raise self._unavailable(err) from err
        except ValueError as err:
            if "failed node" in str(err):
                raise self._unavailable(err) from err
            raise

    def get(self, key: str) -> tuple[KeyValue | None, int]:
        response = self._call(self.client.get_response, key)
        kv = _kv(response.kvs[0]) if response.count else None
        return kv, response.header.revision

    def range(self, prefix: str) -> tuple[list[KeyValue], int]:
        response = self._call(self.client.get_prefix_response, prefix, sort_order="ascend")
        return [_kv(raw) for raw in response.kvs], response.header.revision

    def commit(
        self,
        *,
        key_revisions: Mapping[str, int],
        prefix_revisions: Mapping[str, int],
        puts: Mapping[str, Put],
        deletes: Iterable[str],
    ) -> int | None:
        t = self.t
        compare = [t.mod(key) == revision for key, revision in key_revisions.items()]
        for prefix, revision in prefix_revisions.items():
            check = t.mod(prefix) < revision + 1
            check.range_end = etcd_utils.prefix_range_end(etcd_utils.to_bytes(prefix))
            compare.append(check)
        ops = [t.put(key, put.value, lease=put.lease or None) for key, put in puts.items()]
        ops += [t.delete(key) for key in deletes]
        try:
            response = self._call(self._txn, compare, ops)
        except grpc.RpcError as err:  # e.g. the lease expired between body and commit
            if err.code() == grpc.StatusCode.NOT_FOUND:
                return None
            raise
        except etcd_exceptions.Etcd3Exception as err:
            if "lease not found" in str(err):
                return None
            raise
        return response.header.revision if response.succeeded else None

    def _txn(self, compare, ops):
        request = pyetcd.etcdrpc.TxnRequest(
            compare=[c.build_message() for c in compare],
            success=self.client._ops_to_requests(ops),
            failure=[],
        )
        return self.client.kvstub.Txn(
            request,
            self.client.timeout,
            credentials=self.client.call_credentials,
            metadata=self.client.metadata,
        )

    def wait(
        self,
        *,
        keys: Iterable[str],
        prefixes: Iterable[str],
        after_revision: int,
        timeout: float | None,
    ) -> bool:
        prefixes = sorted(set(prefixes))
        keys = sorted(k for k in set(keys) if not k.startswith(tuple(prefixes)))
        woken = threading.Event()
        watch_ids = []

        def callback(response) -> None:
            if isinstance(response, Exception) or response.events:
                woken.set()

        try:
            for key in keys:
                watch_ids.append(
                    self._call(
                        self.client.add_watch_callback,
                        key,
                        callback,
                        start_revision=after_revision + 1,
                    )
                )
            for prefix in prefixes:
                watch_ids.append(
                    self._call(
                        self.client.add_watch_prefix_callback,
                        prefix,
                        callback,
                        start_revision=after_revision + 1,
                    )
                )
            return woken.wait(timeout)
        finally:
            for watch_id in watch_ids:
                try:
                    self.client.cancel_watch(watch_id)
                except Exception:  # noqa: BLE001 - best effort when the server is gone
                    pass

    def lease_grant(self, ttl: float) -> int:
        return self._call(self.client.lease, max(1, math.ceil(ttl))).id

    def lease_keepalive(self, lease_id: int) -> bool:
        responses = self._call(lambda: list(self.client.refresh_lease(lease_id)), retry=False)
        return bool(responses) and responses[0].TTL > 0

    def lease_revoke(self, lease_id: int) -> None:
        try:
            self._call(self.client.revoke_lease, lease_id, retry=False)
        except grpc.RpcError:
            pass  # already expired

    def close(self) -> None:
        self.client.close()
