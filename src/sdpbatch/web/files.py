"""What the web server may read from disk: the buffers and the logs of one data root, nothing else.

A path arrives from a URL as text relative to the data root.  It is refused unless its first
component is ``logs`` or a valid buffer name (never ``etcd``, ``tango`` or the state file), it has
no ``.``/``..``/empty components, and, symbolic links resolved, it still lies inside that first
directory, itself directly under the data root.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from sdpbatch.control.buffers import BufferError, check_buffer_name, directory_size
from sdpbatch.vocabulary import LOGS_DIR

LOG_CHUNK = 256 * 1024
"""Largest piece of a log returned at once (bytes): memory stays bounded for any log size."""


class OutsideDataRoot(Exception):
    """A requested path is not a file of a buffer or a log under the data root."""


@dataclass(frozen=True)
class DataRoot:
    """The data root, resolved once."""

    path: Path

    @classmethod
    def at(cls, path: str | Path) -> DataRoot:
        return cls(Path(path).resolve())

    def resolve(self, relative: str) -> Path:
        """The path ``relative`` (``buffer/...`` or ``logs/...``) under the data root.

        Raises :class:`OutsideDataRoot` if it names anything else or escapes its directory.
        """
        if not isinstance(relative, str) or "\x00" in relative or "\\" in relative:
            raise OutsideDataRoot(f"not a path under the data root: {relative!r}")
        pure = PurePosixPath(relative)
        raw_parts = relative.split("/")
        if pure.is_absolute() or not raw_parts or any(p in ("", ".", "..") for p in raw_parts):
            raise OutsideDataRoot(f"not a path under the data root: {relative!r}")
        top = raw_parts[0]
        if top != LOGS_DIR:
            try:
                check_buffer_name(top)
            except BufferError as err:
                raise OutsideDataRoot(f"{relative!r}: not a buffer or the logs") from err
        base = (self.path / top).resolve()
        if base.parent != self.path:
            raise OutsideDataRoot(f"{top!r} resolves outside the data root")
        path = (self.path / relative).resolve()
        if path != base and not path.is_relative_to(base):
            raise OutsideDataRoot(f"{relative!r} resolves outside {top}/")
        return path

    def relative(self, path: Path) -> str:
        """``path`` (inside the root) as the text :meth:`resolve` takes."""
        return Path(path).resolve().relative_to(self.path).as_posix()

    def file(self, relative: str) -> Path:
        """A regular file under the root (:class:`OutsideDataRoot` if missing or not a file)."""
        path = self.resolve(relative)
        if not path.is_file():
            raise OutsideDataRoot(f"no file {relative!r} under the data root")
        return path


def list_directory(root: DataRoot, relative: str) -> list[dict]:
    """The entries of a buffer (or the logs): name, path, kind and size in bytes.

    A directory's size is the total of the files under it (a MeasurementSet is a directory).
    """
    directory = root.resolve(relative)
    if not directory.is_dir():
        return []
    entries = []
    for item in sorted(directory.iterdir(), key=lambda p: p.name):
        try:
            is_dir = item.is_dir() and not item.is_symlink()
            size = directory_size(item) if is_dir else item.stat().st_size
        except OSError:  # removed while listing (an atomic rename)
            continue
        entries.append(
            {
                "name": item.name,
                "path": f"{relative}/{item.name}",
                "kind": "directory" if is_dir else "file",
                "size_bytes": size,
            }
        )
    return entries


def read_log(path: Path, offset: int) -> tuple[list[str], int]:
    """Complete lines of ``path`` from byte ``offset`` (at most :data:`LOG_CHUNK` bytes).

    Returns the lines and the offset to ask for next.  A file shorter than ``offset`` (rotated
    or truncated) is read again from its start.
    """
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        return [], 0
    if offset > size:
        offset = 0
    if offset == size:
        return [], offset
    with open(path, "rb") as f:
        f.seek(offset)
        chunk = f.read(LOG_CHUNK)
    end = chunk.rfind(b"\n")
    if end < 0:
        if len(chunk) < LOG_CHUNK:
            return [], offset  # a line still being written
        end = len(chunk) - 1  # one line longer than a chunk: give it in pieces
    text = chunk[: end + 1].decode("utf-8", errors="replace")
    return text.splitlines(), offset + end + 1


def disk_usage(root: DataRoot) -> dict:
    """Free and total bytes of the file system of the data root."""
    stat = os.statvfs(root.path)
    return {
        "free_bytes": stat.f_bavail * stat.f_frsize,
        "total_bytes": stat.f_blocks * stat.f_frsize,
    }
