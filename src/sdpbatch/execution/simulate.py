"""The simulation pipeline: SKA1-Low visibilities with station gain errors, one MS per window.

The story: validate the parameters and build everything small in the client (layout, times,
per-station UVW, sky model, gains: :func:`prepare_simulation`); then one task per frequency
window predicts, corrupts and writes its MeasurementSet in blocks of times
(:func:`simulate_window`), so that large arrays never travel; finally the truth is written.

Random numbers (reproducible from ``params.seed``):

- gains: ``default_rng(seed)`` (drawn once, in the client: every window sees the same gains);
- sky model: ``default_rng(SeedSequence(seed, spawn_key=(0,)))``;
- noise of window w: ``default_rng(SeedSequence(seed, spawn_key=(1, w)))``;
- errors of the catalogue written for calibration: ``default_rng(SeedSequence(seed,
  spawn_key=(2,)))``.
"""

from __future__ import annotations

import json
import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from sdpbatch.execution.progress import NoProgress, Progress
from sdpbatch.execution.runner import InProcess, Runner, runner_record
from sdpbatch.execution.station_effects import DirectionGains, direction_gains, power_response
from sdpbatch.io.atomic import remove_partials
from sdpbatch.io.layout_file import load_layout
from sdpbatch.io.ms_write import MeasurementSetLayout, create_measurement_set
from sdpbatch.io.provenance import write_manifest
from sdpbatch.io.skymodel_file import read_sky_model
from sdpbatch.io.truth import write_truth
from sdpbatch.parameters import GLEAM_LIKE, RESULT_NEUTRAL, ParameterError, Parameters
from sdpbatch.science.constants import STATION_DIAMETER
from sdpbatch.science.gains import corrupt, random_gains
from sdpbatch.science.ionosphere import SCREEN_HEIGHT
from sdpbatch.science.layouts import enu_to_itrf, select_stations, site_itrf, smallest_useful_rmax
from sdpbatch.science.noise import add_noise, radiometer_sigma
from sdpbatch.science.observation import (
    baselines,
    frequency_windows,
    integration_time,
    observation_times,
    transit_time,
)
from sdpbatch.science.predict import predict_point_sources_by_station
from sdpbatch.science.skymodel import (
    SkyModel,
    apparent_sky,
    beam_radius,
    catalogue_view,
    expected_source_count,
    gaussian_taper_matrix,
    gleam_like_sources,
    lmn,
)
from sdpbatch.science.uvw import antenna_uvw, baseline_uvw
from sdpbatch.science.visibility import Visibilities
from sdpbatch.vocabulary import (
    PROVENANCE,
    SIMULATION_FILE,
    TRUTH_GAINS_FILE,
    TRUTH_INTRINSIC_FILE,
    TRUTH_IONOSPHERE_FILE,
    TRUTH_SKYMODEL_FILE,
)

LOG = logging.getLogger(__name__)

MS_NAME = "ska_pipeline_simulation_vislist_{}.ms"
MAX_SOURCES = 20_000
"""Largest synthetic population allowed (the direct sum costs rows x sources per window)."""
ROWS_PER_BLOCK = 200_000
"""Rows predicted and written at a time (about 20 MiB of working arrays)."""


def ms_name(window: int) -> str:
    """File name of the MeasurementSet of frequency window ``window``."""
    return MS_NAME.format(window)


@dataclass
class SimulationSetup:
    """Everything small a window task needs (a few MiB at most)."""

    params: Parameters
    phase_centre: tuple[float, float]
    frequencies: np.ndarray  # (nfreqwin,) Hz
    channel_widths: np.ndarray  # (nfreqwin,) Hz
    times: np.ndarray  # (ntimes,) MJD s
    interval: float  # s
    antenna_names: list[str]
    itrf: np.ndarray  # (nant, 3) m
    ant_uvw: np.ndarray  # (ntimes, nant, 3) m, J2000
    antenna1: np.ndarray  # (nbl,)
    antenna2: np.ndarray  # (nbl,)
    sky: SkyModel  # apparent (beam-attenuated) sources
    intrinsic: SkyModel  # the same before the beam
    gains: np.ndarray  # (ntimes, nant) complex
    catalogue: SkyModel  # apparent, as a survey catalogue gives them (flux, position errors)
    direction_gains: DirectionGains | None = None  # EveryBeam beams, ionosphere

    @property
    def nbaselines(self) -> int:
        return int(self.antenna1.size)


