"""ICAL end to end on small simulated MeasurementSets: in-process and on a Dask LocalCluster."""

from __future__ import annotations

import logging
import os
import signal
import tempfile
from pathlib import Path

import numpy as np
import pytest

from sdpbatch.execution.cluster import dask_client
from sdpbatch.execution.ical import IcalResult, IcalSettings, run_ical
from sdpbatch.execution.ical.group import load_group, prepare_group
from sdpbatch.execution.ical.plan import channel_blocks, work_items
from sdpbatch.execution.ical.scratch import load_chunk, remove_scratch
from sdpbatch.execution.ical.settings import ImagingSetup
from sdpbatch.execution.ical.tasks import group_predict, group_residual, with_models
from sdpbatch.execution.runner import InProcess, OnDask, WorkerSlot, describe_slots
from sdpbatch.execution.simulate import simulate
from sdpbatch.io.ms_read import read_measurement_set_times
from sdpbatch.io.ms_set import check_measurement_sets
from sdpbatch.io.truth import read_truth
from sdpbatch.parameters import Parameters
from sdpbatch.science.assess import gain_phase_error, measure_source, sky_to_pixel

SMALL = dict(
    rmax=300.0,
    ntimes=3,
    nfreqwin=3,
    npixel=256,
    cellsize=0.002,  # the seed's 29 deg field, ~2 pixels per resolution element
    n_workers=2,
    threads_per_worker=1,
)


@pytest.fixture(scope="module")
def observation(tmp_path_factory):
    """Three single-channel windows with 1 rad station phase errors, no noise."""
    params = Parameters(**SMALL)
    products = simulate(params, tmp_path_factory.mktemp("vis"))
    return params, products.ms_paths, read_truth(products.truth_dir)


@pytest.fixture(scope="module")
def selfcal(observation):
    params, paths, _ = observation
    return run_ical(paths, params)


def dynamic_range(result: IcalResult) -> float:
    return float(result.restored.max() / result.residual_taylor[0].std())


def test_selfcal_recovers_the_station_phases(observation, selfcal):
    _, _, truth = observation
    solved = selfcal.solutions["T"].gains
    assert solved.shape == (3, len(truth.gains.antenna_names), 1)
    assert np.allclose(np.abs(solved), 1.0)
    true, positions = truth.gains.gains[:, :, 0], truth.gains.antenna_positions
    assert gain_phase_error(solved[:, :, 0], true, positions) < 0.01
    # the comparison can fail: unit gains are ~1 rad off
    assert gain_phase_error(np.ones_like(solved[:, :, 0]), true, positions) > 0.5
    # the solution times are the integrations
    assert np.allclose(selfcal.solutions["T"].times, truth.gains.times, atol=1e-3)


