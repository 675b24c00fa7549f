"""Disk space: what a run will write, whether it fits, and a full disk as one clear error.

A full disk shows up in many forms: ``OSError`` with errno ENOSPC from Python, h5py or astropy,
casacore's ``RuntimeError`` ("FilebufIO: write error ... No space left on device"), or a Dask
worker that died of it.  :func:`is_disk_full` recognises them; :class:`DiskFull` is the one
error the command line and the workflows report:
``no space left on device under DIR: needed about N MB (M MB free)``.
"""

from __future__ import annotations

import contextlib
import errno
import shutil
from collections.abc import Iterable, Iterator
from pathlib import Path

MB = 10**6
MS_FIXED_BYTES = 1_000_000
"""Per MeasurementSet: subtables and the partly filled last tiles of each column."""
MS_BYTES_PER_ROW = 48
"""Per row: UVW (24), WEIGHT and SIGMA (16), antenna ids (8); time-like columns are
stored incrementally (:mod:`sdpbatch.io.ms_write`)."""
MS_BYTES_PER_ROW_CHANNEL = 24.25
"""Per row and channel: DATA (2 correlations x 8), WEIGHT_SPECTRUM (2 x 4), FLAG (2 bits)."""
LOW_SPACE_BYTES = 4 * 2**20
"""Free space below which a failed write is taken to be a full disk."""
_NO_SPACE_TEXT = ("no space left on device", "no space left", "disk quota exceeded")


class DiskFull(OSError):
    """Not enough space under ``directory``; ``needed`` bytes (0: unknown)."""

    def __init__(self, directory: Path, needed: int = 0, free: int | None = None):
        self.directory = Path(directory)
        self.needed = int(needed)
        self.free = free_bytes(directory) if free is None else int(free)
        text = f"no space left on device under {self.directory}"
        if self.needed:
            text += f": needed about {_mb(self.needed)}"
        text += f" ({_mb(self.free)} free)"
        super().__init__(errno.ENOSPC, text)

    def __str__(self) -> str:
        return self.strerror


def _mb(n: int) -> str:
    return f"{max(n, 0) / MB:.0f} MB" if n >= MB or n == 0 else f"{n / MB:.1f} MB"


def free_bytes(directory: str | Path) -> int:
    """Free bytes on the filesystem of ``directory`` (or of its nearest existing parent)."""
    path = Path(directory).absolute()
    while not path.exists() and path != path.parent:
        path = path.parent
    return shutil.disk_usage(path).free


def is_disk_full(err: BaseException) -> bool:
    """True if ``err`` (or an exception it was raised from) says the disk is full."""
    seen: set[int] = set()
    current: BaseException | None = err
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, OSError) and current.errno in (errno.ENOSPC, errno.EDQUOT):
            return True
        if any(text in str(current).lower() for text in _NO_SPACE_TEXT):
            return True
        current = current.__cause__ or current.__context__
    return False


def measurement_set_bytes(nrows: int, nchan: int = 1) -> int:
    """About the size on disk of one MeasurementSet of ``nrows`` rows x ``nchan`` channels
    as :mod:`sdpbatch.io.ms_write` writes it."""
    per_row = MS_BYTES_PER_ROW + MS_BYTES_PER_ROW_CHANNEL * nchan
    return int(MS_FIXED_BYTES + nrows * per_row)


def simulation_bytes(*, nfreqwin: int, ntimes: int, nbaselines: int, nchan: int = 1) -> int:
    """About the bytes a simulation writes: one MeasurementSet per window (rows: times x
    baselines) and the truth files (small)."""
    return nfreqwin * measurement_set_bytes(ntimes * nbaselines, nchan) + MS_FIXED_BYTES


def image_products_bytes(*, npixel: int, nfreqwin: int) -> int:
    """About the bytes ICAL's products take: five MFS images (restored, residual, model and,
    with primary-beam correction, the beam and the corrected image) and three cubes of
    float32; gains, QA, preview and component lists (a line per model pixel) small."""
    return int(npixel**2 * 4 * (5 + 3 * nfreqwin) + 2 * MB)


def check_space(needs: Iterable[tuple[Path, int]]) -> None:
    """Raise :class:`DiskFull` for the first directory whose filesystem cannot take what
    will be written under it (directories on one filesystem add up)."""
    per_device: dict[int, tuple[Path, int]] = {}
    for directory, needed in needs:
        path = Path(directory).absolute()
        probe = path
        while not probe.exists() and probe != probe.parent:
            probe = probe.parent
        device = probe.stat().st_dev
        first, total = per_device.get(device, (path, 0))
        per_device[device] = (first, total + needed)
    for directory, needed in per_device.values():
        free = free_bytes(directory)
        if needed > free:
            raise DiskFull(directory, needed, free)


def remove_partials_of(directories: Iterable[Path]) -> list[Path]:
    """Delete what interrupted atomic writes left in each directory and, beside it, staging
    folders ``<name>.partial-*`` of the directory itself; return what went."""
    from sdpbatch.io.atomic import TEMP_MARK, remove_partials

    removed: list[Path] = []
    for directory in directories:
        directory = Path(directory)
        if directory.is_dir():
            removed += remove_partials(directory)
        if directory.parent.is_dir():
            for staging in directory.parent.glob(f"{directory.name}{TEMP_MARK}*"):
                shutil.rmtree(staging, ignore_errors=True)
                removed.append(staging)
    return removed


@contextlib.contextmanager
def writing_into(directories: Iterable[Path], *, needed: int = 0) -> Iterator[None]:
    """Around a run that writes into ``directories``: on any failure, remove the half-written
    products (``.partial``) and, if the disk filled up, raise :class:`DiskFull` instead.

    A worker that dies inside casacore on a full disk reaches the caller as a Dask error
    without a word about the disk: a failure while a directory has almost no free space
    left is taken as a full disk too.
    """
    directories = [Path(d) for d in directories]
    try:
        yield
    except DiskFull:
        remove_partials_of(directories)
        raise
    except BaseException as err:
        full = [d for d in directories if free_bytes(d) < LOW_SPACE_BYTES]
        remove_partials_of(directories)
        if is_disk_full(err) or full:
            target = full[0] if full else directories[0]
            raise DiskFull(target, needed) from err
        raise
