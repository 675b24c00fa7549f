"""Buffer reservations: one directory per buffer under one data root, recorded in the DB.

A buffer record ``/buffer/<name>`` is ``{name, pb_id, path, data_root, state, size_bytes,
created}``.  Names are checked so that a buffer can never point outside the data root.
Buffers outlive their block (they hold its products) until deleted with :func:`delete_buffer`.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path

from sdpbatch.control.configdb import Config, ConfigError, ConfigVanished
from sdpbatch.control.configdb.ids import InvalidId, check_buffer_id
from sdpbatch.vocabulary import ENDED, buffer_key


class BufferError(ConfigError):
    """A buffer name or path is not allowed, or the buffer is in use."""


def check_buffer_name(name: object) -> str:
    """``name`` if it may name a buffer (the one rule, :func:`sdpbatch.vocabulary.is_buffer_name`:
    one path component, not one of the data root's own folders), else :class:`BufferError`."""
    try:
        return check_buffer_id(name)
    except InvalidId as err:
        raise BufferError(str(err)) from None


def buffer_path(data_root: Path, name: str) -> Path:
    """The directory of buffer ``name``, checked to lie inside ``data_root``."""
    check_buffer_name(name)
    root = Path(data_root).resolve()
    path = (root / name).resolve()
    if path.parent != root:
        raise BufferError(f"buffer {name!r} would resolve outside the data root {root}")
    return path


def directory_size(path: Path) -> int:
    """Bytes of the files under ``path`` (0 if it does not exist)."""
    if not path.is_dir():
        return 0
    total = 0
    for item in path.rglob("*"):
        try:
            if item.is_file() and not item.is_symlink():
                total += item.stat().st_size
        except OSError:
            continue
    return total


def make_buffer(config: Config, data_root: Path, name: str, *, pb_id: str | None) -> dict:
    """Create the directory and the record of buffer ``name`` (idempotent for its owner)."""
    path = buffer_path(data_root, name)
    for txn in config.txn():
        record = txn.get_buffer(name)
        if record is not None and record.get("pb_id") != pb_id:
            raise BufferError(
                f"buffer {name} already exists for processing block {record.get('pb_id')}; "
                f"delete it with 'sdpbatch buffers delete {name}' or choose another name"
            )
        if record is None:
            record = {
                "name": name,
                "pb_id": pb_id,
                "path": str(path),
                "data_root": str(Path(data_root).resolve()),
                "state": "READY",
                "size_bytes": 0,
                "created": time.time(),
            }
            txn.create_buffer(name, record)
    path.mkdir(parents=True, exist_ok=True)
    return record


def list_buffers(config: Config, *, measure: bool = True) -> list[dict]:
    """All buffer records, with their current size on disk if ``measure``."""
    for txn in config.txn():
        records = [txn.get_buffer(name) for name in txn.list_buffers()]
    records = [r for r in records if r is not None]
    if measure:
        for record in records:
            record["size_bytes"] = directory_size(Path(record["path"]))
    return records


def delete_buffer(config: Config, name: str, *, force: bool = False) -> dict:
    """Delete buffer ``name``: its directory, record and deployment entry.

    Refused while its block is still active, unless ``force``.
    """
    check_buffer_name(name)
    for txn in config.txn():
        record = txn.get_buffer(name)
        if record is None:
            raise ConfigVanished(buffer_key(name), f"no buffer named {name}")
        state = txn.get_pb_state(record["pb_id"]) if record.get("pb_id") else None
        if state is not None and state.get("status") not in ENDED and not force:
            raise BufferError(
                f"buffer {name} is in use by processing block {record['pb_id']} "
                f"({state.get('status')})"
            )
        txn.delete_buffer(name)
        if txn.get_deployment(name) is not None:
            txn.delete_deployment(name)
    path = buffer_path(Path(record["data_root"]), name)
    if str(path) != record["path"]:
        raise BufferError(f"buffer {name}: recorded path {record['path']} is not {path}")
    shutil.rmtree(path, ignore_errors=True)
    return record
