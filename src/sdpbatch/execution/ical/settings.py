"""What one ICAL run is set up with: execution knobs, imaging, clean and the calibration schedule.

:class:`IcalSettings` holds the knobs that bound memory and cost (not science: they never
change a result); :class:`ImagingSetup` the small description of the imaging that every task
receives; :class:`CleanSettings` the minor cycle's; :class:`CalibrationSchedule` which gain
terms are solved when, over which intervals and with which solver options.  All but
:class:`IcalSettings` are built from :class:`Parameters`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from sdpbatch.execution.runner import Runner, workers_on_host
from sdpbatch.parameters import Parameters
from sdpbatch.science.solve import TERMS, GainTerm, SolverOptions, solution_intervals


@dataclass(frozen=True, kw_only=True)
class IcalSettings:
    """Execution knobs of ICAL.  They bound memory and cost and are the same on every layout:
    other values give other ducc0 calls and sums, so results agree only to ``grid_epsilon``.

    chunk_visibilities : most visibilities (rows x channels) of a group held at once (~45
        bytes each with the model and imaging weights, ~180 MB): a larger group is read in
        time chunks of at most this size, each spilled once to scratch files; a smaller one
        (the seed's example) stays in memory.  Every gridder call costs a fixed ~0.27 s at
        1024 pixels (the FFTs of the w-planes): smaller chunks cost more passes' worth of FFTs.
    group_visibilities : one group (the items one task holds) per this many visibilities,
        whatever the workers: the groups fix the order of the sums, so they come from the data
        alone; group g runs on worker ``g % nworkers``.  Data that fit one group are gridded by
        one worker with the threads of its host.
    sparse_pixels_per_term : a model increment with up to this many pixels per Taylor term is
        predicted by direct sum (~10 ms per pixel per million visibilities, against ~0.6 s per
        gridder pass); 0: always by the degridder.
    """

    chunk_visibilities: int = 4_000_000
    group_visibilities: int = 4_000_000
    sparse_pixels_per_term: int = 32

    def __post_init__(self) -> None:
        for name in ("chunk_visibilities", "group_visibilities"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"IcalSettings.{name} must be at least 1")
        if int(self.sparse_pixels_per_term) < 0:
            raise ValueError("IcalSettings.sparse_pixels_per_term must be at least 0")


@dataclass(frozen=True, kw_only=True)
class ImagingSetup:
    """The small, shared description of the imaging of one run (sent to every task).

    npixel, cellsize (rad) : the image; epsilon : accuracy of predicted visibilities;
    grid_npixel, grid_epsilon : pixels over the same field and accuracy of the gridded images
    (fewer pixels with small inversion: they are interpolated to ``npixel``); nmoment : Taylor
    terms about ``reference_frequency`` (Hz); weighting, robust : visibility weighting;
    boundaries : solution interval boundaries (MJD s) per gain term; nthreads : how many of a
    group's gridder calls run side by side (each on one thread); sparse_pixels : model
    increments with at most this many pixels are predicted by direct sum; run_id : names
    this run's scratch directory.
    """

    npixel: int
    cellsize: float
    epsilon: float
    grid_npixel: int
    grid_epsilon: float
    nmoment: int
    reference_frequency: float
    weighting: str
    robust: float
    boundaries: dict[str, np.ndarray]
    nthreads: int
    sparse_pixels: int
    run_id: str

    @property
    def grid_cellsize(self) -> float:
        """Pixel size (rad) of the gridded images."""
        return self.cellsize * self.npixel / self.grid_npixel


@dataclass(frozen=True, kw_only=True)
class CleanSettings:
    """The minor cycle's settings (see :func:`sdpbatch.science.clean.msmfs_clean`)."""

    scales: tuple[int, ...]
    gain: float
    niter: int
    threshold: float
    fractional_threshold: float
    auto_threshold: float | None  # in units of the residual's robust rms
    psf_support: int
    nthreads: int
    tile_size: int = 0  # parallel_deconvolution: sub-images of at most this many px; 0: off

    @classmethod
    def from_parameters(cls, params: Parameters, *, nthreads: int) -> CleanSettings:
        return cls(
            scales=tuple(params.scales),
            gain=params.clean_gain,
            niter=params.niter,
            threshold=params.threshold,
            fractional_threshold=params.fractional_threshold,
            auto_threshold=params.auto_threshold,
            psf_support=params.psf_support,
            nthreads=nthreads,
            tile_size=params.parallel_deconvolution,
        )


@dataclass(frozen=True)
class Threads:
    """Threads of a group's tasks and of the tasks that run alone (PSF, clean): how many
    one-thread calls they run side by side, so the numbers never depend on them."""

    group: int
    alone: int


def resolve_threads(runner: Runner, ngroups: int) -> Threads:
    """Threads for ``ngroups`` groups on ``runner``'s workers.

    Each group uses its worker's threads; with fewer groups than workers, the groups on a host
    share the host's threads (at most its cores), as do the tasks that run alone.  The groups
    are made from the data alone (:func:`sdpbatch.execution.ical.driver`), not the workers.
    """
    alone = runner.host_threads()
    slots = runner.slots
    if ngroups >= len(slots):
        return Threads(group=min(s.nthreads for s in slots), alone=alone)
    sharing = min(ngroups, workers_on_host(slots, slots[0].host))
    return Threads(group=max(1, alone // sharing), alone=alone)


@dataclass(frozen=True)
class CalibrationSchedule:
    """Which gain terms are solved in which calibration iteration, over which intervals, how.

    ``first[term]``: the calibration iteration (0 = first major cycle) from which ``term`` is
    solved; ``spans[term]``: its solution interval in seconds (0: per integration, None: the
    whole observation); ``solver``: how every term's cells are solved and judged.
    """

    first: dict[str, int]
    spans: dict[str, float | None]
    selfcal: bool
    solver: SolverOptions

    @classmethod
    def from_parameters(cls, params: Parameters) -> CalibrationSchedule:
        """The terms of ``calibration_context``, each with the parameters
        :data:`~sdpbatch.science.solve.TERMS` names for it."""
        terms = [TERMS[name] for name in params.calibration_context]
        return cls(
            first={t.name: getattr(params, t.first_parameter) for t in terms},
            spans={t.name: _span(params, t) for t in terms},
            selfcal=params.selfcal,
            solver=SolverOptions.from_parameters(params),
        )

    def terms_at(self, iteration: int) -> list[str]:
        """Gain terms solved in calibration iteration ``iteration`` (0 = first major cycle)."""
        if not self.selfcal:
            return []
        return [t for t, i in self.first.items() if iteration >= i]

    def first_terms(self) -> list[str]:
        """Gain terms of the first self-calibration cycle (solved against a sky model)."""
        if not self.first:
            return []
        earliest = min(self.first.values())
        return [t for t, i in self.first.items() if i == earliest]

    def intervals(self, times: np.ndarray) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        """Solution interval (boundaries, centres) per term for the distinct ``times``."""
        return {t: solution_intervals(times, span) for t, span in self.spans.items()}


def _span(params: Parameters, term: GainTerm) -> float | None:
    """A term's solution interval: its parameter's value, or its fixed interval."""
    name = term.interval_parameter
    return term.interval if name is None else getattr(params, name)