def test_result_shapes_and_conventions(observation, selfcal):
    params, paths, _ = observation
    r = selfcal
    n = params.npixel
    assert r.model_taylor.shape == r.residual_taylor.shape == (params.nmoment, n, n)
    assert r.model_cube.shape == r.residual_cube.shape == r.restored_cube.shape == (3, n, n)
    assert r.psf.shape == (n, n) and r.psf[n // 2, n // 2] == pytest.approx(1.0)
    assert r.psf.max() == pytest.approx(1.0)
    assert np.allclose(r.frequencies, [0.9e8, 1.0e8, 1.1e8])
    assert r.reference_frequency == pytest.approx(1.0e8)
    assert np.allclose(r.bandwidths, 1.0e7)
    assert r.clean_beam.bmaj >= r.clean_beam.bmin > 0
    assert [c.cycle for c in r.cycles] == [0, 1, 2, 3, 4, 5] and r.final is not None
    assert r.cycles[1].solved == ("T",) and r.cycles[0].solved == ()
    assert set(r.timings) >= {"read", "grid", "degrid", "clean", "solve", "total"}
    # the middle window's cube plane is the model at its frequency (t = 0): model_taylor[0]
    assert np.allclose(r.model_cube[1], r.model_taylor[0])
    # the MFS residual is the weighted mean of the window residuals (equal weights here)
    assert np.allclose(r.residual_taylor[0], r.residual_cube.mean(axis=0), atol=1e-9)


def test_bright_sources_are_restored_in_place(observation, selfcal):
    """Fluxes match the true spectra's channel mean (what a 2-term Taylor fit returns at nu0).

    Positions match after removing a common shift: self-calibration cannot determine a linear
    phase gradient across the stations, i.e. a shift of the whole image (here ~0.3 px).
    """
    params, _, truth = observation
    r = selfcal
    flux = truth.sky.flux_at(r.frequencies).mean(axis=1)
    ix, iy = sky_to_pixel(truth.sky.ra, truth.sky.dec, r.phase_centre, r.cellsize, r.npixel)
    inside = (np.abs(ix - r.npixel / 2) < r.npixel / 2 - 8) & (
        np.abs(iy - r.npixel / 2) < r.npixel / 2 - 8
    )
    brightest = [i for i in np.argsort(-flux) if inside[i]][:4]
    assert len(brightest) == 4
    offsets = []
    for i in brightest:
        measured, x, y = measure_source(r.restored, ix[i], iy[i])
        assert measured == pytest.approx(flux[i], rel=0.01)
        offsets.append((x - ix[i], y - iy[i]))
    offsets = np.array(offsets)
    shift = offsets.mean(axis=0)
    assert np.hypot(*shift) < 0.5
    assert np.abs(offsets - shift).max() < 0.05


def _absolute_offsets(result: IcalResult, sky, count: int) -> np.ndarray:
    """(dx, dy) px of the ``count`` brightest true sources inside the restored image."""
    flux = sky.flux_at(result.frequencies).mean(axis=1)
    ix, iy = sky_to_pixel(sky.ra, sky.dec, result.phase_centre, result.cellsize, result.npixel)
    n = result.npixel
    inside = (np.abs(ix - n / 2) < n / 2 - 8) & (np.abs(iy - n / 2) < n / 2 - 8)
    offsets = []
    for i in [i for i in np.argsort(-flux) if inside[i]][:count]:
        _, x, y = measure_source(result.restored, ix[i], iy[i])
        offsets.append((x - ix[i], y - iy[i]))
    return np.array(offsets)


def test_a_sky_model_fixes_the_absolute_positions(observation, selfcal):
    """Calibrating first against a one-source catalogue removes the common shift that
    self-calibration alone leaves, and later self-calibration keeps the gradient it fixed."""
    params, paths, truth = observation
    brightest = truth.sky.select(np.argsort(-truth.sky.flux)[:1])
    anchored = run_ical(paths, params, sky_model=brightest)
    assert anchored.cycles[0].solved == ("T",)  # solved against the catalogue
    free = _absolute_offsets(selfcal, truth.sky, 4)
    fixed = _absolute_offsets(anchored, truth.sky, 4)
    assert np.hypot(*free.mean(axis=0)) > 0.1  # the test would see the shift
    assert np.hypot(*fixed.T).max() < 0.05
    solved = anchored.solutions["T"].gains[:, :, 0]
    true, positions = truth.gains.gains[:, :, 0], truth.gains.antenna_positions
    assert gain_phase_error(solved, true, positions) < 0.01
    # the gradient itself is right: without removing it the phases still match the truth
    assert gain_phase_error(solved, true, positions, remove_gradient=False) < 0.01


def test_major_cycles_stop_once_settled(observation):
    """Once a minor cycle finds nothing above the threshold and no new gain term is due, the
    remaining major cycles would repeat the last one: ICAL stops, with the same result."""
    params, paths, _ = observation
    coarse = params.replace(threshold=2.0, nmajor=5)
    settled = run_ical(paths, coarse)
    done = [c.cycle for c in settled.cycles]
    assert len(done) < 6  # fewer than the 5 major cycles
    last = done[-1]
    assert settled.cycles[-1].components == 0
    full = run_ical(paths, coarse.replace(nmajor=last))
    assert np.abs(full.restored - settled.restored).max() < 1e-9 * np.abs(full.restored).max()
    # a gain term still to start keeps the cycles going until it has been solved
    later = run_ical(paths, coarse.replace(calibration_context="TG", first_selfcal_G=last))
    assert later.cycles[-1].cycle == last + 1 and later.cycles[-1].solved == ("T", "G")


def test_without_selfcal_dynamic_range_is_much_lower(observation, selfcal):
    params, paths, _ = observation
    plain = run_ical(paths, params.replace(selfcal=False))
    assert plain.solutions == {}
    assert dynamic_range(selfcal) > 10 * dynamic_range(plain)


@pytest.mark.parametrize("split", [True, False], ids=["group-per-worker", "one-group"])
def test_cluster_equals_in_process(observation, selfcal, caplog, split):
    """Data split over both workers, or (small data: the default here) one group gridded with
    the threads of the host: the single-process result either way."""
    params, paths, _ = observation
    settings = IcalSettings(group_visibilities=1 if split else 4_000_000)
    with caplog.at_level(logging.INFO), dask_client(2, threads_per_worker=1) as client:
        on_cluster = run_ical(paths, params, runner=OnDask(client), settings=settings)
    # summing the groups in another order moves the converged gains by ~4e-8 (StEFCal stops at
    # a relative change of 1e-6): the same solution, within the solver's tolerance
    assert selfcal.differences(on_cluster, image_rtol=1e-6, gain_atol=1e-6) == []
    threads = 1 if split else min(2, os.cpu_count())
    groups = 3 if split else 1  # one per item when split: the groups do not follow the workers
    # the cluster as started and as ICAL uses it: the same workers, each group's threads
    assert "Started Dask LocalCluster: 2 worker(s) x 1 thread(s), scheduler" in caplog.text
    expected = (
        f"3 work item(s) in {groups} group(s) on 2 worker(s) x 1 thread(s); "
        f"a group computes with {threads} thread(s)"
    )
    assert expected in caplog.text
    assert "ICAL cycle 5" in caplog.text


def test_where_tasks_run_is_described_from_the_workers():
    """The one description of a runner's workers that the cluster's and ICAL's lines use."""
    assert describe_slots(InProcess(2).slots) == "this process x 2 thread(s)"
    mixed = [WorkerSlot("tcp://a", "h", 1), WorkerSlot("tcp://b", "h", 2)]
    assert describe_slots(mixed) == "2 worker(s) x 1 to 2 thread(s)"


def test_progress_reaches_its_end_when_ical_settles_early(observation):
    """The progress receives a step per cycle and ends (100 %) even when fewer ran."""

    class Recorder:
        def __init__(self):
            self.events = []

        def begin(self, label, total):
            self.events.append(("begin", label, total))

        def step(self, message):
            self.events.append(("step", message))

        def end(self):
            self.events.append(("end",))

    params, paths, _ = observation
    recorder = Recorder()
    result = run_ical(paths, params.replace(threshold=2.0), progress=recorder)
    assert recorder.events[0] == ("begin", "ICAL", params.nmajor + 2)
    steps = [e for e in recorder.events if e[0] == "step"]
    assert len(steps) == len(result.cycles) + 1 < params.nmajor + 2  # settled early
    assert steps[-1][1].startswith("final") and recorder.events[-1] == ("end",)


def test_amplitude_and_bandpass_terms(tmp_path):
    """T, then G per integration (cycle 3 on) and B per channel (cycle 4 on) recover gains
    with amplitude errors: the product T G B matches the truth up to a phase gradient and the
    amplitude scale of each solution (undetermined by self-calibration)."""
    params = Parameters(
        **SMALL,
        amplitude_error=0.05,
        calibration_context="TGB",
        timeslice_G=1.0,  # shorter than the integration: one G per integration
    )
    products = simulate(params, tmp_path)
    truth = read_truth(products.truth_dir)
    r = run_ical(products.ms_paths, params)
    assert r.cycles[4].solved == ("T", "G") and r.cycles[5].solved == ("T", "G", "B")
    t, g, b = (r.solutions[k].gains for k in "TGB")
    assert t.shape == g.shape == (3, len(truth.gains.antenna_names), 1)
    assert b.shape == (1, len(truth.gains.antenna_names), 3)
    assert np.allclose(r.solutions["B"].frequencies, r.frequencies)
    total = t * g * b  # (3, nant, 3)
    true = truth.gains.gains
    ratio = np.abs(total) / np.abs(true)
    # self-calibration has no flux scale of its own: its amplitudes are normalised to a unit
    # mean over the stations of each solution (interval, channel), so compare the stations'
    # relative amplitudes per integration and channel
    assert np.std(ratio / ratio.mean(axis=1, keepdims=True)) < 0.005
    uncorrected = np.std(1 / np.abs(true))
    assert uncorrected > 0.03  # the test would see uncorrected amplitudes
    for c in range(3):
        err = gain_phase_error(total[:, :, c], true[:, :, c], truth.gains.antenna_positions)
        assert err < 0.01


def test_multichannel_measurement_sets_from_elsewhere(tmp_path):
    """Two MeasurementSets built independently with casacore (3 channels each, XX/XY/YX/YY,
    flags, WEIGHT_SPECTRUM), uniform weighting: phases and sources are recovered."""
    from casacore_ms_builder import MsSpec, build_ms, random_enu

    rng = np.random.default_rng(21)
    enu = random_enu(40, 300.0, seed=5)
    gains = np.exp(1j * rng.normal(0, 1.0, (4, 40)))
    sources = [(10.0, 0.02, -0.03), (5.0, -0.05, 0.04), (3.0, 0.06, 0.05)]
    paths = []
    for w, f0 in enumerate((0.95e8, 1.05e8)):
        spec = MsSpec(
            enu=enu,
            frequencies=f0 + np.array([-1e6, 0.0, 1e6]),
            ntimes=4,
            sources=sources,
            spectral_index=-0.7,
            gains=gains,
        )
        paths.append(tmp_path / f"window{w}.ms")
        build_ms(paths[-1], spec)
    params = Parameters(
        npixel=256, cellsize=0.0015, weighting="uniform", threads_per_worker=2, channel_blocks=2
    )
    r = run_ical(paths, params)
    # two blocks of three channels: the two files
    assert r.model_cube.shape == (2, 256, 256) and np.allclose(r.frequencies, [0.95e8, 1.05e8])
    assert np.allclose(r.bandwidths, 3e5)
    solved = r.solutions["T"].gains[:, :, 0]
    assert gain_phase_error(solved, gains, r.antenna_positions) < 0.01
    assert r.reference_frequency == pytest.approx(1e8)
    offsets = []
    for flux, l, m in sources:
        measured, x, y = measure_source(r.restored, 128 + l / 0.0015, 128 + m / 0.0015)
        # the builder gives each file the flux S at its own centre frequency
        assert measured == pytest.approx(flux, rel=0.02)
        offsets.append((x - 128 - l / 0.0015, y - 128 - m / 0.0015))
    offsets = np.array(offsets)
    assert np.abs(offsets - offsets.mean(axis=0)).max() < 0.1


class _KillOnce(logging.Handler):
    """Kills a process the first time a log record contains ``trigger``."""

    def __init__(self, pid: int, trigger: str):
        super().__init__()
        self.pid, self.trigger, self.done = pid, trigger, False

    def emit(self, record: logging.LogRecord) -> None:
        if not self.done and self.trigger in record.getMessage():
            self.done = True
            os.kill(self.pid, signal.SIGKILL)


def test_worker_killed_mid_run_still_completes(observation, selfcal):
    """A worker dies after cycle 1: Dask recomputes its group's data elsewhere, same result."""
    params, paths, _ = observation
    settings = IcalSettings(group_visibilities=1)  # a group on each worker
    logger = logging.getLogger("sdpbatch.execution.ical")
    with dask_client(2, threads_per_worker=1) as client:
        pids = sorted(client.run(os.getpid).values())
        killer = _KillOnce(pids[0], "ICAL cycle 1")
        logger.addHandler(killer)
        old_level = logger.level
        logger.setLevel(logging.INFO)
        try:
            result = run_ical(paths, params, runner=OnDask(client), settings=settings)
        finally:
            logger.removeHandler(killer)
            logger.setLevel(old_level)
    assert killer.done
    assert selfcal.differences(result, image_rtol=1e-6, gain_atol=1e-6) == []


def _rows_per_integration(path) -> int:
    _, counts = np.unique(read_measurement_set_times(path), return_counts=True)
    return int(counts.max())


def _items(paths, limit: int):
    """Work items of all channels as one block, each of at most ``limit`` visibilities."""
    infos = check_measurement_sets(paths)
    return work_items(infos, channel_blocks(infos, 1), limit)


def test_items_know_the_rows_of_their_times(observation):
    """A planned item's row span of each file holds exactly its time range's rows between
    its ends (a reader scans that span, not the file)."""
    from sdpbatch.io.ms_read import window_rows

    _, paths, _ = observation
    items = _items(paths, _rows_per_integration(paths[0]))  # one integration of one file
    assert len(items) == 3  # the observation's three times
    for item in items:
        assert len(item.rows) == len(item.parts)
        for part, (first, stop) in zip(item.parts, item.rows, strict=True):
            wanted = np.flatnonzero(window_rows(part.path, part.info, time_range=item.time_range))
            assert (first, stop) == (wanted[0], wanted[-1] + 1)


MOMENTS = np.array([[1.0, 0.0]])
"""Taylor moments of one block whose model is predicted (tests of the sparse, exact path)."""


def imaging_setup(run_id: str, nthreads: int = 1, boundaries: dict | None = None) -> ImagingSetup:
    """The imaging setup of the small observation (256 pixels; a "T" term of one interval
    unless ``boundaries`` gives the terms' solution intervals)."""
    return ImagingSetup(
        npixel=256,
        cellsize=0.002,
        epsilon=1e-5,
        grid_npixel=256,
        grid_epsilon=1e-5,
        nmoment=2,
        reference_frequency=1e8,
        weighting="natural",
        robust=0.0,
        boundaries=boundaries or {"T": np.array([-np.inf, np.inf])},
        nthreads=nthreads,
        sparse_pixels=64,
        run_id=run_id,
    )


def test_streamed_time_chunks_give_the_same_result(observation, selfcal, monkeypatch, tmp_path):
    """With chunks of one integration of the three windows, the data are spilled and read back
    chunk by chunk: the same images and gains, in-process and on a cluster (a group on each
    worker), and no scratch files left."""
    params, paths, _ = observation
    limit = 3 * _rows_per_integration(paths[0])
    settings = IcalSettings(chunk_visibilities=limit, group_visibilities=1)
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    streamed = run_ical(paths, params, settings=settings)
    assert list(tmp_path.iterdir()) == []
    with dask_client(2, threads_per_worker=1) as client:
        on_cluster = run_ical(paths, params, runner=OnDask(client), settings=settings)
        left = client.run(
            lambda dask_worker: list(Path(dask_worker.local_directory).glob("sdpbatch-ical-*"))
        )
    assert list(left.values()) == [[], []]
    for result in (streamed, on_cluster):  # gains within the solver's tolerance (see above)
        assert selfcal.differences(result, image_rtol=1e-6, gain_atol=1e-6) == []


def test_a_streamed_pass_holds_one_chunk_at_a_time(observation, monkeypatch, tmp_path):
    """A group larger than a chunk is read in time chunks of at most that size, spilled to
    scratch; a pass over it releases each chunk (and its model visibilities) before it reads
    the next, so a worker's memory does not grow with the number of times."""
    import gc
    import weakref

    _, paths, _ = observation
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    limit = 3 * _rows_per_integration(paths[0])  # one integration of the three windows
    setup = imaging_setup("chunks")
    group = prepare_group(load_group(_items(paths, limit), True, "chunks"), setup, None)
    assert group.summary.spilled and len(group.chunks) == 3  # one integration each
    assert all(chunk.nvis <= limit for chunk in group.chunks)
    model = np.zeros((2, 256, 256))
    model[0, 100, 120] = 1.0
    model_vis = group_predict(group, None, model, MOMENTS, setup)
    alive: list[weakref.ref] = []
    for b, m in with_models(group, model_vis):
        gc.collect()
        assert not [r for r in alive if r() is not None]  # the previous chunk is gone
        alive = [weakref.ref(b.vis), weakref.ref(b.imaging_weight), weakref.ref(m)]
        del b, m
    # in memory, the same group is one chunk and gives the same residual image
    whole = prepare_group(load_group(_items(paths, 10**9), False, "chunks"), setup, None)
    assert len(whole.chunks) == 1 and not list(tmp_path.glob("*/*.npy.tmp"))
    a = group_residual(group, model_vis, None, {}, setup)
    b = group_residual(whole, group_predict(whole, None, model, MOMENTS, setup), None, {}, setup)
    # separate gridder calls per chunk agree with one call to the gridder's accuracy
    assert a.weights[0] == pytest.approx(b.weights[0], rel=1e-12)
    assert np.abs(a.images[0] - b.images[0]).max() < setup.epsilon * np.abs(b.images[0]).max()
    remove_scratch("chunks")
    assert list(tmp_path.iterdir()) == []


def test_a_lost_scratch_chunk_is_read_again(observation, monkeypatch, tmp_path):
    """Scratch files written by a worker that died are gone: the chunk comes from the MSs,
    and model visibilities whose files are gone are predicted again from the model image."""
    _, paths, _ = observation
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    limit = 2 * _rows_per_integration(paths[0])
    raw = load_group(_items(paths, limit), True, "lost")
    assert len(raw.chunks) == 3  # 3 windows of one integration each
    chunk = raw.chunks[1]
    kept = load_chunk(chunk)
    Path(chunk.rows[0]["vis"].path).unlink()
    again = load_chunk(chunk)
    assert len(kept) == len(again) == 1 and kept[0].vis.shape[1] == 3
    for name in ("uvw", "time", "antenna1", "vis", "weight", "flag", "channels", "frequency"):
        assert np.array_equal(getattr(kept[0], name), getattr(again[0], name)), name
    setup = imaging_setup("lost")
    ready = prepare_group(raw, setup, None)
    model = np.zeros((2, 256, 256))
    model[0, 100, 120], model[1, 140, 90] = 2.0, -0.5
    first = group_predict(ready, None, model, MOMENTS, setup)
    second = group_predict(ready, first, model, MOMENTS, setup)  # twice the model
    assert not any(Path(s.path).exists() for chunk in first.parts for s in chunk)  # replaced
    kept = [m for _, m in with_models(ready, second)]
    assert np.abs(kept[0]).max() > 1.0
    Path(second.parts[1][0].path).unlink()
    again = [m for _, m in with_models(ready, second)]
    Path(second.parts[2][0].path).unlink()
    third = group_predict(ready, second, model, MOMENTS, setup)
    for k, a, b in zip(kept, again, with_models(ready, third), strict=True):
        assert np.allclose(a, k, rtol=0, atol=1e-9)
        assert np.allclose(b[1], 1.5 * k, rtol=0, atol=1e-9)
    remove_scratch("lost")
    assert list(tmp_path.iterdir()) == []


def test_a_step_made_again_gets_new_task_keys():
    """A cycle made again (a gain term undone) submits its steps under the same names: Dask
    answers a key it still holds with the first result, so every submission's key is new."""
    from sdpbatch.execution.ical.state import Run

    class Recording:
        def __init__(self):
            self.keys = []

        def submit(self, fn, *args, key, slot=None):
            self.keys.append(key)
            return fn(*args)

    runner = Recording()
    run = Run(runner, None, None, None, [], [], [[], []], None, None)
    for _ in range(2):
        run.one(abs, "clean-3", -1)
        run.per_group(abs, "residual-3", [-1, -2])
        run.tree(max, "residual-3-sum", [1, 2])
    assert len(runner.keys) == 8 == len(set(runner.keys))  # one, two groups, one tree step
    assert all(k.startswith("ical-clean-3-") for k in runner.keys[::4])
