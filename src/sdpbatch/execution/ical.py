"""The ICAL pipeline: self-calibration and imaging of MeasurementSets, in-process or on Dask.

The story (the seed's ICAL, see the science reference):

1. read: the frequency windows (one MeasurementSet each) are spread over groups, one per Dask
   worker; each group reads its MeasurementSets itself and keeps its visibilities in the worker's
   memory for the whole run (pinned futures).  Only small things (times, weight sums, solve sums,
   gains) and images travel.
2. cycle 0: PSF Taylor images, dirty Taylor images, multi-scale multi-frequency clean.
3. ``nmajor`` major cycles: predict the Taylor model per group -> solve sums per group -> combine
   and solve the gains (StEFCal, small, in the client) -> correct a fresh copy of the data and
   grid the Taylor residual images per group -> add them up -> clean (one task).
4. final residual, per window and multi-frequency; restore with the clean beam fitted to the PSF.

Every group grids all its channels in one ducc0 call, so a gridder pass costs one FFT per group.
With ``client=None`` the same per-group functions run in this process on one group.
"""

from __future__ import annotations

import logging
import sys
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from sdpbatch.execution.cluster import worker_threads
from sdpbatch.io.ms_read import (
    MeasurementSetError,
    read_measurement_set,
    read_measurement_set_metadata,
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
    predict_visibilities,
    weight_density,
)
from sdpbatch.science.solve import (
    TERMS,
    SolveSums,
    baseline_gains,
    combine_sums,
    compress,
    interval_index,
    solution_intervals,
    solve_gains,
)
from sdpbatch.science.visibility import Visibilities

LOG = logging.getLogger(__name__)

TIME_DECIMALS = 3
"""Times are compared after rounding to a millisecond (different files of one observation)."""


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
class Group:
    """The data of one group of windows (the unit of work of one worker)."""

    blocks: list[Block]


# --- per-group work (runs on the workers, or in this process) ------------------------------------


def _same_rows(block: Block, vis: Visibilities) -> bool:
    return (
        block.uvw.shape == vis.uvw.shape
        and np.array_equal(block.time, vis.time)
        and np.array_equal(block.antenna1, vis.antenna1)
        and np.array_equal(block.antenna2, vis.antenna2)
        and np.allclose(block.uvw, vis.uvw, rtol=0, atol=1e-6)
    )


def load_group(windows: Sequence[WindowSpec]) -> Group:
    """Read the MeasurementSets of one group; windows sharing their rows become one block."""
    blocks: list[Block] = []
    for spec in windows:
        vis = read_measurement_set(spec.path)
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
    return Group(blocks)


def group_summary(group: Group) -> dict[str, Any]:
    """Small facts of a group: distinct times (MJD s) and the largest |u|, |v|, |w| (m)."""
    times = np.unique(np.concatenate([np.round(b.time, TIME_DECIMALS) for b in group.blocks]))
    uvw_max = max(float(np.abs(b.uvw).max()) if b.uvw.size else 0.0 for b in group.blocks)
    return {"times": times, "uvw_max": uvw_max}


def group_density(group: Group, npixel: int, cellsize: float) -> np.ndarray:
    """Gridded weight density (npixel, npixel) of a group's unflagged data."""
    return sum(
        weight_density(
            b.uvw, b.frequency, np.where(b.flag, 0.0, b.weight), npixel=npixel, cellsize=cellsize
        )
        for b in group.blocks
    )


