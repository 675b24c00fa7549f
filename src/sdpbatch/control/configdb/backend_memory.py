"""In-memory backend with etcd's semantics, for one process (standalone runs, unit tests).

It keeps one global revision, ``mod_revision`` per key, a change log for watches and
leases that expire: a transaction that read a key another transaction changed is refused
at commit (and its body re-runs), a wait wakes on the first change after its revision, and
keys on a lease vanish ``ttl`` seconds after its last keep-alive, exactly as with etcd.
"""

from __future__ import annotations

import bisect
import itertools
import threading
import time
from collections import deque
from collections.abc import Iterable, Mapping

from sdpbatch.control.configdb.backend import KeyValue, Put

_CHANGE_LOG_LENGTH = 100_000


class MemoryStore:
    """The shared state: several :class:`MemoryBackend` clients may use one store."""

    _default: MemoryStore | None = None
    _default_lock = threading.Lock()

    def __init__(self) -> None:
        self.lock = threading.Condition()
        self.revision = 1  # etcd starts at revision 1 for an empty store
        self.data: dict[str, KeyValue] = {}
        self.keys: list[str] = []  # sorted, for prefix ranges
        self.changes: deque[tuple[int, str]] = deque(maxlen=_CHANGE_LOG_LENGTH)
        self.leases: dict[int, tuple[float, float]] = {}  # id -> (ttl, deadline)
        self._lease_ids = itertools.count(0x1000)

    @classmethod
    def default(cls) -> MemoryStore:
        """The process-wide store used when no store is given."""
        with cls._default_lock:
            if cls._default is None:
                cls._default = MemoryStore()
            return cls._default

    # --- all methods below are called with ``self.lock`` held ---------------------------------

    def expire_leases(self) -> None:
        now = time.monotonic()
        for lease_id, (_, deadline) in list(self.leases.items()):
            if deadline <= now:
                self.drop_lease(lease_id)

    def drop_lease(self, lease_id: int) -> None:
        self.leases.pop(lease_id, None)
        doomed = [key for key, kv in self.data.items() if kv.lease == lease_id]
        if doomed:
            self.revision += 1
            for key in doomed:
                self._delete(key)
            self.lock.notify_all()

    def next_lease_deadline(self) -> float | None:
        return min((deadline for _, deadline in self.leases.values()), default=None)

    def put(self, key: str, put: Put) -> None:
        if key not in self.data:
            bisect.insort(self.keys, key)
        self.data[key] = KeyValue(key, put.value, self.revision, put.lease)
        self.changes.append((self.revision, key))

    def _delete(self, key: str) -> None:
        if key in self.data:
            del self.data[key]
            del self.keys[bisect.bisect_left(self.keys, key)]
            self.changes.append((self.revision, key))

    def delete(self, key: str) -> None:
        self._delete(key)

    def prefix_keys(self, prefix: str) -> list[str]:
        start = bisect.bisect_left(self.keys, prefix)
        out = []
        for key in itertools.islice(self.keys, start, None):
            if not key.startswith(prefix):
                break
            out.append(key)
        return out

    def changed_after(self, keys: set[str], prefixes: tuple[str, ...], revision: int) -> bool:
        if len(self.changes) == self.changes.maxlen and self.changes[0][0] > revision + 1:
            return True  # log trimmed past our revision: wake to be safe
        for rev, key in reversed(self.changes):
            if rev <= revision:
                return False
            if key in keys or key.startswith(prefixes):
                return True
        return False


class MemoryBackend:
    """A client of a :class:`MemoryStore` (thread-safe)."""

    def __init__(self, store: MemoryStore | None = None):
        self.store = store or MemoryStore.default()

    def get(self, key: str) -> tuple[KeyValue | None, int]:
        s = self.store
        with s.lock:
            s.expire_leases()
            return s.data.get(key), s.revision

    def range(self, prefix: str) -> tuple[list[KeyValue], int]:
        s = self.store
        with s.lock:
            s.expire_leases()
            return [s.data[k] for k in s.prefix_keys(prefix)], s.revision

    def commit(
        self,
        *,
        key_revisions: Mapping[str, int],
        prefix_revisions: Mapping[str, int],
        puts: Mapping[str, Put],
        deletes: Iterable[str],
    ) -> int | None:
        s = self.store
        deletes = list(deletes)
        with s.lock:
            s.expire_leases()
            for key, revision in key_revisions.items():
                kv = s.data.get(key)
                if (kv.mod_revision if kv else 0) != revision:
                    return None
            for prefix, revision in prefix_revisions.items():
                if any(s.data[k].mod_revision > revision for k in s.prefix_keys(prefix)):
                    return None
            for put in puts.values():
                if put.lease and put.lease not in s.leases:
                    return None  # etcd refuses a put on an unknown lease; caller re-runs
            if not puts and not deletes:
                return s.revision
            s.revision += 1
            for key, put in puts.items():
                s.put(key, put)
            for key in deletes:
                s.delete(key)
            s.lock.notify_all()
            return s.revision

    def wait(
        self,
        *,
        keys: Iterable[str],
        prefixes: Iterable[str],
        after_revision: int,
        timeout: float | None,
    ) -> bool:
        s = self.store
        keys, prefixes = set(keys), tuple(prefixes)
        end = None if timeout is None else time.monotonic() + timeout
        with s.lock:
            while True:
                s.expire_leases()
                if s.changed_after(keys, prefixes, after_revision):
                    return True
                now = time.monotonic()
                if end is not None and now >= end:
                    return False
                deadlines = [d for d in (end, s.next_lease_deadline()) if d is not None]
                s.lock.wait(None if not deadlines else max(0.0, min(deadlines) - now) + 1e-3)

    def lease_grant(self, ttl: float) -> int:
        s = self.store
        with s.lock:
            lease_id = next(s._lease_ids)
            s.leases[lease_id] = (ttl, time.monotonic() + ttl)
            s.lock.notify_all()  # waiters must now also wake at this lease's deadline
            return lease_id

    def lease_keepalive(self, lease_id: int) -> bool:
        s = self.store
        with s.lock:
            s.expire_leases()
            if lease_id not in s.leases:
                return False
            ttl, _ = s.leases[lease_id]
            s.leases[lease_id] = (ttl, time.monotonic() + ttl)
            return True

    def lease_revoke(self, lease_id: int) -> None:
        s = self.store
        with s.lock:
            s.drop_lease(lease_id)

    def close(self) -> None:
        """Nothing to release: the store lives on for other clients."""
