"""ICAL with its minor cycles spread over the workers as sub-images (parallel_deconvolution)."""

from __future__ import annotations

import logging

import numpy as np
import pytest
from distributed import get_task_stream

from sdpbatch.execution.cluster import dask_client
from sdpbatch.execution.ical import driver, run_ical
from sdpbatch.execution.ical.checkpoint import check_fingerprint
from sdpbatch.execution.runner import OnDask
from sdpbatch.execution.simulate import simulate
from sdpbatch.io.checkpoint import read_checkpoint
from sdpbatch.io.ms_set import check_measurement_sets
from sdpbatch.parameters import ParameterError, Parameters

# 8 integrations: the PSF's sidelobes beyond 16 px stay below 2 % (with 3, they do not, and
# the minor cycles must use the whole PSF: no sub-image would be smaller than the image)
PARAMS = dict(
    rmax=300.0,
    ntimes=8,
    nfreqwin=3,
    npixel=256,
    cellsize=0.002,
    n_workers=2,
    threads_per_worker=1,
    psf_support=32,
)
TILES = 64  # 16 tiles of 64 px, sub-images of 170 px


@pytest.fixture(scope="module")
def observation(tmp_path_factory):
    params = Parameters(**PARAMS)
    return params, simulate(params, tmp_path_factory.mktemp("vis")).ms_paths


@pytest.fixture(scope="module")
def untiled(observation):
    params, paths = observation
    return run_ical(paths, params)


def test_tiles_run_on_both_workers_and_give_the_untiled_products(observation, untiled, caplog):
    """On a 2-worker cluster the tiles' cleans run on both workers and the products are the
    one-task minor cycles' in this process: the same components every cycle, the images
    within 1e-4 of their peak (the rounding a cluster run carries against one process,
    docs/architecture.md; measured 4e-9: the tiles keep the whole image's components)."""
    params, paths = observation
    tiled = params.replace(parallel_deconvolution=TILES)
    with caplog.at_level(logging.INFO), dask_client(2, threads_per_worker=1) as client:
        with get_task_stream(client) as stream:
            result = run_ical(paths, tiled, runner=OnDask(client))
        workers = {d["worker"] for d in stream.data if "-tile-" in d["key"]}
    assert len(workers) == 2
    assert "ICAL cycle 0: 6 tile(s) of 170 px sub-images to clean, on 2 worker(s)" in caplog.text
    assert [c.components for c in result.cycles] == [c.components for c in untiled.cycles]
    peak = np.abs(untiled.restored).max()
    assert np.abs(result.restored - untiled.restored).max() < 1e-4 * peak
    model_peak = np.abs(untiled.model_taylor).max()
    assert np.abs(result.model_taylor - untiled.model_taylor).max() < 1e-4 * model_peak
    assert result.cycles[-1].dynamic_range == pytest.approx(
        untiled.cycles[-1].dynamic_range, rel=1e-3
    )


def test_a_tiled_run_resumes_to_the_same_numbers(observation, tmp_path, monkeypatch):
    """Stopped before major cycle 3 and resumed: the uninterrupted tiled run bit for bit (the
    checkpoint's increments are the tiled cycles'); the checkpoint is refused without tiles."""
    params, paths = observation
    tiled = params.replace(parallel_deconvolution=TILES, nmajor=4)
    whole = run_ical(paths, tiled)
    saved, real = tmp_path / "img.checkpoint", driver.major_cycle

    def stopped(*args):
        if args[-1] == 3:
            raise KeyboardInterrupt
        return real(*args)

    monkeypatch.setattr(driver, "major_cycle", stopped)
    with pytest.raises(KeyboardInterrupt):
        run_ical(paths, tiled, checkpoint=saved)
    monkeypatch.undo()
    checkpoint = read_checkpoint(saved)
    resumed = run_ical(paths, tiled, checkpoint=saved, resume=checkpoint)
    assert np.array_equal(resumed.restored, whole.restored)
    assert np.array_equal(resumed.model_taylor, whole.model_taylor)
    assert [c.components for c in resumed.cycles] == [c.components for c in whole.cycles]
    infos = check_measurement_sets(paths, data_column="DATA", field=None, spw=None)
    check_fingerprint(checkpoint, tiled, infos, "here")
    with pytest.raises(ParameterError, match="parallel_deconvolution 64 there, 0 now"):
        check_fingerprint(checkpoint, params.replace(nmajor=4), infos, "here")
