"""Channel blocks: every visibility gridded and degridded once per major cycle, Taylor images
formed from the blocks, exact with a block per channel and close with fewer."""

from __future__ import annotations

from types import SimpleNamespace

import ducc0
import numpy as np
import pytest

from sdpbatch.execution.ical import IcalSettings, run_ical
from sdpbatch.execution.ical.plan import (
    WorkItem,
    assign,
    fractional_bandwidth,
    resolve_channel_blocks,
)
from sdpbatch.execution.simulate import simulate
from sdpbatch.io.ms_read import read_measurement_set
from sdpbatch.io.truth import read_truth
from sdpbatch.parameters import Parameters
from sdpbatch.science.assess import brightest_sources, gain_phase_error

SMALL = dict(
    rmax=300.0,
    ntimes=3,
    nfreqwin=6,
    npixel=256,
    cellsize=0.002,
    n_workers=1,
    threads_per_worker=2,
)


@pytest.fixture(scope="module")
def one_file(tmp_path_factory):
    """Six channels with 1 rad phase errors and noise, written as one MeasurementSet."""
    params = Parameters(**SMALL, channels_per_window=6, add_noise=True)
    products = simulate(params, tmp_path_factory.mktemp("one"))
    return params, products.ms_paths, read_truth(products.truth_dir)


@pytest.fixture(scope="module")
def six_files(tmp_path_factory):
    """The same observation written as six MeasurementSets of one channel."""
    params = Parameters(**SMALL, channels_per_window=1, add_noise=True)
    return simulate(params, tmp_path_factory.mktemp("six")).ms_paths


def test_channels_per_window_writes_the_same_data(one_file, six_files):
    """One file of six channels and six files of one hold the same visibilities, noise too."""
    _, (path,), _ = one_file
    assert len(six_files) == 6
    whole = read_measurement_set(path)
    assert whole.nchan == 6
    for c, single in enumerate(six_files):
        part = read_measurement_set(single)
        assert part.nchan == 1 and part.frequency[0] == whole.frequency[c]
        assert np.array_equal(part.vis[:, 0], whole.vis[:, c])
        assert np.array_equal(part.weight[:, 0], whole.weight[:, c])


def test_a_block_per_channel_is_the_same_whatever_the_files(one_file, six_files):
    """With a block per channel the Taylor images are exact: one MeasurementSet of six
    channels and six of one give the same images and gains."""
    params, (path,), _ = one_file
    exact = params.replace(channel_blocks=6)
    a = run_ical([path], exact)
    b = run_ical(six_files, exact)
    assert a.differences(b, image_rtol=1e-6, gain_atol=1e-6) == []


def _science(result, truth) -> dict:
    """Flux and position of the brightest sources, the gain phase error and dynamic range."""
    sky = truth.sky
    flux = sky.flux_at(result.channel_frequencies).mean(axis=1)
    sources = brightest_sources(
        result.restored,
        ra=sky.ra,
        dec=sky.dec,
        flux=flux,
        phase_centre=result.phase_centre,
        cellsize=result.cellsize,
        count=4,
    )
    solved = result.solutions["T"].gains[:, :, 0]
    true = truth.gains.gains[:, :, 0]
    return {
        "flux": np.array([s["flux_ratio"] for s in sources]),
        "offset": np.array([s["offset_xy_pixels"] for s in sources]),
        "phase": gain_phase_error(solved, true, truth.gains.antenna_positions),
        "dr": float(result.restored.max() / result.residual_taylor[0].std()),
    }


def test_fewer_blocks_approximate_the_exact_computation(one_file):
    """Two blocks of three channels against a block per channel on the same six channels:
    the sources' flux within 0.5 % and positions within 0.1 px of the exact run's, the
    phases within 0.01 rad of the truth, the dynamic range within 25 %; the Taylor-0
    residual and restored images within 1 % of the peak."""
    params, paths, truth = one_file
    exact = run_ical(paths, params.replace(channel_blocks=6))
    blocks = run_ical(paths, params.replace(channel_blocks=2))
    assert blocks.model_cube.shape[0] == 2 and exact.model_cube.shape[0] == 6
    e, b = _science(exact, truth), _science(blocks, truth)
    assert np.abs(b["flux"] / e["flux"] - 1).max() < 0.005
    assert np.abs(b["offset"] - e["offset"]).max() < 0.1
    assert b["phase"] < 0.01 and e["phase"] < 0.01
    assert b["dr"] > 0.75 * e["dr"]
    peak = np.abs(exact.restored).max()
    assert np.abs(blocks.restored - exact.restored).max() < 0.01 * peak
    assert np.abs(blocks.residual_taylor[0] - exact.residual_taylor[0]).max() < 0.01 * peak


