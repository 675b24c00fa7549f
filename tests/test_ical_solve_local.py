"""Gain cells solved where their data are: the same solution as one solve of all the sums,
with a running total that holds one chunk's cells, not a group's."""

from __future__ import annotations

import tempfile

import numpy as np
import pytest

from sdpbatch.execution.ical.calibrate import _solved
from sdpbatch.execution.ical.group import load_group, prepare_group
from sdpbatch.execution.ical.plan import assign, channel_blocks, work_items
from sdpbatch.execution.ical.scratch import remove_scratch
from sdpbatch.execution.ical.solve_tasks import (
    LocalCells,
    _block_sums,
    _LocalSolver,
    _solve_chunks,
    group_solve,
    interval_owners,
    merge_partial,
)
from sdpbatch.execution.ical.tasks import group_predict, with_models
from sdpbatch.execution.simulate import simulate
from sdpbatch.io.ms_read import read_measurement_set_times
from sdpbatch.io.ms_set import check_measurement_sets
from sdpbatch.parameters import Parameters
from sdpbatch.science.solve import (
    SolverOptions,
    combine_sums,
    compress,
    finish_term,
    join_cells,
    solution_intervals,
    solve_cells,
    solve_term,
)
from test_ical_driver import imaging_setup
from test_ical_solve import SOURCES, corrupt, point_sources, random_phases, small_array

OPTIONS = SolverOptions()  # ICAL's, the schema's defaults


def test_interval_owners():
    boundaries = np.array([-np.inf, 1.5, 2.5, 3.5, 4.5, 5.5, np.inf])
    times = [np.array([1.0, 2.0, 3.0]), np.array([3.0, 4.0, 5.0])]
    # interval 2 (time 3) is held by both groups, interval 5 by none
    assert interval_owners(boundaries, times).tolist() == [0, 0, -1, 1, 1, -1]
    assert interval_owners(np.array([-np.inf, np.inf]), times).tolist() == [-1]
    assert interval_owners(np.array([-np.inf, np.inf]), times[:1]).tolist() == [0]