@dataclass
class SimulationProducts:
    """What a simulation wrote."""

    ms_paths: list[Path]
    truth_dir: Path
    truth_paths: list[Path]
    nstations: int
    nbaselines: int
    ntimes: int
    nfreqwin: int
    nsources: int
    nvis: int
    seconds: float = 0.0
    extra: dict = field(default_factory=dict)


def _stations(params: Parameters) -> tuple[np.ndarray, list[str]]:
    try:
        enu, names = load_layout(params.layout)
    except (ValueError, FileNotFoundError) as err:
        raise ParameterError("layout", str(err)) from err
    keep = select_stations(enu, params.rmax)
    if keep.size < 2:
        raise ParameterError(
            "rmax",
            f"{params.rmax} m keeps {keep.size} station(s) of the layout; need at least 2: "
            f"use rmax >= {math.ceil(smallest_useful_rmax(enu) * 1000) / 1000} m",
        )
    return enu[keep], [names[i] for i in keep]


def _intrinsic_sky(params: Parameters, phase_centre: tuple[float, float]) -> SkyModel:
    if params.sky_model == GLEAM_LIKE:
        radius = beam_radius(params.freq_max)
        expected = expected_source_count(params.flux_limit, radius)
        if expected > MAX_SOURCES:
            raise ParameterError(
                "flux_limit",
                f"{params.flux_limit} Jy gives ~{expected:.0f} sources in the field, more than "
                f"{MAX_SOURCES}; raise the flux limit",
            )
        rng = np.random.default_rng(np.random.SeedSequence(params.seed, spawn_key=(0,)))
        return gleam_like_sources(
            rng, phase_centre, fov_radius=radius, flux_limit=params.flux_limit
        )
    try:
        return read_sky_model(params.sky_model)
    except ValueError as err:
        raise ParameterError("sky_model", str(err)) from err


def prepare_simulation(params: Parameters) -> SimulationSetup:
    """Validate ``params`` against the layout and sky model and build the small inputs.

    Raises ParameterError (naming the field) before anything is written.
    """
    phase_centre = (math.radians(params.ra), math.radians(params.dec))
    enu, names = _stations(params)
    intrinsic = _intrinsic_sky(params, phase_centre)
    freqs, widths = frequency_windows(params.freq_min, params.freq_max, params.nfreqwin)
    transit = transit_time(*phase_centre, params.obs_date)
    times = observation_times(transit, params.ntimes)
    itrf = enu_to_itrf(enu)
    ant_uvw = antenna_uvw(itrf, times, phase_centre, site_itrf())
    effects = direction_gains(
        params, intrinsic, phase_centre=phase_centre, enu=enu, frequencies=freqs, times=times
    )
    response = power_response(params, effects)
    a1, a2 = baselines(len(names))
    gains = random_gains(
        np.random.default_rng(params.seed),
        params.ntimes,
        len(names),
        phase_error=params.phase_error,
        amplitude_error=params.amplitude_error,
    )
    return SimulationSetup(
        params=params,
        phase_centre=phase_centre,
        frequencies=freqs,
        channel_widths=widths,
        times=times,
        interval=integration_time(params.ntimes),
        antenna_names=names,
        itrf=itrf,
        ant_uvw=ant_uvw,
        antenna1=a1,
        antenna2=a2,
        sky=apparent_sky(intrinsic, phase_centre, freqs, response=response),
        intrinsic=intrinsic,
        gains=gains,
        catalogue=apparent_sky(
            _catalogue(params, intrinsic), phase_centre, freqs, response=response
        ),
        direction_gains=effects,
    )


