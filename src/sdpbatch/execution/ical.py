"""The ICAL pipeline: self-calibration and imaging of MeasurementSets, in-process or on Dask.

The story (the seed's ICAL, see the science reference):

1. read: the frequency windows (one MeasurementSet each) are spread over groups, one per Dask
   worker; each group reads its MeasurementSets itself (pinned futures).  A group of at most
   ``CHUNK_VISIBILITIES`` keeps its visibilities in the worker's memory for the whole run; a
   larger one is streamed: it is read in time chunks of at most that size, each written once to
   the worker's scratch directory, and every pass reads the chunks back one at a time (model
   visibilities likewise, per chunk), so a worker's memory does not grow with the number of
   times or windows.  Only small things (times, weight sums, solve sums, gains) and images
   travel.
2. cycle 0: PSF Taylor images, dirty Taylor images, multi-scale multi-frequency clean.
3. ``nmajor`` major cycles: update the model visibilities per group with the last minor cycle's
   increment -> solve sums per group -> combine and solve the gains (StEFCal, small, in the
   client) -> correct a fresh copy of the data and grid the Taylor residual images per group ->
   add them up -> clean (one task).
4. final residual per window (the Taylor residual follows from it), restore with the clean beam
   fitted to the PSF.

Cost: every group grids all its channels in one ducc0 call, so a gridder pass costs one FFT
per group; a pass per Taylor term is needed (ducc0 makes one real image per call).  Increments
with few pixels (late cycles) are predicted by an exact direct sum instead of gridder passes,
the PSF's spectral terms are gridded on the minor cycle's PSF patch only, and independent passes
run side by side on the available threads.
With ``client=None`` the same per-group functions run in this process on one group.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import logging
import os
import shutil
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import ducc0
import numpy as np

from sdpbatch.execution.cluster import worker_threads
from sdpbatch.execution.progress import NoProgress, Progress
from sdpbatch.io.ms_read import (
    MeasurementSetError,
    read_measurement_set,
    read_measurement_set_metadata,
    read_measurement_set_times,
)
from sdpbatch.parameters import Parameters
from sdpbatch.science.beam import CleanBeam, fit_clean_beam, restore
from sdpbatch.science.clean import CleanResult, msmfs_clean
from sdpbatch.science.imaging import (
    advise_image,
    apply_density_weighting,
    fast_even_size,
    grid_dirty,
    grid_psf,
    predict_sparse,
    predict_visibilities,
    weight_density,
)
from sdpbatch.science.predict import predict_point_sources
from sdpbatch.science.skymodel import SkyModel, lmn
from sdpbatch.science.solve import (
    TERMS,
    SolveSums,
    anchor_phase_gradient,
    baseline_gains,
    combine_sums,
    compress,
    interval_index,
    solution_intervals,
    solve_gains,
)
from sdpbatch.science.visibility import Visibilities

LOG = logging.getLogger(__name__)

SPARSE_PIXELS_PER_TERM = 32
"""A model increment with up to this many pixels per Taylor term is predicted by direct sum
(~10 ms per pixel per million visibilities, against ~0.6 s per gridder pass)."""

CHUNK_VISIBILITIES = 4_000_000
"""Most visibilities (rows x channels) of a group held at once (~45 bytes each with the model
and imaging weights, ~180 MB): a larger group is streamed in time chunks of at most this size,
spilled once to scratch files; a smaller one (the seed's example) stays in memory.  Every
gridder call costs a fixed ~0.27 s at 1024 pixels (FFTs of the w-planes; measured): smaller
chunks cost more passes' worth of FFTs."""

GROUP_VISIBILITIES = CHUNK_VISIBILITIES
"""On a cluster, one group (a worker's share of the windows) per this many visibilities, at
most one per worker: each group pays the fixed FFT cost of every gridder call, so data that
fit one group are gridded by one worker with the threads of its host rather than split."""

TIME_DECIMALS = 3
"""Times are compared after rounding to a millisecond (different files of one observation)."""


def _trimmed(fn: Callable) -> Callable:
    """Run ``fn``, then return freed heap memory to the system (big temporaries)."""

    @functools.wraps(fn)
    def run(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        finally:
            _trim_memory()

    return run


# --- results -------------------------------------------------------------------------------------


@dataclass
class GainSolution:
    """Solved gains of one term, ``DATA ~= g_p conj(g_q) MODEL`` (p = antenna1).

    gains : (ntime_sol, nant, nfreq_sol) complex; times : (ntime_sol,) MJD s, interval centres;
    frequencies : (nfreq_sol,) Hz (the reference frequency for frequency-independent terms).
    """

    gains: np.ndarray
    times: np.ndarray
    frequencies: np.ndarray


@dataclass
class IcalResult:
    """Everything ICAL produces (nothing is written: see ``execution/pipeline.py``).

    Images are ``image[ix, iy]`` (l east along ix, m north along iy); models in Jy/pixel,
    residual and restored images in Jy/beam.  Cubes have one plane per frequency window.
    """

    model_taylor: np.ndarray  # (nmoment, N, N)
    residual_taylor: np.ndarray  # (nmoment, N, N)
    restored: np.ndarray  # (N, N), at the reference frequency
    model_cube: np.ndarray  # (nwin, N, N)
    residual_cube: np.ndarray  # (nwin, N, N)
    restored_cube: np.ndarray  # (nwin, N, N)
    psf: np.ndarray  # (N, N), peak 1
    clean_beam: CleanBeam
    frequencies: np.ndarray  # (nwin,) Hz
    bandwidths: np.ndarray  # (nwin,) Hz
    reference_frequency: float
    cellsize: float
    npixel: int
    phase_centre: tuple[float, float]
    solutions: dict[str, GainSolution]
    antenna_names: list[str]
    antenna_positions: np.ndarray
    cycles: list[dict] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)
    stage_intervals: list[tuple[str, float, float]] = field(default_factory=list)
    """(stage, start, end) on the ``time.perf_counter`` clock: for benchmarks' memory per stage."""


# --- what every group needs to know (small, sent to the workers) ---------------------------------


@dataclass(frozen=True)
class WindowSpec:
    """One frequency window: its MeasurementSet, window index and first global channel."""

    path: str
    window: int
    first_channel: int


@dataclass
class ImagingSetup:
    """The small, shared description of the imaging and calibration of one run."""

    npixel: int
    cellsize: float
    epsilon: float
    nmoment: int
    reference_frequency: float
    weighting: str
    robust: float
    boundaries: dict[str, np.ndarray]  # solution interval boundaries per gain term
    nthreads: int | None  # None: the worker's threads (``worker_threads()``)
    psf_npixel: int  # size of the spectral PSF terms (covers the minor cycles' PSF patch)
    sparse_pixels: int  # model increments with at most this many pixels are predicted by DFT
    run_id: str = ""  # names this run's scratch directory (streamed groups)

    @property
    def threads(self) -> int:
        return self.nthreads if self.nthreads is not None else worker_threads()


@dataclass
class Block:
    """Visibilities of one or more windows that share their rows, kept in worker memory.

    ``vis``, ``weight``, ``flag`` are (nrow, nchan); ``channels`` are the global channel
    indices, ``windows`` the window of each channel; after :func:`prepare_group`,
    ``imaging_weight`` (nrow, nchan), ``taylor`` (nchan,) t_c and ``intervals`` per gain term.
    """

    uvw: np.ndarray
    time: np.ndarray
    antenna1: np.ndarray
    antenna2: np.ndarray
    frequency: np.ndarray
    vis: np.ndarray
    weight: np.ndarray
    flag: np.ndarray
    channels: np.ndarray
    windows: np.ndarray
    imaging_weight: np.ndarray | None = None
    taylor: np.ndarray | None = None
    intervals: dict[str, np.ndarray] = field(default_factory=dict)

    def mask(self) -> np.ndarray | None:
        return self.flag if self.flag.any() else None


@dataclass
class SpilledChunk:
    """One time chunk of a streamed group, written once to the worker's scratch directory.

    ``directory`` holds ``b<i>-<array>.npy`` per block (written under a temporary name and
    renamed: it exists only complete); if it is gone (a new worker recomputing), the chunk is
    read again from the MeasurementSets rows with ``time_range[0] <= TIME < time_range[1]``.
    ``blocks`` keeps each block's small arrays (frequency, channels, windows).
    """

    directory: str
    time_range: tuple[float, float]
    blocks: list[dict[str, np.ndarray]]
    nvis: int


@dataclass
class Group:
    """The data of one group of windows (the unit of work of one worker).

    Small groups keep their ``blocks`` in memory (one chunk).  Larger ones are streamed: their
    ``chunks`` are spilled time chunks of at most :data:`CHUNK_VISIBILITIES`, read back (and
    prepared with ``setup`` and ``density``) one at a time by every pass.
    """

    blocks: list[Block]
    summary: dict[str, Any]
    windows: list[WindowSpec] = field(default_factory=list)
    chunks: list[SpilledChunk] = field(default_factory=list)
    setup: ImagingSetup | None = None
    density: np.ndarray | None = None

    @property
    def streamed(self) -> bool:
        return bool(self.chunks)


@dataclass
class SpilledModel:
    """Model visibilities of a streamed group: one ``.npy`` file per (chunk, block).

    ``model`` (nmoment, N, N) is the model image they predict: a file that is gone (deleted
    after the next cycle, or lost with its worker while Dask recomputes) is predicted again.
    """

    files: list[list[str]]
    model: np.ndarray


# --- streaming: chunks of bounded size -----------------------------------------------------------


class _Resident:
    """Counts the visibilities of group data resident in this process (for the tests)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.now = 0
        self.peak = 0

    @contextlib.contextmanager
    def holding(self, nvis: int):
        with self.lock:
            self.now += nvis
            self.peak = max(self.peak, self.now)
        try:
            yield
        finally:
            with self.lock:
                self.now -= nvis

    def reset(self) -> None:
        with self.lock:
            self.now = self.peak = 0


RESIDENT = _Resident()
"""Visibilities of group data held by passes in this process: now and at most (``peak``)."""


def _nvis(blocks: Sequence[Block]) -> int:
    return sum(b.vis.size for b in blocks)


def _scratch_root(run_id: str, worker: Any = None) -> Path:
    """This run's scratch directory: in the Dask worker's local directory, or the temp dir."""
    if worker is None:
        try:
            from distributed import get_worker

            worker = get_worker()
        except (ImportError, ValueError):
            worker = None
    base = Path(worker.local_directory) if worker is not None else Path(tempfile.gettempdir())
    return base / f"sdpbatch-ical-{run_id}"


def remove_scratch(run_id: str, dask_worker: Any = None) -> None:
    """Delete this run's scratch files in this process, or on the worker (``client.run``)."""
    shutil.rmtree(_scratch_root(run_id, dask_worker), ignore_errors=True)


def _time_chunks(
    windows: Sequence[WindowSpec], nchans: Sequence[int], limit: int
) -> list[tuple[float, float]]:
    """Time ranges [start, end) whose rows x channels over the windows fit a chunk.

    Consecutive distinct times are added while the chunk stays within ``limit`` visibilities
    (a single time may exceed it); boundaries lie halfway between times, the outer ones are
    infinite.
    """
    per_time: dict[float, int] = {}
    for spec, nchan in zip(windows, nchans, strict=True):
        times, counts = np.unique(
            np.round(read_measurement_set_times(spec.path), TIME_DECIMALS), return_counts=True
        )
        for t, n in zip(times.tolist(), counts.tolist(), strict=True):
            per_time[t] = per_time.get(t, 0) + n * nchan
    times = sorted(per_time)
    starts, size = [0], 0
    for i, t in enumerate(times):
        if size and size + per_time[t] > limit:
            starts.append(i)
            size = 0
        size += per_time[t]
    edges = [-np.inf] + [0.5 * (times[i - 1] + times[i]) for i in starts[1:]] + [np.inf]
    return list(zip(edges[:-1], edges[1:], strict=True))


def _read_blocks(
    windows: Sequence[WindowSpec], time_range: tuple[float, float] | None = None
) -> list[Block]:
    """Read the windows (or their rows in ``time_range``); windows sharing rows become a block."""
    blocks: list[Block] = []
    for spec in windows:
        vis = read_measurement_set(spec.path, time_range=time_range)
        if vis.nrow == 0:
            continue
        channels = spec.first_channel + np.arange(vis.nchan)
        window = np.full(vis.nchan, spec.window)
        target = next((b for b in blocks if _same_rows(b, vis)), None)
        if target is None:
            blocks.append(
                Block(
                    uvw=vis.uvw,
                    time=vis.time,
                    antenna1=vis.antenna1.astype(np.int64),
                    antenna2=vis.antenna2.astype(np.int64),
                    frequency=vis.frequency,
                    vis=vis.vis,
                    weight=vis.weight,
                    flag=vis.flag,
                    channels=channels,
                    windows=window,
                )
            )
            continue
        target.frequency = np.concatenate([target.frequency, vis.frequency])
        target.vis = np.concatenate([target.vis, vis.vis], axis=1)
        target.weight = np.concatenate([target.weight, vis.weight], axis=1)
        target.flag = np.concatenate([target.flag, vis.flag], axis=1)
        target.channels = np.concatenate([target.channels, channels])
        target.windows = np.concatenate([target.windows, window])
    for b in blocks:  # the gridder wants ascending frequencies (windows may come in any order)
        order = np.argsort(b.frequency, kind="stable")
        if np.any(order != np.arange(order.size)):
            for name in ("vis", "weight", "flag"):
                setattr(b, name, np.ascontiguousarray(getattr(b, name)[:, order]))
            for name in ("frequency", "channels", "windows"):
                setattr(b, name, getattr(b, name)[order])
    return blocks


_ROW_ARRAYS = ("uvw", "time", "antenna1", "antenna2", "vis", "weight", "flag")
_SMALL_ARRAYS = ("frequency", "channels", "windows")


def _save(path: Path, array: np.ndarray) -> None:
    with open(path, "wb") as f:
        np.save(f, array, allow_pickle=False)


def _load(path: Path | str) -> np.ndarray:
    return np.load(path, allow_pickle=False)  # reads into memory (no memmap)


def _spill(blocks: list[Block], root: Path, time_range: tuple[float, float]) -> SpilledChunk:
    """Write a chunk's blocks to a new directory under ``root`` (temp name, then rename)."""
    root.mkdir(parents=True, exist_ok=True)
    name = uuid.uuid4().hex
    tmp = root / f"{name}.tmp"
    tmp.mkdir()
    for i, b in enumerate(blocks):
        for array in _ROW_ARRAYS:
            _save(tmp / f"b{i}-{array}.npy", getattr(b, array))
    final = root / name
    os.rename(tmp, final)
    return SpilledChunk(
        directory=str(final),
        time_range=time_range,
        blocks=[{k: getattr(b, k) for k in _SMALL_ARRAYS} for b in blocks],
        nvis=_nvis(blocks),
    )


def _unspill(chunk: SpilledChunk, windows: Sequence[WindowSpec]) -> list[Block]:
    """A spilled chunk's blocks, from its files or, if they are gone, from the MeasurementSets."""
    directory = Path(chunk.directory)
    if not directory.is_dir():
        LOG.info("scratch %s is gone: reading the chunk again", directory)
        return _read_blocks(windows, chunk.time_range)
    return [
        Block(
            **{a: _load(directory / f"b{i}-{a}.npy") for a in _ROW_ARRAYS},
            **small,
        )
        for i, small in enumerate(chunk.blocks)
    ]


def _chunks(group: Group) -> Iterator[tuple[int, list[Block]]]:
    """(chunk index, blocks) of a group, one chunk resident at a time; prepared if set up."""
    if not group.streamed:
        with RESIDENT.holding(_nvis(group.blocks)):
            yield 0, group.blocks
        return
    for c, chunk in enumerate(group.chunks):
        with RESIDENT.holding(chunk.nvis):
            blocks = _unspill(chunk, group.windows)
            if group.setup is not None:
                blocks = [_prepare_block(b, group.setup, group.density) for b in blocks]
            yield c, blocks
            del blocks


def _summary(blocks: Sequence[Block]) -> dict[str, Any]:
    times = [np.unique(np.round(b.time, TIME_DECIMALS)) for b in blocks]
    return {
        "times": np.unique(np.concatenate(times)) if times else np.zeros(0),
        "uvw_max": max((float(np.abs(b.uvw).max()) for b in blocks if b.uvw.size), default=0.0),
    }


# --- per-group work (runs on the workers, or in this process) ------------------------------------


def _same_rows(block: Block, vis: Visibilities) -> bool:
    return (
        block.uvw.shape == vis.uvw.shape
        and np.array_equal(block.time, vis.time)
        and np.array_equal(block.antenna1, vis.antenna1)
        and np.array_equal(block.antenna2, vis.antenna2)
        and np.allclose(block.uvw, vis.uvw, rtol=0, atol=1e-6)
    )


@_trimmed
def load_group(windows: Sequence[WindowSpec], run_id: str, chunk_visibilities: int) -> Group:
    """Read the MeasurementSets of one group; windows sharing their rows become one block.

    A group of at most ``chunk_visibilities`` (rows x channels) stays in memory; a larger one
    is read in time chunks of at most that size (see :data:`CHUNK_VISIBILITIES`), each written
    once to scratch files under ``run_id``'s directory.
    """
    infos = [read_measurement_set_metadata(s.path) for s in windows]
    if sum(i.nrow * i.nchan for i in infos) <= chunk_visibilities:
        blocks = _read_blocks(windows)
        return Group(blocks, {**_summary(blocks), "streamed": False})
    root = _scratch_root(run_id)
    chunks, summaries = [], []
    for time_range in _time_chunks(windows, [i.nchan for i in infos], chunk_visibilities):
        blocks = _read_blocks(windows, time_range)
        with RESIDENT.holding(_nvis(blocks)):
            summaries.append(_summary(blocks))
            chunks.append(_spill(blocks, root, time_range))
        del blocks
    summary = {
        "times": np.unique(np.concatenate([s["times"] for s in summaries])),
        "uvw_max": max(s["uvw_max"] for s in summaries),
        "streamed": True,
    }
    return Group([], summary, windows=list(windows), chunks=chunks)


def group_summary(group: Group) -> dict[str, Any]:
    """Small facts of a group: distinct times (MJD s) and the largest |u|, |v|, |w| (m)."""
    return group.summary


def group_density(group: Group, npixel: int, cellsize: float) -> np.ndarray:
    """Gridded weight density (npixel, npixel) of a group's unflagged data."""
    density = np.zeros((npixel, npixel))
    for _, blocks in _chunks(group):
        for b in blocks:
            density += weight_density(
                b.uvw,
                b.frequency,
                np.where(b.flag, 0.0, b.weight),
                npixel=npixel,
                cellsize=cellsize,
            )
    return density


def _prepare_block(b: Block, setup: ImagingSetup, density: np.ndarray | None) -> Block:
    """A block ready to image: imaging weights, Taylor factors, solution intervals."""
    real = np.float64 if setup.epsilon <= 1e-5 else np.float32
    weight = np.where(b.flag, 0.0, b.weight.astype(np.float64))
    if setup.weighting != "natural":
        weight = apply_density_weighting(
            b.uvw,
            b.frequency,
            weight,
            density,
            scheme=setup.weighting,
            robust=setup.robust,
            cellsize=setup.cellsize,
        )
    times = np.round(b.time, TIME_DECIMALS)
    return Block(
        **{k: getattr(b, k) for k in ("uvw", "time", "antenna1", "antenna2", "frequency")},
        vis=b.vis,
        weight=b.weight,
        flag=b.flag,
        channels=b.channels,
        windows=b.windows,
        imaging_weight=np.ascontiguousarray(weight, dtype=real),
        taylor=(b.frequency - setup.reference_frequency) / setup.reference_frequency,
        intervals={t: interval_index(times, bnd) for t, bnd in setup.boundaries.items()},
    )


def prepare_group(group: Group, setup: ImagingSetup, density: np.ndarray | None) -> Group:
    """A copy of the group ready to image (a streamed group prepares each chunk when read)."""
    if group.streamed:
        return Group([], group.summary, group.windows, group.chunks, setup, density)
    return Group([_prepare_block(b, setup, density) for b in group.blocks], group.summary)


def _concurrently(jobs: list[Callable[[int], Any]], threads: int) -> list[Any]:
    """Run independent gridder jobs (callables taking ``nthreads``), results in order.

    With several threads, jobs run side by side with one thread each: ducc0 passes scale
    better that way than one after the other with all threads (measured: two 8-channel
    passes 0.87 s instead of 1.07 s, eight 1-channel passes 1.75 s instead of 2.4 s).
    """
    if threads < 2 or len(jobs) < 2:
        return [job(threads) for job in jobs]
    parallel = min(threads, len(jobs))
    with ThreadPoolExecutor(parallel) as pool:
        return list(pool.map(lambda job: job(max(1, threads // parallel)), jobs))


@_trimmed
def group_psf(group: Group, setup: ImagingSetup) -> tuple[np.ndarray, float]:
    """Unnormalised Taylor PSFs (2 nmoment - 1, N, N) of a group, and its weight sum.

    The spectral terms (k >= 1) only serve the minor cycles, which use the central
    ``psf_npixel`` patch: they are gridded on that smaller image (the same pixel values, a
    fraction of the cost) and are zero outside it.  ``psf_taylor[0]`` is the full PSF.
    """
    nterm, n = 2 * setup.nmoment - 1, setup.npixel
    images = np.zeros((nterm, n, n))
    wsum = 0.0
    for _, blocks in _chunks(group):
        for b in blocks:

            def job(k: int, b: Block = b) -> Callable[[int], tuple[np.ndarray, float]]:
                size = n if k == 0 else setup.psf_npixel
                return lambda nthreads: grid_psf(
                    b.uvw,
                    b.frequency,
                    b.imaging_weight,
                    npixel=size,
                    cellsize=setup.cellsize,
                    epsilon=setup.epsilon,
                    nthreads=nthreads,
                    channel_factors=None if k == 0 else b.taylor**k,
                    flag=b.mask(),
                )

            results = _concurrently([job(k) for k in range(nterm)], setup.threads)
            for k, (image, _) in enumerate(results):
                size = image.shape[0]
                start = n // 2 - size // 2
                images[k, start : start + size, start : start + size] += image
            wsum += results[0][1]
    return images, wsum


def _predict_block(
    b: Block, previous: np.ndarray | None, increment: np.ndarray, setup: ImagingSetup
) -> np.ndarray:
    """``previous`` (or zeros) + the visibilities of ``increment`` for one block."""
    nonzero = int(np.count_nonzero(np.any(increment != 0, axis=0)))
    terms = [k for k in range(increment.shape[0]) if increment[k].any()]
    vis = np.zeros(b.vis.shape, dtype=np.complex128) if previous is None else previous.copy()
    if 0 < nonzero <= setup.sparse_pixels:
        vis += predict_sparse(
            increment,
            b.uvw,
            b.frequency,
            b.taylor,
            cellsize=setup.cellsize,
            nthreads=setup.threads,
        )
    elif nonzero:

        def job(k: int) -> Callable[[int], np.ndarray]:
            return lambda nthreads: predict_visibilities(
                increment[k],
                b.uvw,
                b.frequency,
                cellsize=setup.cellsize,
                epsilon=setup.epsilon,
                nthreads=nthreads,
                flag=b.mask(),
            )

        preds = _concurrently([job(k) for k in terms], setup.threads)
        for k, pred in zip(terms, preds, strict=True):
            vis += pred if k == 0 else pred * (b.taylor**k)[None, :]
    if nonzero and b.flag.any():
        vis[b.flag] = 0.0
    return vis


@_trimmed
def group_predict(
    group: Group,
    previous: list[np.ndarray] | SpilledModel | None,
    increment: np.ndarray,
    setup: ImagingSetup,
) -> list[np.ndarray] | SpilledModel:
    """Model visibilities per block after a minor cycle: ``previous`` + those of ``increment``.

    ``V_c = sum_k t_c^k degrid(increment[k])``: one gridder pass per Taylor term, or, when the
    increment has at most ``setup.sparse_pixels`` nonzero pixels (late cycles), a direct
    Fourier sum over them, which is exact and much cheaper.  Prediction is linear, so adding
    the increment's visibilities to the previous ones equals predicting the whole model.
    A streamed group writes them per chunk (the previous files are then deleted); should a
    previous file be gone, the whole model is predicted.
    """
    if not group.streamed:
        return [
            _predict_block(b, None if previous is None else previous[i], increment, setup)
            for i, b in enumerate(group.blocks)
        ]
    root = _scratch_root(setup.run_id)
    root.mkdir(parents=True, exist_ok=True)
    model = increment.copy() if previous is None else previous.model + increment
    files: list[list[str]] = []
    for c, blocks in _chunks(group):
        names = []
        for i, b in enumerate(blocks):
            old = None if previous is None else Path(previous.files[c][i])
            if old is None or old.is_file():
                vis = _predict_block(b, None if old is None else _load(old), increment, setup)
            else:
                vis = _predict_block(b, None, model, setup)
            name = root / f"model-{uuid.uuid4().hex}.npy"
            tmp = name.with_suffix(".tmp")
            _save(tmp, vis)
            os.replace(tmp, name)
            names.append(str(name))
            del vis
        files.append(names)
    if previous is not None:
        for name in (n for chunk in previous.files for n in chunk):
            Path(name).unlink(missing_ok=True)
    return SpilledModel(files, model)


def _model_blocks(
    model_vis: list[np.ndarray] | SpilledModel | None,
    chunk: int,
    blocks: list[Block],
    setup: ImagingSetup | None,
) -> list[np.ndarray | None]:
    if model_vis is None:
        return [None] * len(blocks)
    if not isinstance(model_vis, SpilledModel):
        return list(model_vis)
    out = []
    for name, b in zip(model_vis.files[chunk], blocks, strict=True):
        if Path(name).is_file():
            out.append(_load(name))
        else:
            LOG.info("model visibilities %s are gone: predicting them again", name)
            out.append(_predict_block(b, None, model_vis.model, setup))
    return out


def _with_models(
    group: Group, model_vis: list[np.ndarray] | SpilledModel | None
) -> Iterator[tuple[Block, np.ndarray | None]]:
    """(block, its model visibilities or None) over a group's chunks, one chunk at a time."""
    for c, blocks in _chunks(group):
        models = _model_blocks(model_vis, c, blocks, group.setup)
        yield from zip(blocks, models, strict=True)
        del blocks, models  # before the next chunk is read


def _solution_channels(block: Block, term: str) -> np.ndarray:
    if TERMS[term].per_channel:
        return block.channels
    return np.zeros(block.channels.size, dtype=np.int64)


def _gain_product(
    block: Block, gains: dict[str, np.ndarray], skip: str | None = None
) -> np.ndarray | None:
    """``prod_terms g_p conj(g_q)`` (nrow, nchan) of the block, or None without gains."""
    total = None
    for term, g in gains.items():
        if term == skip:
            continue
        gpq = baseline_gains(
            g,
            interval=block.intervals[term],
            antenna1=block.antenna1,
            antenna2=block.antenna2,
            channel=_solution_channels(block, term),
        )
        total = gpq if total is None else total * gpq
    return total


def _block_sums(b: Block, model: np.ndarray, gains: dict[str, np.ndarray], term: str) -> SolveSums:
    """Solve sums of ``term`` for one block, the model corrupted by the other current gains."""
    others = _gain_product(b, gains, skip=term)
    if others is not None:
        model = model * others
    return compress(
        b.vis,
        model,
        b.weight,
        antenna1=b.antenna1,
        antenna2=b.antenna2,
        interval=b.intervals[term],
        channel=b.channels if TERMS[term].per_channel else None,
        flag=b.flag,
    )


@_trimmed
def group_solve_sums(
    group: Group,
    model_vis: list[np.ndarray] | SpilledModel,
    gains: dict[str, np.ndarray],
    term: str,
) -> SolveSums:
    """Solve sums of ``term`` for a group against its model visibilities."""
    parts = []
    for b, model in _with_models(group, model_vis):
        parts.append(_block_sums(b, model, gains, term))
        del b, model  # before the next chunk is read
    return combine_sums(parts)


@dataclass(frozen=True)
class CalibrationSky:
    """Point components to calibrate against: direction cosines about the phase centre."""

    sky: SkyModel
    lmn: np.ndarray  # (nsrc, 3)


def calibration_sky(sky: SkyModel, phase_centre: tuple[float, float]) -> CalibrationSky:
    """The components of ``sky`` above the horizon of ``phase_centre``, ready to predict."""
    directions = lmn(sky.ra, sky.dec, phase_centre)
    above = directions[:, 2] > 0
    return CalibrationSky(sky.select(above), directions[above])


@_trimmed
def group_sky_model_sums(
    group: Group, sky: CalibrationSky, gains: dict[str, np.ndarray], term: str
) -> SolveSums:
    """Solve sums of ``term`` for a group against the exact visibilities of ``sky``.

    The components are predicted by direct Fourier sum block by block (never stored): their
    positions are exact, not rounded to pixels, which is what anchors the image.
    """
    parts = []
    for b, _ in _with_models(group, None):
        model = predict_point_sources(b.uvw, b.frequency, sky.lmn, sky.sky.flux_at(b.frequency))
        if b.flag.any():
            model[b.flag] = 0.0
        parts.append(_block_sums(b, model, gains, term))
        del b, model  # before the next chunk is read
    return combine_sums(parts)


def _residual_vis(block: Block, model: np.ndarray | None, gains: dict[str, np.ndarray]):
    """Corrected data minus model, (nrow, nchan) complex: the fresh data corrected each time."""
    gpq = _gain_product(block, gains)
    vis = block.vis
    if gpq is not None:
        with np.errstate(divide="ignore", invalid="ignore"):
            vis = np.where(gpq != 0, vis / gpq, 0.0)
    return vis if model is None else vis - model


@_trimmed
def group_residual(
    group: Group,
    model_vis: list[np.ndarray] | SpilledModel | None,
    gains: dict[str, np.ndarray],
    setup: ImagingSetup,
) -> tuple[np.ndarray, float]:
    """Unnormalised Taylor residual images (nmoment, N, N) of a group, and its weight sum."""
    images = np.zeros((setup.nmoment, setup.npixel, setup.npixel))
    wsum = 0.0
    for b, model in _with_models(group, model_vis):
        resid = _residual_vis(b, model, gains)
        del model

        def job(k: int, b: Block = b, resid: np.ndarray = resid) -> Callable[[int], Any]:
            return lambda nthreads: grid_dirty(
                b.uvw,
                b.frequency,
                resid,
                b.imaging_weight,
                npixel=setup.npixel,
                cellsize=setup.cellsize,
                epsilon=setup.epsilon,
                nthreads=nthreads,
                channel_factors=None if k == 0 else b.taylor**k,
                flag=b.mask(),
            )

        results = _concurrently([job(k) for k in range(setup.nmoment)], setup.threads)
        for k, (image, _) in enumerate(results):
            images[k] += image
        wsum += results[0][1]
        del resid, results, b  # before the next chunk is read
    return images, wsum


@_trimmed
def group_window_residuals(
    group: Group,
    model_vis: list[np.ndarray] | SpilledModel | None,
    gains: dict[str, np.ndarray],
    setup: ImagingSetup,
) -> dict[int, tuple[np.ndarray, float, float]]:
    """Per window: (unnormalised residual (N, N), weight sum, Taylor factor of the window).

    The Taylor residual images follow from these as ``sum_w t_w^k U_w / sum_w W_w`` when every
    window has one channel, which saves the separate Taylor passes.
    """
    out: dict[int, tuple[np.ndarray, float, float]] = {}
    for b, model in _with_models(group, model_vis):
        resid = _residual_vis(b, model, gains)
        del model
        mask = b.mask()
        windows = [int(w) for w in np.unique(b.windows)]

        def job(w: int, b: Block = b, resid: np.ndarray = resid, mask=mask) -> Callable:
            sel = np.flatnonzero(b.windows == w)
            return lambda nthreads: grid_dirty(
                b.uvw,
                b.frequency[sel],
                resid[:, sel],
                b.imaging_weight[:, sel],
                npixel=setup.npixel,
                cellsize=setup.cellsize,
                epsilon=setup.epsilon,
                nthreads=nthreads,
                flag=None if mask is None else mask[:, sel],
            )

        images = _concurrently([job(w) for w in windows], setup.threads)
        for w, (image, s) in zip(windows, images, strict=True):
            t = float(b.taylor[b.windows == w].mean())
            if w in out:
                image, s = out[w][0] + image, out[w][1] + s
            out[w] = (image, s, t)
        del resid, images, b
    return out


# --- small tasks that combine groups -------------------------------------------------------------


def sum_images(*parts: tuple[np.ndarray, float]) -> tuple[np.ndarray, float]:
    """Sum of unnormalised images of the groups, normalised by the total weight."""
    total = sum(p[1] for p in parts)
    if total <= 0:
        raise ValueError("no unflagged visibilities with positive weight to image")
    images = parts[0][0].copy()
    for p in parts[1:]:
        images += p[0]
    return images / total, total


@_trimmed
def psf_beam(psf: tuple[np.ndarray, float], cellsize: float) -> CleanBeam:
    """The clean beam fitted to the PSF (raises if the cell size does not sample the beam)."""
    return fit_clean_beam(psf[0][0], cellsize)


def clean_cycle(
    residual: tuple[np.ndarray, float], psf: tuple[np.ndarray, float], options: dict[str, Any]
) -> CleanResult:
    """One minor cycle (multi-scale multi-frequency clean) on the summed residual."""
    nthreads = worker_threads_or(options)
    ensure_ducc_threads(nthreads)
    return msmfs_clean(residual[0], psf[0], nthreads=nthreads, **options["clean"])


def ensure_ducc_threads(nthreads: int) -> None:
    """Grow ducc0's thread pool to ``nthreads`` (it is sized from OMP_NUM_THREADS at import,
    which a Dask worker sets to its own thread count, and caps every ``nthreads``)."""
    if ducc0.misc.thread_pool_size() < nthreads:
        ducc0.misc.resize_thread_pool(nthreads)


def worker_threads_or(options: dict[str, Any]) -> int:
    return options["nthreads"] if options["nthreads"] is not None else worker_threads()


def increment_of(result: CleanResult) -> np.ndarray:
    """The model increment (nmoment, N, N) Jy/pixel found by a minor cycle."""
    return result.model_taylor


def add_model(model: np.ndarray | None, result: CleanResult) -> np.ndarray:
    """The model after a minor cycle (its increment added)."""
    return result.model_taylor.copy() if model is None else model + result.model_taylor


def clean_summary(result: CleanResult) -> dict[str, Any]:
    """Small statistics of a minor cycle for the client."""
    return {
        "peak": result.peak_start,
        "peak_end": result.peak_end,
        "rms": float(np.sqrt(np.mean(result.residual_taylor[0] ** 2))),
        "components": result.components,
        "stop_reason": result.stop_reason,
    }


def final_images(
    model: np.ndarray,
    psf: tuple[np.ndarray, float],
    beam: CleanBeam,
    windows: Iterable[dict[int, tuple[np.ndarray, float, float]]],
    nwin: int,
    options: dict[str, Any],
) -> dict[str, Any]:
    """Final residual, cubes and restored images from the per-window residuals."""
    nthreads = worker_threads_or(options)
    nmoment, npixel = model.shape[0], model.shape[1]
    residual_cube = np.zeros((nwin, npixel, npixel))
    weights = np.zeros(nwin)
    taylor = np.zeros(nwin)
    for part in windows:
        for w, (image, s, t) in part.items():
            residual_cube[w] += image  # unnormalised until all groups are in
            weights[w] += s
            taylor[w] = t
    total = weights.sum()
    residual_taylor = np.zeros((nmoment, npixel, npixel))
    for w in range(nwin):
        for k in range(nmoment):
            residual_taylor[k] += taylor[w] ** k * residual_cube[w]
        if weights[w] > 0:
            residual_cube[w] /= weights[w]
    residual_taylor /= total
    cellsize = options["cellsize"]
    # restoring is linear: restore the Taylor terms once, then combine them per window
    restored_taylor = [restore(model[k], beam, cellsize, nthreads=nthreads) for k in range(nmoment)]
    model_cube = np.zeros((nwin, npixel, npixel))
    restored_cube = residual_cube.copy()
    for w in range(nwin):
        for k in range(nmoment):
            model_cube[w] += taylor[w] ** k * model[k]
            restored_cube[w] += taylor[w] ** k * restored_taylor[k]
    _trim_memory()
    return {
        "residual_taylor": residual_taylor,
        "residual_cube": residual_cube,
        "model_cube": model_cube,
        "restored": restored_taylor[0] + residual_taylor[0],
        "restored_cube": restored_cube,
        "psf": psf[0][0],
    }


def _trim_memory() -> None:
    """Give freed heap memory back to the system (glibc keeps it otherwise)."""
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


# --- where the work runs -------------------------------------------------------------------------


class InProcess:
    """Runs every task immediately in this process; handles are the values."""

    ngroups = 1
    host_threads = None

    def per_group(self, fn: Callable, name: str, *per_group: list, shared: tuple = ()) -> list:
        return [fn(*items, *shared) for items in zip(*per_group, strict=True)]

    def one(self, fn: Callable, name: str, *args: Any) -> Any:
        return fn(*args)

    def gather(self, handles: Any) -> Any:
        return handles

    def wait(self, handles: Any) -> None:
        pass

    def cleanup(self, run_id: str) -> None:
        remove_scratch(run_id)


class OnDask:
    """Runs tasks on a Dask cluster; group ``g``'s tasks are pinned to worker ``g``.

    The restriction is loose (``allow_other_workers``): if a worker dies, Dask recomputes the
    lost group data elsewhere from the tasks that made it.
    """

    def __init__(self, client, ngroups: int):
        self.client = client
        workers = sorted(client.scheduler_info()["workers"])
        if not workers:
            raise RuntimeError("the Dask cluster has no workers")
        self.workers = [workers[g % len(workers)] for g in range(ngroups)]
        self.ngroups = ngroups
        self.token = uuid.uuid4().hex[:8]
        info = client.scheduler_info()["workers"]
        host = info[workers[0]]["host"]
        self.host_threads = sum(w["nthreads"] for w in info.values() if w["host"] == host)
        self.host_workers = sum(1 for w in info.values() if w["host"] == host)

    def threads_per_group(self) -> int:
        """ducc0 threads of a group when there are fewer groups than workers: the host's
        Dask threads (at most its cores) shared by the groups placed on it."""
        cores = self.client.run(os.cpu_count, workers=[self.workers[0]])[self.workers[0]]
        usable = min(self.host_threads, cores or self.host_threads)
        return max(1, usable // min(self.ngroups, self.host_workers))

    def per_group(self, fn: Callable, name: str, *per_group: list, shared: tuple = ()) -> list:
        return [
            self.client.submit(
                fn,
                *items,
                *shared,
                key=f"ical-{name}-{g}-{self.token}",
                workers=[self.workers[g]],
                allow_other_workers=True,
                pure=False,
            )
            for g, items in enumerate(zip(*per_group, strict=True))
        ]

    def one(self, fn: Callable, name: str, *args: Any) -> Any:
        """A task that combines the groups' results: on worker 0 (loosely), like the clean."""
        return self.client.submit(
            fn,
            *args,
            key=f"ical-{name}-{self.token}",
            workers=[self.workers[0]],
            allow_other_workers=True,
            pure=False,
        )

    def gather(self, handles: Any) -> Any:
        return self.client.gather(handles)

    def wait(self, handles: Any) -> None:
        from distributed import wait

        wait(handles)

    def cleanup(self, run_id: str) -> None:
        """Remove the run's scratch files on every worker (best effort)."""
        try:
            self.client.run(remove_scratch, run_id)
        except Exception as exc:  # noqa: BLE001 - a failed cleanup must not hide the result
            LOG.warning("could not remove ICAL scratch files on the workers: %s", exc)


# --- the driver ----------------------------------------------------------------------------------


@dataclass
class _Stage:
    """Accumulates wall time per stage, and when each stage ran (``time.perf_counter``)."""

    timings: dict[str, float] = field(default_factory=dict)
    intervals: list[tuple[str, float, float]] = field(default_factory=list)

    def add(self, name: str, start: float) -> float:
        now = time.perf_counter()
        self.timings[name] = self.timings.get(name, 0.0) + now - start
        self.intervals.append((name, start, now))
        return now


def _windows(ms_paths: Sequence[Path]) -> tuple[list[WindowSpec], list[Any]]:
    """Window specs and metadata of the MeasurementSets; checks they belong together."""
    if not ms_paths:
        raise ValueError("run_ical needs at least one MeasurementSet")
    infos = [read_measurement_set_metadata(p) for p in ms_paths]
    first = infos[0]
    specs, channel = [], 0
    for w, info in enumerate(infos):
        if not np.allclose(info.phase_centre, first.phase_centre, atol=1e-9):
            raise MeasurementSetError(
                info.path,
                f"phase centre {info.phase_centre} differs from {first.phase_centre} of "
                f"{first.path}",
            )
        if info.antenna_names != first.antenna_names:
            raise MeasurementSetError(info.path, f"antennas differ from those of {first.path}")
        specs.append(WindowSpec(str(info.path), w, channel))
        channel += info.nchan
    return specs, infos


def _intervals(times: np.ndarray, params: Parameters) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Solution interval (boundaries, centres) per gain term of the calibration context."""
    spans = {"T": 0.0, "G": params.timeslice_G, "B": None}
    return {t: solution_intervals(times, spans[t]) for t in params.calibration_context}


def _first_iterations(params: Parameters) -> dict[str, int]:
    """The calibration iteration (0 = first major cycle) from which each term is solved."""
    first = {"T": params.first_selfcal_T, "G": params.first_selfcal_G, "B": params.first_selfcal_B}
    return {t: first[t] for t in params.calibration_context}


def _first_terms(params: Parameters) -> list[str]:
    """Gain terms of the first self-calibration cycle (solved against a sky model)."""
    first = _first_iterations(params)
    return [t for t, i in first.items() if i == min(first.values())]


def _solve_now(params: Parameters, iteration: int) -> list[str]:
    """Gain terms solved in calibration iteration ``iteration`` (0 = first major cycle)."""
    if not params.selfcal:
        return []
    return [t for t, i in _first_iterations(params).items() if iteration >= i]


def run_ical(
    ms_paths: Sequence[Path],
    params: Parameters,
    *,
    client=None,
    progress: Progress | None = None,
    sky_model: SkyModel | None = None,
) -> IcalResult:
    """Self-calibrate and image MeasurementSets (one per frequency window); write nothing.

    Parameters
    ----------
    ms_paths : the MeasurementSets, in frequency-window order; each window may hold several
        channels.  All must share the phase centre and the antennas.
    params : imaging, deconvolution and calibration parameters (npixel/cellsize None: advised
        from the data).
    client : a ``distributed.Client``: the windows are spread over its workers (one group per
        ``GROUP_VISIBILITIES`` visibilities, at most one per worker and per window; fewer
        groups than workers use the threads of the host); None runs everything in this process
        with ``params.threads_per_worker`` ducc0 threads.
    progress : receives a step per major cycle (log lines per cycle are always written).
    sky_model : components (apparent fluxes) to calibrate against before the first image: the
        terms due in the first self-calibration cycle are solved against them, so the image
        sits where the catalogue says; None: self-calibration alone, whose images carry the
        common shift of the phase gradient it cannot determine.
    """
    run = _IcalRun(ms_paths, params, client, progress)
    try:
        run.read()
        run.first_cycle(sky_model)
        for cycle in range(1, params.nmajor + 1):
            run.major_cycle(cycle)
            if cycle < params.nmajor and run.settled(cycle):
                LOG.info(
                    "ICAL settled after cycle %d of %d: nothing left above the clean "
                    "threshold and no new gain term due, so further cycles would repeat it",
                    cycle,
                    params.nmajor,
                )
                break
        return run.finish()
    finally:
        run.runner.cleanup(run.run_id)


class _IcalRun:
    """The state of one ICAL run in the client: handles (values or futures) and small arrays."""

    def __init__(
        self, ms_paths: Sequence[Path], params: Parameters, client, progress: Progress | None
    ):
        self.start = time.perf_counter()
        self.run_id = uuid.uuid4().hex[:12]
        self.params = params
        self.stage = _Stage()
        self.specs, self.infos = _windows([Path(p) for p in ms_paths])
        if client is None:
            self.runner: InProcess | OnDask = InProcess()
            self.nthreads: int | None = params.threads_per_worker
            ensure_ducc_threads(params.threads_per_worker)
        else:
            nworkers = len(client.scheduler_info()["workers"])
            nvis = sum(i.nrow * i.nchan for i in self.infos)
            ngroups = max(1, min(nworkers, len(self.specs), -(-nvis // GROUP_VISIBILITIES)))
            self.runner = OnDask(client, ngroups)
            # each worker's own threads (``worker_threads()``), or, with workers to spare,
            # a share of the host's cores
            self.nthreads = None if ngroups >= nworkers else self.runner.threads_per_group()
            LOG.info(
                "ICAL on Dask: %d group(s) of windows on %d worker(s), %s",
                ngroups,
                nworkers,
                "the workers' threads"
                if self.nthreads is None
                else f"{self.nthreads} threads each",
            )
        self.frequencies = np.concatenate([i.frequency for i in self.infos])
        self.reference_frequency = float(self.frequencies.mean())
        self.bar = progress or NoProgress()
        self.bar.begin("ICAL", params.nmajor + 2)
        self.gains: dict[str, np.ndarray] = {}
        self.anchors: dict[str, np.ndarray] = {}  # solutions against the sky model
        self.cycles: list[dict] = []
        self.t0 = time.perf_counter()

    def _lap(self, name: str) -> None:
        self.t0 = self.stage.add(name, self.t0)

    def read(self) -> None:
        """Each group reads its MeasurementSets; image size, intervals, weights are settled."""
        run, params = self.runner, self.params
        parts = [list(p) for p in np.array_split(np.array(self.specs, dtype=object), run.ngroups)]
        raw = run.per_group(load_group, "read", parts, shared=(self.run_id, CHUNK_VISIBILITIES))
        summaries = run.gather(run.per_group(group_summary, "summary", raw))
        if any(s["streamed"] for s in summaries):
            LOG.info(
                "ICAL streams the data in time chunks of <= %d visibilities", CHUNK_VISIBILITIES
            )
        npixel, cellsize = params.npixel, params.cellsize
        if npixel is None or cellsize is None:
            advised = advise_image(
                max(s["uvw_max"] for s in summaries),
                float(self.frequencies.min()),
                float(self.frequencies.max()),
                self.infos[0].antenna_diameter,
            )
            npixel, cellsize = npixel or advised[0], cellsize or advised[1]
            LOG.info("Advised image: %d pixels of %.3g rad", npixel, cellsize)
        self.intervals = _intervals(
            np.unique(np.concatenate([s["times"] for s in summaries])), params
        )
        self.setup = ImagingSetup(
            npixel=npixel,
            cellsize=cellsize,
            epsilon=params.epsilon,
            nmoment=params.nmoment,
            reference_frequency=self.reference_frequency,
            weighting=params.weighting,
            robust=params.robust,
            boundaries={t: b for t, (b, _) in self.intervals.items()},
            nthreads=self.nthreads,
            psf_npixel=min(npixel, fast_even_size(2 * params.psf_support + 8)),
            sparse_pixels=SPARSE_PIXELS_PER_TERM * params.nmoment,
            run_id=self.run_id,
        )
        density = None
        if params.weighting != "natural":
            density = run.one(
                _sum_arrays,
                "density",
                *run.per_group(group_density, "density-part", raw, shared=(npixel, cellsize)),
            )
        self.groups = run.per_group(prepare_group, "prepare", raw, shared=(self.setup, density))
        run.wait(self.groups)
        self.options = {
            # the minor cycle runs alone (the groups wait for its model): on the cluster it may
            # use the threads of all workers on its host
            "nthreads": self.nthreads if self.nthreads is not None else run.host_threads,
            "cellsize": cellsize,
            "clean": {
                "scales": list(params.scales),
                "gain": params.clean_gain,
                "niter": params.niter,
                "threshold": params.threshold,
                "fractional_threshold": params.fractional_threshold,
                "psf_support": params.psf_support,
            },
        }
        self._lap("read")

    def _residual(self, name: str, model_vis: list) -> Any:
        run = self.runner
        parts = run.per_group(
            group_residual, f"{name}-part", self.groups, model_vis, shared=(self.gains, self.setup)
        )
        residual = run.one(sum_images, name, *parts)
        run.wait(residual)
        self._lap("grid")
        return residual

    def _clean(self, cycle: int, residual: Any, solved: list[str], started: float) -> None:
        """Minor cycle on the summed residual; the model and its increment stay where they are."""
        run = self.runner
        result = run.one(clean_cycle, f"clean-{cycle}", residual, self.psf, self.options)
        self.model = run.one(add_model, f"model-{cycle}", self.model, result)
        self.increment = run.one(increment_of, f"increment-{cycle}", result)
        summary = run.gather(run.one(clean_summary, f"summary-{cycle}", result))
        self._lap("clean")
        self._log_cycle({"cycle": cycle, "solved": solved, **summary}, started)

    def _log_cycle(self, entry: dict, started: float) -> None:
        self.cycles.append({**entry, "seconds": time.perf_counter() - started})
        message = _cycle_message(self.cycles[-1])
        LOG.info("ICAL %s", message)
        self.bar.step(message)

    def first_cycle(self, sky_model: SkyModel | None) -> None:
        """Cycle 0: PSF, calibration against ``sky_model`` if given, dirty image, clean."""
        started, run = time.perf_counter(), self.runner
        self.psf = run.one(
            sum_images,
            "psf",
            *run.per_group(group_psf, "psf-part", self.groups, shared=(self.setup,)),
        )
        run.wait(self.psf)
        self._lap("grid")
        solved = self._solve_sky_model(sky_model) if sky_model is not None else []
        self.model = None
        self.model_vis = [None] * run.ngroups
        residual = self._residual("dirty", self.model_vis)
        # fit the clean beam now: an undersampled beam fails before the long part
        self.beam = run.gather(run.one(psf_beam, "beam", self.psf, self.setup.cellsize))
        self._clean(0, residual, solved, started)

    def _solve_sky_model(self, sky_model: SkyModel) -> list[str]:
        """Solve the terms of the first self-calibration cycle against the sky model."""
        terms = _first_terms(self.params)
        sky = calibration_sky(sky_model, self.infos[0].phase_centre)
        if not terms or len(sky.sky) == 0:
            LOG.warning(
                "Calibration model not used: %s",
                "no gain term is due in the first cycle" if not terms else "no component is up",
            )
            return []
        LOG.info(
            "Calibrating %s against the sky model: %d components, %.4g Jy in all",
            "".join(terms),
            len(sky.sky),
            float(sky.sky.flux_at(self.reference_frequency).sum()),
        )
        self._solve(0, terms, sky=sky)
        return terms

    def _predict(self, name: str) -> None:
        """Model visibilities of every group updated with the last minor cycle's increment."""
        run = self.runner
        self.model_vis = run.per_group(
            group_predict, name, self.groups, self.model_vis, shared=(self.increment, self.setup)
        )
        run.wait(self.model_vis)
        self._lap("degrid")

    def _solve(self, cycle: int, terms: list[str], sky: CalibrationSky | None = None) -> None:
        """Solve each term in turn from the groups' summed solve sums (small, in the client).

        Against the model visibilities of the clean model, or those of ``sky`` if given.
        """
        run, nant = self.runner, self.infos[0].nant
        for term in terms:
            if term not in self.gains:
                nint = self.intervals[term][0].size - 1
                nfreq = self.frequencies.size if TERMS[term].per_channel else 1
                self.gains[term] = np.ones((nint, nant, nfreq), dtype=np.complex128)
            if sky is None:
                handles = run.per_group(
                    group_solve_sums,
                    f"sums-{term}-{cycle}",
                    self.groups,
                    self.model_vis,
                    shared=(self.gains, term),
                )
            else:
                handles = run.per_group(
                    group_sky_model_sums,
                    f"sky-sums-{term}",
                    self.groups,
                    shared=(sky, self.gains, term),
                )
            parts = run.gather(handles)
            solved = solve_gains(combine_sums(parts), term=term, initial=self.gains[term])
            if sky is not None:
                self.anchors[term] = solved
            elif self.anchors:  # a sky model fixed the gradient: self-calibration keeps it
                solved = anchor_phase_gradient(
                    solved, self.anchors.get(term, 1.0), self.infos[0].antenna_positions
                )
            self.gains = {**self.gains, term: solved}
        self._lap("solve")

    def major_cycle(self, cycle: int) -> None:
        """Predict, solve (from first_selfcal_<term> on), correct fresh data, residual, clean."""
        started = time.perf_counter()
        self._predict(f"predict-{cycle}")
        terms = _solve_now(self.params, cycle - 1)
        self._solve(cycle, terms)
        residual = self._residual(f"residual-{cycle}", self.model_vis)
        self._clean(cycle, residual, terms, started)

    def settled(self, cycle: int) -> bool:
        """True if major cycle ``cycle + 1`` would reproduce cycle ``cycle`` exactly.

        It would when the minor cycle added nothing (the model is the one this cycle solved
        against) and the next cycle solves the same terms: the same solve from the converged
        gains, the same residual, the same (empty) clean.
        """
        last = self.cycles[-1]
        return last["components"] == 0 and _solve_now(self.params, cycle) == list(last["solved"])

    def finish(self) -> IcalResult:
        """Final residual per window (and the Taylor residual from it), cubes, restore."""
        started, run, threads = time.perf_counter(), self.runner, self.params.threads_per_worker
        self._predict("predict-final")
        windows = run.per_group(
            group_window_residuals,
            "window-residuals",
            self.groups,
            self.model_vis,
            shared=(self.gains, self.setup),
        )
        run.wait(windows)
        self._lap("grid")
        taylor = None
        if any(i.nchan > 1 for i in self.infos):  # exact Taylor residual: per-channel factors
            taylor = self._residual("residual-final", self.model_vis)
        # the products are wanted here anyway: finish them in this process
        model, psf, taylor = run.gather([self.model, self.psf, taylor])
        self.model_vis = self.groups = None  # release the data on the workers
        parts = (run.gather(w) for w in windows)  # one group's window images at a time
        final = final_images(
            model, psf, self.beam, parts, len(self.specs), {**self.options, "nthreads": threads}
        )
        del windows
        if taylor is not None:
            final["residual_taylor"] = taylor[0]
            final["restored"] = (
                restore(model[0], self.beam, self.setup.cellsize, nthreads=threads) + taylor[0][0]
            )
        self._lap("restore")
        residual = final["residual_taylor"][0]
        self._log_cycle(
            {
                "cycle": "final",
                "solved": [],
                "peak": float(np.abs(residual).max()),
                "rms": float(np.sqrt(np.mean(residual**2))),
                "components": 0,
            },
            started,
        )
        self.stage.timings["total"] = time.perf_counter() - self.start
        self.bar.end()
        return self._result(model, final)

    def _result(self, model: np.ndarray, final: dict[str, Any]) -> IcalResult:
        solutions = {
            term: GainSolution(
                gains=g,
                times=self.intervals[term][1],
                frequencies=self.frequencies.copy()
                if TERMS[term].per_channel
                else np.array([self.reference_frequency]),
            )
            for term, g in self.gains.items()
        }
        first = self.infos[0]
        return IcalResult(
            model_taylor=model,
            residual_taylor=final["residual_taylor"],
            restored=final["restored"],
            model_cube=final["model_cube"],
            residual_cube=final["residual_cube"],
            restored_cube=final["restored_cube"],
            psf=final["psf"],
            clean_beam=self.beam,
            frequencies=np.array([float(i.frequency.mean()) for i in self.infos]),
            bandwidths=np.array([float(i.channel_width.sum()) for i in self.infos]),
            reference_frequency=self.reference_frequency,
            cellsize=float(self.setup.cellsize),
            npixel=int(self.setup.npixel),
            phase_centre=(float(first.phase_centre[0]), float(first.phase_centre[1])),
            solutions=solutions,
            antenna_names=list(first.antenna_names),
            antenna_positions=np.asarray(first.antenna_positions),
            cycles=self.cycles,
            timings=self.stage.timings,
            stage_intervals=self.stage.intervals,
        )


def _sum_arrays(*arrays: np.ndarray) -> np.ndarray:
    return sum(arrays[1:], arrays[0].copy())


def _cycle_message(c: dict) -> str:
    return (
        f"cycle {c['cycle']}: peak {c['peak']:.4g} Jy/beam, rms {c['rms']:.3g}, "
        f"{c['components']} components, solved {''.join(c['solved']) or '-'}, "
        f"{c['seconds']:.2f} s"
    )