def test_cells_solved_apart_give_the_term_of_one_solve():
    """Cells solved in two parts, joined and finished: the solution of all sums at once."""
    arr = small_array(ntimes=4, seed=5)
    arr["model"] = point_sources(arr["uvw"], arr["freq"], SOURCES)
    rng = np.random.default_rng(1)
    nant = arr["nant"]
    true = np.abs(1 + 0.2 * rng.normal(size=(4, nant, 1))) * random_phases(rng, (4, nant, 1))
    true[2, 7] *= 30.0  # a station's spike in one interval: flagged across the station's cells
    interval = np.repeat(np.arange(4), arr["a1"].size // 4)
    data = corrupt(arr, true, interval, np.zeros(arr["freq"].size, int))
    data = data + 0.05 * (rng.normal(size=data.shape) + 1j * rng.normal(size=data.shape))
    sums = compress(
        data,
        arr["model"],
        np.ones(data.shape),
        antenna1=arr["a1"],
        antenna2=arr["a2"],
        interval=interval,
    )
    initial = np.ones((4, nant, 1), complex)
    whole = solve_term(sums, term="G", initial=initial, normalise=True, options=OPTIONS)
    parts = [
        solve_cells(sums.select(pick), initial=initial, phase_only=False, options=OPTIONS)
        for pick in (sums.interval < 2, sums.interval >= 2)
    ]
    apart = finish_term(
        join_cells(*parts), term="G", initial=initial, normalise=True, options=OPTIONS
    )
    assert whole.flags.any()  # the checks had something to do
    assert np.array_equal(apart.flags, whole.flags)
    assert np.allclose(apart.gains, whole.gains, rtol=0, atol=1e-12)
    assert apart.stats == whole.stats
    with pytest.raises(ValueError, match="solved twice"):
        join_cells(parts[0], parts[0])


SMALL = dict(rmax=300.0, ntimes=4, nfreqwin=2, npixel=256, cellsize=0.002)


@pytest.fixture(scope="module")
def four_times(tmp_path_factory):
    """Two single-channel windows of four integrations, station phase errors, no noise."""
    params = Parameters(**SMALL)
    return simulate(params, tmp_path_factory.mktemp("vis")).ms_paths


def _groups(paths, setup, monkeypatch, tmp_path):
    """Two groups of consecutive times, each integration its own (spilled) chunk."""
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    infos = check_measurement_sets(paths)
    _, counts = np.unique(read_measurement_set_times(paths[0]), return_counts=True)
    limit = 2 * int(counts.max())  # one integration of the two windows
    items = work_items(infos, channel_blocks(infos, 1), limit)
    assert len(items) == 4
    groups = [
        prepare_group(load_group(part, True, "local-solve"), setup, None)
        for part in assign(items, 2)
    ]
    return groups, [g.summary.times for g in groups]


def _nant(groups) -> int:
    b = groups[0].chunk_blocks(0)[0]
    return int(max(b.antenna1.max(), b.antenna2.max())) + 1


@pytest.mark.parametrize(
    ("term", "interval"), [("T", 0.0), ("G", 2.5), ("G", None)], ids=["T", "G-2.5", "G-all"]
)
def test_groups_solve_their_own_intervals(four_times, monkeypatch, tmp_path, term, interval):
    """Per integration every interval is one group's; intervals across the groups' edge, or one
    for the whole observation, are summed and solved apart; the term is the one solve of all
    the sums."""
    times = np.unique(np.round(read_measurement_set_times(four_times[0]), 3))
    seconds = None if interval is None else interval * (times[1] - times[0])
    boundaries, _ = solution_intervals(times, seconds)
    groups, group_times = _groups(
        four_times,
        imaging_setup("local-solve", boundaries={term: boundaries}),
        monkeypatch,
        tmp_path,
    )
    owners = interval_owners(boundaries, group_times)
    model = np.zeros((1, 256, 256))
    model[0, 128, 128] = 1.0  # not the sky: the solve has something to fit
    models = [group_predict(g, None, model, np.array([[1.0]]), g.setup) for g in groups]
    gains = {term: np.ones((boundaries.size - 1, _nant(groups), 1), complex)}
    held = []
    add = _LocalSolver.add

    def counted(self, b, m):
        add(self, b, m)
        held.append(self.total.size)

    monkeypatch.setattr(_LocalSolver, "add", counted)
    parts = [
        group_solve(g, mv, LocalCells(boundaries, owners == k), None, gains, term, OPTIONS)
        for k, (g, mv) in enumerate(zip(groups, models, strict=True))
    ]
    apart = _solved(merge_partial(*parts), term, gains[term], True, OPTIONS)

    pairs = [p for g, mv in zip(groups, models, strict=True) for p in with_models(g, mv)]
    sums = combine_sums([_block_sums(b, m, gains, term) for b, m in pairs])
    whole = solve_term(sums, term=term, initial=gains[term], normalise=True, options=OPTIONS)
    assert np.allclose(apart.gains, whole.gains, rtol=0, atol=1e-10)
    assert np.array_equal(apart.flags, whole.flags)
    if interval == 0.0:  # each group holds two integrations, its running total one at most
        assert (owners >= 0).all() and all(p.sums is None for p in parts)
        assert max(held) == sums.size // 4
    else:  # the first interval spans both groups
        assert owners[0] == -1 and merge_partial(*parts).sums is not None
        assert np.array_equal(owners[1:], [1] * (owners.size - 1))
    remove_scratch("local-solve")


def test_items_out_of_time_order_are_refused(four_times, monkeypatch, tmp_path):
    times = np.unique(np.round(read_measurement_set_times(four_times[0]), 3))
    boundaries, _ = solution_intervals(times, 0.0)
    setup = imaging_setup("local-solve", boundaries={"T": boundaries})
    groups, group_times = _groups(four_times, setup, monkeypatch, tmp_path)
    group = groups[0]
    gains = {"T": np.ones((4, _nant(groups), 1), complex)}
    local = LocalCells(boundaries, interval_owners(boundaries, group_times) == 0)
    chunks = ((c, ((b, b.vis) for b in group.chunk_blocks(c))) for c in (1, 0))
    with pytest.raises(RuntimeError, match="out of time order"):
        _solve_chunks(group, chunks, gains, "T", local, OPTIONS)
    remove_scratch("local-solve")
