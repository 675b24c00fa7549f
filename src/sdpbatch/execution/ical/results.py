"""What ICAL produces: images, gain solutions and a record per cycle (nothing is written here:
see :mod:`sdpbatch.execution.pipeline`)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np

from sdpbatch.science.beam import CleanBeam


@dataclass
class GainSolution:
    """Solved gains of one term, ``DATA ~= g_p conj(g_q) MODEL`` (p = antenna1).

    gains : (ntime_sol, nant, nfreq_sol) complex; times : (ntime_sol,) MJD s, interval centres;
    frequencies : (nfreq_sol,) Hz (the reference frequency for frequency-independent terms);
    boundaries : (ntime_sol + 1,) MJD s, the intervals' edges (the outer ones infinite);
    per_channel : one solution per channel of the run (else one for all).
    """

    gains: np.ndarray
    times: np.ndarray
    frequencies: np.ndarray
    boundaries: np.ndarray = field(default_factory=lambda: np.array([-np.inf, np.inf]))
    per_channel: bool = False


@dataclass
class DirectionGains:
    """The solved D term: a phase per station, interval and direction,
    ``DATA ~= G sum_d g_dp conj(g_dq) MODEL_d`` (G the direction-independent terms).

    gains : (ndir, ntime_sol, nant, 1) complex; flags : their shape, not to be trusted;
    times : (ntime_sol,) MJD s, interval centres; centres : (ndir, 2) (l, m) of the
    directions; radec : (ndir, 2) their (ra, dec) rad; frequency : Hz, the reference
    frequency; stats : per direction, its statistics (centre, rms phase, median SNR, flagged).
    """

    gains: np.ndarray
    flags: np.ndarray
    times: np.ndarray
    centres: np.ndarray
    radec: np.ndarray
    frequency: float
    stats: list[dict] = field(default_factory=list)

    @property
    def names(self) -> list[str]:
        """The directions' names in the H5parm (``Dir00``, ...)."""
        return [f"Dir{d:02d}" for d in range(len(self.centres))]


@dataclass(frozen=True)
class CycleRecord:
    """One minor cycle: cycle 0 after the first image, then one per major cycle.

    solved : gain terms solved just before it; peak, peak_end : the residual's peak
    (Jy/beam) before and after; rms : the residual's rms after; components : clean components
    found; stop_reason : why the minor cycle stopped; seconds : wall time of the cycle;
    dynamic_range : the restored image's peak over the residual's robust rms after it;
    solutions : the statistics of each term solved (flagged fraction, amplitude spread, ...).
    """

    cycle: int
    solved: tuple[str, ...]
    peak: float
    peak_end: float
    rms: float
    components: int
    stop_reason: str
    seconds: float
    dynamic_range: float = 0.0
    solutions: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {**asdict(self), "solved": list(self.solved)}

    def message(self) -> str:
        return (
            f"cycle {self.cycle}: peak {self.peak:.4g} Jy/beam, rms {self.rms:.3g}, "
            f"{self.components} components, solved {''.join(self.solved) or '-'}, "
            f"dynamic range {self.dynamic_range:.0f}, {self.seconds:.2f} s"
        )


@dataclass(frozen=True)
class FinalRecord:
    """The final residual (after the last model update): its peak and rms (Jy/beam)."""

    peak: float
    rms: float
    seconds: float

    def to_dict(self) -> dict:
        return asdict(self)

    def message(self) -> str:
        return f"final: peak {self.peak:.4g} Jy/beam, rms {self.rms:.3g}, {self.seconds:.2f} s"


@dataclass
class IcalResult:
    """Everything ICAL produces.

    Images are ``image[ix, iy]`` (l east along ix, m north along iy); models in Jy/pixel,
    residual and restored images in Jy/beam.  Cubes have one plane per channel block
    (``frequencies``: their mean frequencies, ``bandwidths``: their summed channel widths);
    ``channel_frequencies`` lists every channel imaged.
    """

    model_taylor: np.ndarray  # (nmoment, N, N)
    residual_taylor: np.ndarray  # (nmoment, N, N)
    restored: np.ndarray  # (N, N), at the reference frequency
    model_cube: np.ndarray  # (nblock, N, N)
    residual_cube: np.ndarray  # (nblock, N, N)
    restored_cube: np.ndarray  # (nblock, N, N)
    psf: np.ndarray  # (N, N), peak 1
    clean_beam: CleanBeam
    frequencies: np.ndarray  # (nblock,) Hz
    bandwidths: np.ndarray  # (nblock,) Hz
    reference_frequency: float
    cellsize: float
    npixel: int
    phase_centre: tuple[float, float]
    solutions: dict[str, GainSolution]
    antenna_names: list[str]
    antenna_positions: np.ndarray
    channel_frequencies: np.ndarray = field(default_factory=lambda: np.zeros(0))  # (nchan,) Hz
    block_weights: np.ndarray = field(default_factory=lambda: np.zeros(0))
    """(nblock,) the imaging weight summed over each channel block: the Taylor-0 (MFS) images
    are the blocks' images averaged with these weights."""
    cycles: list[CycleRecord] = field(default_factory=list)
    final: FinalRecord | None = None
    undone: list[dict] = field(default_factory=list)
    """Self-calibration steps undone because they made the image worse (term, cycle, the
    residual's robust rms with and without it)."""
    timings: dict[str, float] = field(default_factory=dict)
    stage_intervals: list[tuple[str, float, float]] = field(default_factory=list)
    resumed_from: list[int] = field(default_factory=list)
    """The cycles after which the run was taken up from a checkpoint, in order."""
    directions: DirectionGains | None = None
    """The D term when it was solved (calibration per direction)."""
    """(stage, start, end) on the ``time.perf_counter`` clock: for benchmarks' memory per stage."""

    IMAGES = ("model_taylor", "residual_taylor", "restored", "model_cube", "residual_cube")
    IMAGES += ("restored_cube", "psf")

    def differences(self, other: IcalResult, *, image_rtol: float, gain_atol: float) -> list[str]:
        """What differs from ``other`` beyond the tolerances: images by more than
        ``image_rtol`` of this restored image's peak, gains by more than ``gain_atol``."""
        scale = float(np.abs(self.restored).max()) or 1.0
        out = []
        for name in self.IMAGES:
            a, b = getattr(self, name), getattr(other, name)
            if a.shape != b.shape:
                out.append(f"{name}: shape {a.shape} vs {b.shape}")
            elif np.abs(a - b).max() > image_rtol * scale:
                out.append(f"{name}: {np.abs(a - b).max() / scale:.2e} of the peak")
        if sorted(self.solutions) != sorted(other.solutions):
            out.append(f"solved terms {sorted(self.solutions)} vs {sorted(other.solutions)}")
        for term in set(self.solutions) & set(other.solutions):
            a, b = self.solutions[term].gains, other.solutions[term].gains
            if a.shape != b.shape or np.abs(a - b).max() > gain_atol:
                out.append(f"gains {term} differ by more than {gain_atol}")
        return out

    def allclose(self, other: IcalResult, *, image_rtol: float = 1e-6, gain_atol: float = 1e-9):
        """True if images and gains agree within the tolerances (see :meth:`differences`)."""
        return not self.differences(other, image_rtol=image_rtol, gain_atol=gain_atol)