def _catalogue(params: Parameters, intrinsic: SkyModel) -> SkyModel:
    rng = np.random.default_rng(np.random.SeedSequence(params.seed, spawn_key=(2,)))
    return catalogue_view(
        intrinsic,
        rng,
        flux_error=params.catalogue_flux_error,
        position_error=math.radians(params.catalogue_position_error / 3600.0),
    )


def _window_layout(setup: SimulationSetup, channels: slice) -> MeasurementSetLayout:
    half = 0.5 * setup.interval
    return MeasurementSetLayout(
        frequency=setup.frequencies[channels],
        channel_width=setup.channel_widths[channels],
        phase_centre=setup.phase_centre,
        antenna_positions=setup.itrf,
        antenna_names=setup.antenna_names,
        antenna_diameter=STATION_DIAMETER,
        time_range=(float(setup.times[0] - half), float(setup.times[-1] + half)),
    )


def _noise(setup: SimulationSetup, channels: slice):
    """(sigma per channel or None, a random stream per channel, the weight of a sample).

    Each channel has its own stream, so a channel's noise is the same whichever file it is
    written to (``channels_per_window``)."""
    params = setup.params
    if not params.add_noise:
        return None, [], np.ones(setup.frequencies[channels].size)
    sigma = radiometer_sigma(params.tsys, setup.channel_widths[channels], setup.interval)
    streams = [
        np.random.default_rng(np.random.SeedSequence(params.seed, spawn_key=(1, c)))
        for c in range(channels.start, channels.stop)
    ]
    return sigma, streams, 1.0 / np.asarray(sigma, dtype=np.float64) ** 2


