"""The small key-value interface both database backends implement.

A backend stores string values under string keys with etcd's revision model: every write
increments one global revision and stamps the key with it (``mod_revision``).  Transactions
are built on top (see :mod:`.config`): reads record revisions, :meth:`Backend.commit` applies
buffered writes only if nothing read has changed since, and :meth:`Backend.wait` blocks until
a key or prefix changes after a revision (a watch, never a polling loop).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Protocol


class ConfigError(Exception):
    """Base class of configuration database errors."""


class ConfigCollision(ConfigError):
    """A create found the key already there."""

    def __init__(self, key: str, message: str | None = None):
        self.key = key
        super().__init__(message or f"{key} already exists")


class ConfigVanished(ConfigError):
    """An update or delete found the key missing."""

    def __init__(self, key: str, message: str | None = None):
        self.key = key
        super().__init__(message or f"{key} does not exist")


class TransactionConflict(ConfigError):
    """A transaction kept conflicting with other writers beyond its retry limit."""


class BackendUnavailable(ConfigError):
    """The database server cannot be reached."""


@dataclass(frozen=True)
class KeyValue:
    """One stored key: its value and the revision of its last change."""

    key: str
    value: str
    mod_revision: int
    lease: int = 0


@dataclass(frozen=True)
class Put:
    """A buffered write; ``lease`` 0 means no lease."""

    value: str
    lease: int = 0


class Backend(Protocol):
    """What :class:`~.config.Config` needs from a store."""

    def get(self, key: str) -> tuple[KeyValue | None, int]:
        """The key (or None) and the store's current revision."""

    def range(self, prefix: str) -> tuple[list[KeyValue], int]:
        """All keys starting with ``prefix``, sorted, and the current revision."""

    def commit(
        self,
        *,
        key_revisions: Mapping[str, int],
        prefix_revisions: Mapping[str, int],
        puts: Mapping[str, Put],
        deletes: Iterable[str],
    ) -> int | None:
        """Apply the writes atomically if every key still has the recorded ``mod_revision``
        (0: absent) and no key under a prefix changed after the recorded revision.

        Returns the store's revision after the commit, or None on conflict (nothing written).
        """

    def wait(
        self,
        *,
        keys: Iterable[str],
        prefixes: Iterable[str],
        after_revision: int,
        timeout: float | None,
    ) -> bool:
        """Block until a key or a key under a prefix changes after ``after_revision``.

        Returns False if ``timeout`` seconds passed without a change.
        """

    def lease_grant(self, ttl: float) -> int:
        """A new lease id; keys put with it vanish ``ttl`` seconds after its last keep-alive."""

    def lease_keepalive(self, lease_id: int) -> bool:
        """Refresh the lease; False if it has already expired."""

    def lease_revoke(self, lease_id: int) -> None:
        """End the lease now, deleting its keys."""

    def close(self) -> None:
        """Release connections and threads."""