class _Counter:
    """Counts ducc0 gridder and degridder calls and the visibilities they touch."""

    def __init__(self, monkeypatch):
        self.grid, self.degrid = [], []
        experimental = ducc0.wgridder.experimental
        vis2dirty, dirty2vis = experimental.vis2dirty, experimental.dirty2vis

        def counted_grid(**kwargs):
            self.grid.append(kwargs["vis"].size)
            return vis2dirty(**kwargs)

        def counted_degrid(**kwargs):
            self.degrid.append(kwargs["uvw"].shape[0] * kwargs["freq"].size)
            return dirty2vis(**kwargs)

        monkeypatch.setattr(experimental, "vis2dirty", counted_grid)
        monkeypatch.setattr(experimental, "dirty2vis", counted_degrid)


@pytest.mark.parametrize("blocks", [1, 2, 6])
def test_one_gridding_and_one_degridding_pass_per_major_cycle(one_file, monkeypatch, blocks):
    """Whatever nmoment: every visibility is gridded once per pass (PSF, dirty image, each
    major cycle, the final residual) and degridded once per model update, one call per
    channel block (one FFT each)."""
    params, paths, _ = one_file
    nvis = read_measurement_set(paths[0]).vis.size
    counter = _Counter(monkeypatch)
    settings = IcalSettings(sparse_pixels_per_term=0)  # every model update by the degridder
    result = run_ical(paths, params.replace(channel_blocks=blocks, nmoment=2), settings=settings)
    majors = len(result.cycles) - 1
    grid_passes = 1 + 1 + majors + 1  # PSF, dirty, each major cycle, final residual
    updates = sum(1 for c in result.cycles if c.components > 0)  # increments predicted
    assert len(counter.grid) == grid_passes * blocks
    assert sum(counter.grid) == grid_passes * nvis
    assert len(counter.degrid) == updates * blocks
    assert sum(counter.degrid) == updates * nvis


def test_groups_hold_consecutive_times_with_all_their_blocks():
    """Items cut into groups of consecutive times, each channel block of a time range in the
    same group when the cut allows, balanced by visibilities, none empty."""
    items = [
        WorkItem(block, (), (float(t), t + 1.0), 100 if t < 2 else 50)
        for block in range(4)
        for t in range(4)
    ]
    for ngroups in (1, 2, 3, 4, 7, 16):
        groups = assign(items, ngroups)
        assert len(groups) == ngroups and all(groups)
        assert sorted(i for g in groups for i in map(items.index, g)) == list(range(16))
        starts = [[i.time_range[0] for i in g] for g in groups]
        assert all(s == sorted(s) for s in starts)  # time order within a group
        assert all(a[-1] <= b[0] for a, b in zip(starts, starts[1:], strict=False))
        loads = [sum(i.nvis for i in g) for g in groups]
        assert max(loads) - min(loads) <= 100  # within one item of each other
    first, second = assign(items, 2)  # 600 each: time 0 (400) and half of time 1 (200)
    assert [(i.time_range[0], i.block) for i in first] == [(0.0, b) for b in range(4)] + [
        (1.0, 0),
        (1.0, 1),
    ]
    assert {i.time_range[0] for i in second} == {1.0, 2.0, 3.0}


def _band(low_mhz: float, high_mhz: float, nchan: int, nwindows: int = 1):
    """Stand-ins of MeasurementSetInfo holding a band of nchan channels in nwindows files."""
    width = (high_mhz - low_mhz) * 1e6 / nchan
    centres = low_mhz * 1e6 + width * (np.arange(nchan) + 0.5)
    return [
        SimpleNamespace(frequency=part, channel_width=np.full(part.size, width), nchan=part.size)
        for part in np.array_split(centres, nwindows)
    ]


@pytest.mark.parametrize(
    "band, nmoment, expected",
    [
        ((168.5, 201.5, 10), 1, 1),  # the snapshot, one term: one FFT set per pass
        ((168.5, 201.5, 10), 2, 3),  # 17.8 %: two terms, blocks of <= 6 %
        ((111.5, 127.5, 16), 2, 3),  # the raw-like snapshot, 13.4 %
        ((149.0, 151.0, 10), 2, 2),  # 1.3 %: the two terms still need two blocks
        ((149.0, 151.0, 10), 3, 3),
        ((88.57, 111.43, 8, 8), 2, 4),  # the seed: 8 windows of one channel, 22.9 %
        ((50.0, 150.0, 40), 2, 17),  # 100 %: a block per 6 %
        ((149.0, 151.0, 2), 3, 2),  # never more blocks than channels
    ],
)
def test_automatic_channel_blocks(band, nmoment, expected):
    n, why = resolve_channel_blocks(_band(*band), None, nmoment)
    assert n == expected, why
    assert why.startswith("chosen automatically: fractional bandwidth")


def test_requested_channel_blocks_are_kept_up_to_one_per_channel():
    assert resolve_channel_blocks(_band(100, 120, 8), 4, 2)[0] == 4
    assert resolve_channel_blocks(_band(100, 120, 8), 16, 2)[0] == 8
    assert fractional_bandwidth(_band(90, 110, 8)) == pytest.approx(0.2)