def simulate_window(setup: SimulationSetup, window: int, out_dir: str | Path) -> Path:
    """Predict, corrupt and write the MeasurementSet of one window (``channels_per_window``
    channels); return its path.

    Works through blocks of whole time samples (``ROWS_PER_BLOCK`` rows) to bound memory.
    """
    per = setup.params.channels_per_window
    channels = slice(window * per, (window + 1) * per)
    freq, width = setup.frequencies[channels], setup.channel_widths[channels]
    nbl, ntimes = setup.nbaselines, setup.times.size
    directions = lmn(setup.sky.ra, setup.sky.dec, setup.phase_centre)
    shape = gaussian_taper_matrix(setup.sky, setup.phase_centre)
    flux = setup.sky.flux_at(freq)  # (nsrc, nchan)
    sigma, streams, weights = _noise(setup, channels)
    path = Path(out_dir) / ms_name(window)
    step = max(1, ROWS_PER_BLOCK // nbl)
    with create_measurement_set(path, _window_layout(setup, channels)) as writer:
        for t0 in range(0, ntimes, step):
            t1 = min(ntimes, t0 + step)
            nrow = (t1 - t0) * nbl
            time_index = np.repeat(np.arange(t0, t1), nbl)
            a1 = np.tile(setup.antenna1, t1 - t0)
            a2 = np.tile(setup.antenna2, t1 - t0)
            vis = _predict(
                setup, slice(t0, t1), channels, (time_index, a1, a2), directions, flux, shape
            )
            vis = corrupt(vis, setup.gains, a1, a2, time_index)
            for c, stream in enumerate(streams):
                vis[:, c : c + 1] = add_noise(vis[:, c : c + 1], sigma[c], stream)
            writer.write(
                Visibilities(
                    uvw=baseline_uvw(setup.ant_uvw[t0:t1], setup.antenna1, setup.antenna2),
                    time=setup.times[time_index],
                    antenna1=a1,
                    antenna2=a2,
                    frequency=freq,
                    channel_width=width,
                    vis=vis,
                    weight=np.broadcast_to(weights.astype(np.float32), (nrow, freq.size)).copy(),
                    flag=np.zeros((nrow, freq.size), dtype=bool),
                    phase_centre=setup.phase_centre,
                    antenna_positions=setup.itrf,
                    antenna_names=setup.antenna_names,
                    integration_time=setup.interval,
                    antenna_diameter=STATION_DIAMETER,
                )
            )
    return path


def _predict(setup, times: slice, channels: slice, rows, directions, flux, shape):
    """The block's visibilities, with the direction-dependent gains when there are any.

    rows: (time index, antenna1, antenna2) of the block's rows."""
    freq, (time_index, a1, a2) = setup.frequencies[channels], rows
    if setup.direction_gains is None:
        return predict_point_sources_by_station(
            setup.ant_uvw, time_index, a1, a2, freq, directions, flux, shape=shape
        )
    return predict_point_sources_by_station(
        setup.ant_uvw[times],
        time_index - times.start,
        a1,
        a2,
        freq,
        directions,
        flux,
        shape=shape,
        jones=setup.direction_gains.block(times, channels, setup.frequencies),
    )


def _summary(setup: SimulationSetup, ms_paths: list[Path]) -> dict:
    return {
        "parameters": setup.params.to_dict(),
        "nstations": len(setup.antenna_names),
        "nbaselines": setup.nbaselines,
        "ntimes": int(setup.times.size),
        "nfreqwin": int(setup.frequencies.size),
        "nsources": len(setup.sky),
        "frequencies_hz": setup.frequencies.tolist(),
        "channel_width_hz": setup.channel_widths.tolist(),
        "times_mjd_s": setup.times.tolist(),
        "integration_time_s": setup.interval,
        "phase_centre_rad": list(setup.phase_centre),
        "measurement_sets": [p.name for p in ms_paths],
        "truth": {
            "sky_model": TRUTH_SKYMODEL_FILE,
            "intrinsic_sky_model": TRUTH_INTRINSIC_FILE,
            "gains": TRUTH_GAINS_FILE,
            **({"ionosphere": TRUTH_IONOSPHERE_FILE} if setup.params.ionosphere_rms_phase else {}),
        },
        "conventions": "UVW = uvw(ANTENNA2) - uvw(ANTENNA1) J2000; "
        "DATA = sum S exp(+2 pi i nu/c (u l + v m + w (n-1))); DATA_pq = g_p conj(g_q) TRUE_pq",
    }


def _write_windows(
    setup: SimulationSetup, out_dir: Path, runner: Runner, bar: Progress, nwindows: int
) -> list[Path]:
    """One task per window on ``runner``; the MeasurementSets' paths in window order."""
    bar.begin("simulate", nwindows)
    shared = runner.scatter(setup)
    handles = [
        runner.submit(simulate_window, shared, w, str(out_dir), key=f"simulate-window-{w}")
        for w in range(nwindows)
    ]
    for path in runner.as_completed(handles):
        LOG.info("Wrote %s", path)
        bar.step(f"wrote {Path(path).name}")
    bar.end()
    return [Path(p) for p in runner.gather(handles)]


def _write_truth(setup: SimulationSetup, out_dir: Path, ms_paths: list[Path]) -> list[Path]:
    params, effects = setup.params, setup.direction_gains
    return write_truth(
        out_dir,
        apparent_sky=setup.sky,
        intrinsic_sky=setup.intrinsic,
        catalogue=setup.catalogue,
        gains=setup.gains,
        times=setup.times,
        antenna_names=setup.antenna_names,
        antenna_positions=setup.itrf,
        frequencies=setup.frequencies,
        phase_centre=setup.phase_centre,
        summary=_summary(setup, ms_paths),
        ionosphere=None if effects is None else effects.ionosphere,
        ionosphere_attributes={
            "height_m": SCREEN_HEIGHT,
            "rms_phase_rad_100MHz": params.ionosphere_rms_phase,
            "diffractive_scale_m": params.ionosphere_scale_km * 1e3,
            "speed_east_m_s": params.ionosphere_speed * 1e3,
        },
    )


def simulate(
    params: Parameters,
    out_dir: Path,
    *,
    runner: Runner | None = None,
    progress: Progress | None = None,
    setup: SimulationSetup | None = None,
) -> SimulationProducts:
    """Run the simulation: MeasurementSets ``ska_pipeline_simulation_vislist_<i>.ms`` and the
    truth (:mod:`sdpbatch.io.truth`) in ``out_dir``.

    ``runner``: where the one task per window runs (default: this process, one window after
    the other).  ``setup``: :func:`prepare_simulation`'s of ``params`` when the caller has it.
    """
    start = time.perf_counter()
    if setup is None or setup.params != params:
        setup = prepare_simulation(params)  # raises ParameterError before anything is written
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    remove_partials(out_dir)
    (out_dir / PROVENANCE).unlink(missing_ok=True)  # it would describe a mix of old and new
    windows = range(params.nfreqwin // params.channels_per_window)
    LOG.info(
        "Simulating %d windows of %d channel(s) x %d times x %d baselines (%d stations, "
        "%d sources)",
        len(windows),
        params.channels_per_window,
        params.ntimes,
        setup.nbaselines,
        len(setup.antenna_names),
        len(setup.sky),
    )
    ms_paths = _write_windows(
        setup, out_dir, runner or InProcess(), progress or NoProgress(), len(windows)
    )
    truth_paths = _write_truth(setup, out_dir, ms_paths)
    seconds = time.perf_counter() - start
    write_manifest(
        out_dir,
        files=[*ms_paths, *truth_paths],
        record={
            "parameters": params.to_dict(),
            "engine": runner_record(runner or InProcess()),
            "stages": {"simulate": seconds},
        },
    )
    return SimulationProducts(
        ms_paths=ms_paths,
        truth_dir=out_dir,
        truth_paths=truth_paths,
        nstations=len(setup.antenna_names),
        nbaselines=setup.nbaselines,
        ntimes=params.ntimes,
        nfreqwin=params.nfreqwin,
        nsources=len(setup.sky),
        nvis=setup.nbaselines * params.ntimes * params.nfreqwin,
        seconds=seconds,
    )


def reusable_simulation(params: Parameters, out_dir: Path) -> SimulationProducts | None:
    """The simulation already complete in ``out_dir`` for these parameters (its
    ``provenance.json`` verifies and names the same parameters, but for those that change no
    visibility), else None and why in the log."""
    from sdpbatch.io.provenance import ProvenanceError, read_manifest, verify

    try:
        manifest, found = read_manifest(out_dir), verify(out_dir)
    except ProvenanceError as err:
        LOG.info("Simulating again: %s", err)
        return None
    if not found.ok:
        LOG.info("Simulating again: %s is not as written", ", ".join(found.missing + found.changed))
        return None
    now, then = params.to_dict(), manifest.get("parameters", {})
    changed = sorted(k for k in now if k not in RESULT_NEUTRAL and now[k] != then.get(k))
    if changed:
        LOG.info("Simulating again: made with other %s", ", ".join(changed))
        return None
    summary = json.loads((out_dir / SIMULATION_FILE).read_text())
    ms_paths = [out_dir / name for name in summary["measurement_sets"]]
    return SimulationProducts(
        ms_paths=ms_paths,
        truth_dir=out_dir,
        truth_paths=[out_dir / n for n in manifest["files"] if out_dir / n not in ms_paths],
        nstations=summary["nstations"],
        nbaselines=summary["nbaselines"],
        ntimes=summary["ntimes"],
        nfreqwin=summary["nfreqwin"],
        nsources=summary["nsources"],
        nvis=summary["nbaselines"] * summary["ntimes"] * summary["nfreqwin"],
    )