def prepare_group(group: Group, setup: ImagingSetup, density: np.ndarray | None) -> Group:
    """A copy of the group ready to image: imaging weights, Taylor factors, solution intervals."""
    real = np.float64 if setup.epsilon <= 1e-5 else np.float32
    blocks = []
    for b in group.blocks:
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
        blocks.append(
            Block(
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
        )
    return Group(blocks)


def group_psf(group: Group, setup: ImagingSetup) -> tuple[np.ndarray, float]:
    """Unnormalised Taylor PSFs (2 nmoment - 1, N, N) of a group, and its weight sum.

    The spectral terms (k >= 1) only serve the minor cycles, which use the central
    ``psf_npixel`` patch: they are gridded on that smaller image (the same pixel values, a
    fraction of the cost) and are zero outside it.  ``psf_taylor[0]`` is the full PSF.
    """
    nterm, n = 2 * setup.nmoment - 1, setup.npixel
    images = np.zeros((nterm, n, n))
    wsum = 0.0
    for b in group.blocks:
        for k in range(nterm):
            size = n if k == 0 else setup.psf_npixel
            image, s = grid_psf(
                b.uvw,
                b.frequency,
                b.imaging_weight,
                npixel=size,
                cellsize=setup.cellsize,
                epsilon=setup.epsilon,
                nthreads=setup.threads,
                channel_factors=None if k == 0 else b.taylor**k,
                flag=b.mask(),
            )
            start = n // 2 - size // 2
            images[k, start : start + size, start : start + size] += image
        wsum += s
    return images, wsum


def group_predict(
    group: Group, model_taylor: np.ndarray | None, setup: ImagingSetup
) -> list[np.ndarray] | None:
    """Model visibilities per block, ``V_c = sum_k t_c^k degrid(model_taylor[k])`` (or None)."""
    if model_taylor is None:
        return None
    out = []
    for b in group.blocks:
        vis = np.zeros(b.vis.shape, dtype=np.complex128)
        for k in range(model_taylor.shape[0]):
            if not model_taylor[k].any():
                continue
            pred = predict_visibilities(
                model_taylor[k],
                b.uvw,
                b.frequency,
                cellsize=setup.cellsize,
                epsilon=setup.epsilon,
                nthreads=setup.threads,
                flag=b.mask(),
            )
            vis += pred if k == 0 else pred * (b.taylor**k)[None, :]
        out.append(vis)
    return out


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


def group_solve_sums(
    group: Group,
    model_vis: list[np.ndarray],
    gains: dict[str, np.ndarray],
    term: str,
) -> SolveSums:
    """Solve sums of ``term`` for a group, the model corrupted by the other current gains."""
    parts = []
    for b, model in zip(group.blocks, model_vis, strict=True):
        others = _gain_product(b, gains, skip=term)
        if others is not None:
            model = model * others
        parts.append(
            compress(
                b.vis,
                model,
                b.weight,
                antenna1=b.antenna1,
                antenna2=b.antenna2,
                interval=b.intervals[term],
                channel=b.channels if TERMS[term].per_channel else None,
                flag=b.flag,
            )
        )
    return combine_sums(parts)


def _residual_vis(block: Block, model: np.ndarray | None, gains: dict[str, np.ndarray]):
    """Corrected data minus model, (nrow, nchan) complex: the fresh data corrected each time."""
    gpq = _gain_product(block, gains)
    vis = block.vis
    if gpq is not None:
        with np.errstate(divide="ignore", invalid="ignore"):
            vis = np.where(gpq != 0, vis / gpq, 0.0)
    return vis if model is None else vis - model


def group_residual(
    group: Group,
    model_vis: list[np.ndarray] | None,
    gains: dict[str, np.ndarray],
    setup: ImagingSetup,
) -> tuple[np.ndarray, float]:
    """Unnormalised Taylor residual images (nmoment, N, N) of a group, and its weight sum."""
    images = np.zeros((setup.nmoment, setup.npixel, setup.npixel))
    wsum = 0.0
    for i, b in enumerate(group.blocks):
        resid = _residual_vis(b, None if model_vis is None else model_vis[i], gains)
        for k in range(setup.nmoment):
            image, s = grid_dirty(
                b.uvw,
                b.frequency,
                resid,
                b.imaging_weight,
                npixel=setup.npixel,
                cellsize=setup.cellsize,
                epsilon=setup.epsilon,
                nthreads=setup.threads,
                channel_factors=None if k == 0 else b.taylor**k,
                flag=b.mask(),
            )
            images[k] += image
        wsum += s
    return images, wsum


def group_window_residuals(
    group: Group,
    model_vis: list[np.ndarray] | None,
    gains: dict[str, np.ndarray],
    setup: ImagingSetup,
) -> dict[int, tuple[np.ndarray, float, float]]:
    """Per window: (unnormalised residual (N, N), weight sum, Taylor factor of the window).

    The Taylor residual images follow from these as ``sum_w t_w^k U_w / sum_w W_w`` when every
    window has one channel, which saves the separate Taylor passes.
    """
    out: dict[int, tuple[np.ndarray, float, float]] = {}
    for i, b in enumerate(group.blocks):
        resid = _residual_vis(b, None if model_vis is None else model_vis[i], gains)
        for w in np.unique(b.windows):
            sel = np.flatnonzero(b.windows == w)
            mask = b.mask()
            image, s = grid_dirty(
                b.uvw,
                b.frequency[sel],
                resid[:, sel],
                b.imaging_weight[:, sel],
                npixel=setup.npixel,
                cellsize=setup.cellsize,
                epsilon=setup.epsilon,
                nthreads=setup.threads,
                flag=None if mask is None else mask[:, sel],
            )
            out[int(w)] = (image, s, float(b.taylor[sel].mean()))
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


def clean_cycle(
    residual: tuple[np.ndarray, float], psf: tuple[np.ndarray, float], options: dict[str, Any]
) -> CleanResult:
    """One minor cycle (multi-scale multi-frequency clean) on the summed residual."""
    return msmfs_clean(residual[0], psf[0], nthreads=worker_threads_or(options), **options["clean"])


def worker_threads_or(options: dict[str, Any]) -> int:
    return options["nthreads"] if options["nthreads"] is not None else worker_threads()


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
    windows: Sequence[dict[int, tuple[np.ndarray, float, float]]],
    nwin: int,
    options: dict[str, Any],
) -> dict[str, Any]:
    """Final residual, cubes and restored images from the per-window residuals."""
    nthreads = worker_threads_or(options)
    merged: dict[int, tuple[np.ndarray, float, float]] = {}
    for part in windows:
        for w, (image, s, t) in part.items():
            if w in merged:
                merged[w] = (merged[w][0] + image, merged[w][1] + s, t)
            else:
                merged[w] = (image.copy(), s, t)
    total = sum(v[1] for v in merged.values())
    nmoment, npixel = model.shape[0], model.shape[1]
    residual_taylor = np.zeros((nmoment, npixel, npixel))
    residual_cube = np.zeros((nwin, npixel, npixel))
    model_cube = np.zeros((nwin, npixel, npixel))
    for w, (image, s, t) in merged.items():
        for k in range(nmoment):
            residual_taylor[k] += t**k * image
        residual_cube[w] = image / s if s > 0 else 0.0
        model_cube[w] = sum(t**k * model[k] for k in range(nmoment))
    residual_taylor /= total
    cellsize = options["cellsize"]
    beam = fit_clean_beam(psf[0][0], cellsize)
    restored = restore(model[0], beam, cellsize, nthreads=nthreads) + residual_taylor[0]
    restored_cube = np.stack(
        [
            restore(model_cube[w], beam, cellsize, nthreads=nthreads) + residual_cube[w]
            for w in range(nwin)
        ]
    )
    return {
        "residual_taylor": residual_taylor,
        "residual_cube": residual_cube,
        "model_cube": model_cube,
        "restored": restored,
        "restored_cube": restored_cube,
        "beam": beam,
        "psf": psf[0][0],
    }


