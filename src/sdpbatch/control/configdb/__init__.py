"""The configuration database: entities under the prototype's key layout, transactions,
wait loops and leases, on etcd v3 or in memory (see :mod:`.config`)."""

from sdpbatch.control.configdb.backend import (
    BackendUnavailable,
    ConfigCollision,
    ConfigError,
    ConfigVanished,
    TransactionConflict,
)
from sdpbatch.control.configdb.backend_memory import MemoryStore
from sdpbatch.control.configdb.config import FOREVER, Config, Transaction, Watcher
from sdpbatch.control.configdb.ids import InvalidId

__all__ = [
    "BackendUnavailable",
    "Config",
    "FOREVER",
    "ConfigCollision",
    "ConfigError",
    "ConfigVanished",
    "InvalidId",
    "MemoryStore",
    "Transaction",
    "TransactionConflict",
    "Watcher",
]
