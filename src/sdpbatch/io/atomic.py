"""Atomic products: write under a temporary name beside the target, then rename into place.

A reader never sees a half-written file or MeasurementSet under its final name, and a failed
write leaves any earlier product with that name untouched.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path

TEMP_MARK = ".partial-"


def _temp_name(target: Path) -> Path:
    return target.with_name(f"{target.name}{TEMP_MARK}{uuid.uuid4().hex[:8]}")


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


def replace_path(temp: Path, target: Path) -> None:
    """Move ``temp`` (file or directory) to ``target``, replacing what was there."""
    if target.is_dir() and not target.is_symlink():
        old = target.with_name(f"{target.name}{TEMP_MARK}old-{uuid.uuid4().hex[:8]}")
        os.replace(target, old)
        try:
            os.replace(temp, target)
        except BaseException:
            os.replace(old, target)
            raise
        _remove(old)
    else:
        os.replace(temp, target)


@contextlib.contextmanager
def atomic_path(target: str | Path) -> Iterator[Path]:
    """Yield a temporary path to write ``target`` (a file or a directory) at.

    On normal exit the temporary is renamed to ``target``; on any exception it is removed
    and ``target`` is left as it was.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    temp = _temp_name(target)
    try:
        yield temp
        replace_path(temp, target)
    except BaseException:
        _remove(temp)
        raise


def remove_partials(directory: str | Path) -> list[Path]:
    """Delete leftovers of interrupted atomic writes in ``directory``; return what went."""
    removed = []
    for path in Path(directory).glob(f"*{TEMP_MARK}*"):
        _remove(path)
        removed.append(path)
    return removed