# --- where the work runs -------------------------------------------------------------------------


class InProcess:
    """Runs every task immediately in this process; handles are the values."""

    ngroups = 1

    def per_group(self, fn: Callable, name: str, *per_group: list, shared: tuple = ()) -> list:
        return [fn(*items, *shared) for items in zip(*per_group, strict=True)]

    def one(self, fn: Callable, name: str, *args: Any) -> Any:
        return fn(*args)

    def gather(self, handles: Any) -> Any:
        return handles

    def wait(self, handles: Any) -> None:
        pass


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
        return self.client.submit(fn, *args, key=f"ical-{name}-{self.token}", pure=False)

    def gather(self, handles: Any) -> Any:
        return self.client.gather(handles)

    def wait(self, handles: Any) -> None:
        from distributed import wait

        wait(handles)


# --- the driver ----------------------------------------------------------------------------------


class _Progress:
    """Per-cycle log lines, and a text bar on stderr when asked."""

    def __init__(self, total: int, enabled: bool):
        self.total, self.enabled, self.done = total, enabled, 0

    def step(self, message: str) -> None:
        self.done += 1
        LOG.info("ICAL %s", message)
        if self.enabled:
            width = 30
            filled = round(width * self.done / self.total)
            sys.stderr.write(
                f"\rICAL [{'#' * filled}{'.' * (width - filled)}] {self.done}/{self.total} "
                f"{message[:60]:<60}"
            )
            if self.done == self.total:
                sys.stderr.write("\n")
            sys.stderr.flush()


@dataclass
class _Stage:
    """Accumulates wall time per stage."""

    timings: dict[str, float] = field(default_factory=dict)

    def add(self, name: str, start: float) -> float:
        now = time.perf_counter()
        self.timings[name] = self.timings.get(name, 0.0) + now - start
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


def _solve_now(params: Parameters, iteration: int) -> list[str]:
    """Gain terms solved in calibration iteration ``iteration`` (0 = first major cycle)."""
    if not params.selfcal:
        return []
    first = {"T": params.first_selfcal_T, "G": params.first_selfcal_G, "B": params.first_selfcal_B}
    return [t for t in params.calibration_context if iteration >= first[t]]


def run_ical(
    ms_paths: Sequence[Path],
    params: Parameters,
    *,
    client=None,
    progress: bool = False,
) -> IcalResult:
    """Self-calibrate and image MeasurementSets (one per frequency window); write nothing.

    Parameters
    ----------
    ms_paths : the MeasurementSets, in frequency-window order; each window may hold several
        channels.  All must share the phase centre and the antennas.
    params : imaging, deconvolution and calibration parameters (npixel/cellsize None: advised
        from the data).
    client : a ``distributed.Client``: the windows are spread over its workers (one group per
        worker, at most one per window); None runs everything in this process with
        ``params.threads_per_worker`` ducc0 threads.
    progress : show a progress bar on stderr (log lines per cycle are always written).
    """
    start = time.perf_counter()
    stage = _Stage()
    specs, infos = _windows([Path(p) for p in ms_paths])
    nwin = len(specs)
    if client is None:
        runner: InProcess | OnDask = InProcess()
        nthreads: int | None = params.threads_per_worker
    else:
        nworkers = len(client.scheduler_info()["workers"])
        runner = OnDask(client, max(1, min(nworkers, nwin)))
        nthreads = None
    groups_specs = [
        list(part) for part in np.array_split(np.array(specs, dtype=object), runner.ngroups)
    ]
    all_freqs = np.concatenate([i.frequency for i in infos])
    reference_frequency = float(all_freqs.mean())
    bar = _Progress(params.nmajor + 2, progress)

    # 1. read: each group reads its own MeasurementSets
    t0 = time.perf_counter()
    raw = runner.per_group(load_group, "read", groups_specs)
    summaries = runner.gather(runner.per_group(group_summary, "summary", raw))
    times = np.unique(np.concatenate([s["times"] for s in summaries]))
    npixel, cellsize = params.npixel, params.cellsize
    if npixel is None or cellsize is None:
        advised = advise_image(
            max(s["uvw_max"] for s in summaries),
            float(all_freqs.min()),
            float(all_freqs.max()),
            infos[0].antenna_diameter,
        )
        npixel = npixel or advised[0]
        cellsize = cellsize or advised[1]
        LOG.info("Advised image: %d pixels of %.3g rad", npixel, cellsize)
    intervals = _intervals(times, params)
    setup = ImagingSetup(
        npixel=npixel,
        cellsize=cellsize,
        epsilon=params.epsilon,
        nmoment=params.nmoment,
        reference_frequency=reference_frequency,
        weighting=params.weighting,
        robust=params.robust,
        boundaries={t: b for t, (b, _) in intervals.items()},
        nthreads=nthreads,
        psf_npixel=min(npixel, fast_even_size(2 * params.psf_support + 8)),
    )
    density = None
    if params.weighting != "natural":
        density = runner.one(
            _sum_arrays,
            "density",
            *runner.per_group(group_density, "density-part", raw, shared=(npixel, cellsize)),
        )
    groups = runner.per_group(prepare_group, "prepare", raw, shared=(setup, density))
    runner.wait(groups)
    del raw, density
    t0 = stage.add("read", t0)

    options = {
        "nthreads": nthreads,
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
    nant = infos[0].nant
    nchan_total = all_freqs.size
    gains: dict[str, np.ndarray] = {}
    cycles: list[dict] = []

    # 2. cycle 0: PSF, dirty image, clean
    cycle_start = time.perf_counter()
    psf = runner.one(
        sum_images, "psf", *runner.per_group(group_psf, "psf-part", groups, shared=(setup,))
    )
    residual = runner.one(
        sum_images,
        "dirty",
        *runner.per_group(group_residual, "dirty-part", groups, shared=(None, gains, setup)),
    )
    runner.wait([psf, residual])
    t0 = stage.add("grid", t0)
    result = runner.one(clean_cycle, "clean-0", residual, psf, options)
    model = runner.one(add_model, "model-0", None, result)
    summary = runner.gather(runner.one(clean_summary, "summary-0", result))
    t0 = stage.add("clean", t0)
    cycles.append(
        {"cycle": 0, "solved": [], **summary, "seconds": time.perf_counter() - cycle_start}
    )
    bar.step(_cycle_message(cycles[-1]))

    # 3. major cycles
    for cycle in range(1, params.nmajor + 1):
        cycle_start = time.perf_counter()
        model_vis = runner.per_group(
            group_predict, f"predict-{cycle}", groups, shared=(model, setup)
        )
        runner.wait(model_vis)
        t0 = stage.add("degrid", t0)
        solved = _solve_now(params, cycle - 1)
        for term in solved:
            if term not in gains:
                nint = intervals[term][0].size - 1
                nfreq = nchan_total if TERMS[term].per_channel else 1
                gains[term] = np.ones((nint, nant, nfreq), dtype=np.complex128)
            parts = runner.gather(
                runner.per_group(
                    group_solve_sums,
                    f"sums-{term}-{cycle}",
                    groups,
                    model_vis,
                    shared=(gains, term),
                )
            )
            gains = {
                **gains,
                term: solve_gains(combine_sums(parts), term=term, initial=gains[term]),
            }
        t0 = stage.add("solve", t0)
        residual = runner.one(
            sum_images,
            f"residual-{cycle}",
            *runner.per_group(
                group_residual, f"residual-part-{cycle}", groups, model_vis, shared=(gains, setup)
            ),
        )
        runner.wait(residual)
        del model_vis
        t0 = stage.add("grid", t0)
        result = runner.one(clean_cycle, f"clean-{cycle}", residual, psf, options)
        model = runner.one(add_model, f"model-{cycle}", model, result)
        summary = runner.gather(runner.one(clean_summary, f"summary-{cycle}", result))
        t0 = stage.add("clean", t0)
        cycles.append(
            {
                "cycle": cycle,
                "solved": solved,
                **summary,
                "seconds": time.perf_counter() - cycle_start,
            }
        )
        bar.step(_cycle_message(cycles[-1]))

    # 4. final residual per window, Taylor residual, restore
    cycle_start = time.perf_counter()
    model_vis = runner.per_group(group_predict, "predict-final", groups, shared=(model, setup))
    runner.wait(model_vis)
    t0 = stage.add("degrid", t0)
    single_channel = all(i.nchan == 1 for i in infos)
    windows = runner.per_group(
        group_window_residuals, "window-residuals", groups, model_vis, shared=(gains, setup)
    )
    runner.wait(windows)
    t0 = stage.add("grid", t0)
    final = runner.one(_final_images_task, "final", model, psf, nwin, options, *windows)
    if not single_channel:  # exact Taylor residual needs per-channel Taylor factors
        taylor = runner.one(
            sum_images,
            "residual-final",
            *runner.per_group(
                group_residual, "residual-final-part", groups, model_vis, shared=(gains, setup)
            ),
        )
        final = runner.one(_replace_taylor, "final-taylor", final, taylor, model, options)
    final, model_taylor = runner.gather([final, model])
    del model_vis, groups
    t0 = stage.add("restore", t0)
    residual_peak = float(np.abs(final["residual_taylor"][0]).max())
    cycles.append(
        {
            "cycle": "final",
            "solved": [],
            "peak": residual_peak,
            "rms": float(np.sqrt(np.mean(final["residual_taylor"][0] ** 2))),
            "components": 0,
            "seconds": time.perf_counter() - cycle_start,
        }
    )
    bar.step(_cycle_message(cycles[-1]))
    stage.timings["total"] = time.perf_counter() - start

    solutions = {
        term: GainSolution(
            gains=g,
            times=intervals[term][1],
            frequencies=all_freqs.copy()
            if TERMS[term].per_channel
            else np.array([reference_frequency]),
        )
        for term, g in gains.items()
    }
    return IcalResult(
        model_taylor=model_taylor,
        residual_taylor=final["residual_taylor"],
        restored=final["restored"],
        model_cube=final["model_cube"],
        residual_cube=final["residual_cube"],
        restored_cube=final["restored_cube"],
        psf=final["psf"],
        clean_beam=final["beam"],
        frequencies=np.array([float(i.frequency.mean()) for i in infos]),
        bandwidths=np.array([float(i.channel_width.sum()) for i in infos]),
        reference_frequency=reference_frequency,
        cellsize=float(cellsize),
        npixel=int(npixel),
        phase_centre=tuple(float(v) for v in infos[0].phase_centre),
        solutions=solutions,
        antenna_names=list(infos[0].antenna_names),
        antenna_positions=np.asarray(infos[0].antenna_positions),
        cycles=cycles,
        timings=stage.timings,
    )


def _sum_arrays(*arrays: np.ndarray) -> np.ndarray:
    return sum(arrays[1:], arrays[0].copy())


def _final_images_task(model, psf, nwin, options, *windows):
    return final_images(model, psf, windows, nwin, options)


def _replace_taylor(final: dict, taylor: tuple[np.ndarray, float], model, options) -> dict:
    """Use the exactly gridded Taylor residual (windows with several channels)."""
    beam = final["beam"]
    out = dict(final)
    out["residual_taylor"] = taylor[0]
    out["restored"] = (
        restore(model[0], beam, options["cellsize"], nthreads=worker_threads_or(options))
        + taylor[0][0]
    )
    return out


def _cycle_message(c: dict) -> str:
    return (
        f"cycle {c['cycle']}: peak {c['peak']:.4g} Jy/beam, rms {c['rms']:.3g}, "
        f"{c['components']} components, solved {''.join(c['solved']) or '-'}, "
        f"{c['seconds']:.2f} s"
    )
