"""The MeasurementSet reader against MeasurementSets built independently with casacore."""

from __future__ import annotations

import numpy as np
import pytest
from casacore import tables

from casacore_ms_builder import MsSpec, add_window, build_ms, random_enu
from sdpbatch.io import ms_read, ms_windows
from sdpbatch.io.ms_read import (
    MeasurementSetError,
    read_measurement_set,
    read_measurement_set_metadata,
    read_measurement_set_times,
    read_measurement_set_windows,
)

FREQS = np.array([99.0e6, 100.0e6, 101.0e6, 102.0e6])


def _spec(**kw) -> MsSpec:
    base = dict(
        enu=random_enu(6, 500.0),
        frequencies=FREQS,
        sources=[(2.0, 0.01, -0.02), (1.0, -0.03, 0.005)],
        spectral_index=-0.7,
        gains=np.exp(1j * np.random.default_rng(3).normal(0, 0.5, (3, 6))),
    )
    base.update(kw)
    return MsSpec(**base)


def test_reads_linear_correlations_weights_flags(tmp_path):
    spec = _spec()
    truth = build_ms(tmp_path / "a.ms", spec)
    vis = read_measurement_set(tmp_path / "a.ms", block_rows=7)  # several blocks, ragged end
    vis.check()
    keep = truth["keep"]
    assert vis.nrow == int(keep.sum()) == 15 * 3  # autocorrelations dropped
    assert np.all(vis.antenna1 != vis.antenna2)
    np.testing.assert_array_equal(vis.antenna1, truth["antenna1"])
    np.testing.assert_allclose(vis.uvw, truth["uvw"])
    np.testing.assert_allclose(vis.time, truth["time"])
    np.testing.assert_allclose(vis.frequency, FREQS)
    np.testing.assert_array_equal(vis.flag, truth["flag"] | False)
    assert vis.flag.any() and not vis.flag.all()
    ok = ~vis.flag
    # I = (XX + YY) / 2, stored as complex64 in the MS
    np.testing.assert_allclose(vis.vis[ok], truth["stokes_i"][ok], rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(vis.weight[ok], truth["weight"][ok], rtol=1e-6)
    assert np.all(vis.weight[vis.flag] == 0)
    assert vis.phase_centre == pytest.approx(spec.phase_centre)
    assert vis.antenna_names[:2] == ["S000", "S001"]
    assert vis.antenna_positions.shape == (6, 3)
    assert np.linalg.norm(vis.antenna_positions[0]) == pytest.approx(6378437.0, abs=600)
    assert vis.antenna_diameter == 38.0
    assert vis.integration_time > 0


def test_weight_without_spectrum_is_broadcast(tmp_path):
    build_ms(tmp_path / "b.ms", _spec(weight_spectrum=False))
    vis = read_measurement_set(tmp_path / "b.ms")
    with tables.table(str(tmp_path / "b.ms"), ack=False) as t:
        w = t.getcol("WEIGHT")[t.getcol("ANTENNA1") != t.getcol("ANTENNA2")]
    expected = 4 * w[:, 0] * w[:, 3] / (w[:, 0] + w[:, 3])
    ok = ~vis.flag
    for c in range(vis.nchan):
        np.testing.assert_allclose(vis.weight[ok[:, c], c], expected[ok[:, c]], rtol=1e-6)


@pytest.mark.parametrize("corrs", [("I",), ("RR", "RL", "LR", "LL"), ("XX", "YY")])
def test_other_correlations(tmp_path, corrs):
    truth = build_ms(tmp_path / "c.ms", _spec(correlations=corrs))
    vis = read_measurement_set(tmp_path / "c.ms")
    ok = ~vis.flag
    np.testing.assert_allclose(vis.vis[ok], truth["stokes_i"][ok], rtol=1e-6, atol=1e-6)


def test_metadata_is_cheap_and_right(tmp_path):
    spec = _spec()
    build_ms(tmp_path / "m.ms", spec)
    info = read_measurement_set_metadata(tmp_path / "m.ms")
    assert info.nrow == 21 * 3
    assert info.correlations == ["XX", "XY", "YX", "YY"]
    np.testing.assert_allclose(info.frequency, FREQS)
    assert info.phase_centre == pytest.approx(spec.phase_centre)
    assert info.nant == 6 and info.columns == ["DATA"]


def test_unsupported_correlations_name_the_file(tmp_path):
    build_ms(tmp_path / "q.ms", _spec(correlations=("XY", "YX")))
    with pytest.raises(MeasurementSetError, match=r"q\.ms.*do not give Stokes I"):
        read_measurement_set(tmp_path / "q.ms")


def test_several_fields_are_windows_to_choose(tmp_path):
    spec = _spec(nfield_used=2)
    truth = build_ms(tmp_path / "f.ms", spec)
    with pytest.raises(MeasurementSetError, match=r"f\.ms.*2 windows \(field 0, spw 0\), "):
        read_measurement_set_metadata(tmp_path / "f.ms")
    windows = read_measurement_set_windows(tmp_path / "f.ms")
    assert [(w.field_id, w.spw_id) for w in windows] == [(0, 0), (1, 0)]
    assert windows[1].phase_centre[0] == pytest.approx(spec.phase_centre[0] + 0.01)
    by_name = read_measurement_set(tmp_path / "f.ms", field="F1")
    by_id = read_measurement_set(tmp_path / "f.ms", field=1)
    np.testing.assert_array_equal(by_name.vis, by_id.vis)
    with tables.table(str(tmp_path / "f.ms"), ack=False) as t:
        field = t.getcol("FIELD_ID")[truth["keep"]]
    assert by_id.nrow == int((field == 1).sum())
    np.testing.assert_allclose(by_id.uvw, truth["uvw"][field == 1])
    with pytest.raises(MeasurementSetError, match=r"f\.ms: field 'NGC' does not exist.*0 \(F0\)"):
        read_measurement_set(tmp_path / "f.ms", field="NGC")


def test_missing_column_and_subtable(tmp_path):
    build_ms(tmp_path / "d.ms", _spec())
    with pytest.raises(MeasurementSetError, match=r"d\.ms.*CORRECTED_DATA does not exist"):
        read_measurement_set(tmp_path / "d.ms", data_column="CORRECTED_DATA")
    with pytest.raises(MeasurementSetError, match=r"d\.ms.*'FLUX' is not a visibility column"):
        read_measurement_set(tmp_path / "d.ms", data_column="FLUX")
    with tables.table(str(tmp_path / "d.ms"), readonly=False, ack=False) as t:
        t.removecols(["WEIGHT"])
    with pytest.raises(MeasurementSetError, match=r"d\.ms.*no column\(s\) WEIGHT"):
        read_measurement_set(tmp_path / "d.ms")
    build_ms(tmp_path / "e.ms", _spec())
    tables.tabledelete(str(tmp_path / "e.ms" / "POLARIZATION"), ack=False)
    with pytest.raises(MeasurementSetError, match=r"e\.ms.*POLARIZATION"):
        read_measurement_set(tmp_path / "e.ms")


def test_not_a_measurement_set(tmp_path):
    with pytest.raises(MeasurementSetError, match="nothing.ms"):
        read_measurement_set(tmp_path / "nothing.ms")
    bad = tmp_path / "junk.ms"
    bad.mkdir()
    (bad / "table.dat").write_bytes(b"garbage")
    with pytest.raises(MeasurementSetError, match="junk.ms"):
        read_measurement_set_metadata(bad)


def test_several_spectral_windows_are_read_one_at_a_time(tmp_path):
    spec = _spec()
    path = tmp_path / "s.ms"
    build_ms(path, spec)
    first = read_measurement_set(path)
    add_window(path, frequencies=FREQS + 20e6, field=0, scale=2.0)
    with pytest.raises(MeasurementSetError, match=r"s\.ms.*choose one with field and spw"):
        read_measurement_set(path)
    windows = read_measurement_set_windows(path)
    assert [(w.spw_id, w.nchan) for w in windows] == [(0, 4), (1, 4)]
    np.testing.assert_allclose(windows[1].frequency, FREQS + 20e6)
    np.testing.assert_allclose(windows[1].channel_width, 2e5)
    assert read_measurement_set_windows(path, spw=1)[0].spw_id == 1
    again = read_measurement_set(path, spw=0)
    np.testing.assert_array_equal(again.vis, first.vis)
    second = read_measurement_set(path, spw=1)
    np.testing.assert_allclose(second.frequency, FREQS + 20e6)
    np.testing.assert_array_equal(second.flag, first.flag)
    np.testing.assert_allclose(second.vis, 2.0 * first.vis, rtol=1e-6)
    assert read_measurement_set_times(path, spw=1).size == second.nrow
    with pytest.raises(MeasurementSetError, match=r"s\.ms: spw 5 does not exist.*\[0, 1\]"):
        read_measurement_set(path, spw=5)


def test_fully_flagged_station_and_channel_leave_no_nan(tmp_path):
    path = tmp_path / "n.ms"
    build_ms(path, _spec())
    with tables.table(str(path), readonly=False, ack=False) as t:
        data, flag = t.getcol("DATA"), t.getcol("FLAG")
        dead = (t.getcol("ANTENNA1") == 2) | (t.getcol("ANTENNA2") == 2)
        data[dead], flag[dead] = np.nan, True
        data[:, 1], flag[:, 1] = np.inf, True
        weight = t.getcol("WEIGHT_SPECTRUM")
        weight[:, 3] = 0.0  # a channel nobody weighs
        t.putcol("DATA", data)
        t.putcol("FLAG", flag)
        t.putcol("WEIGHT_SPECTRUM", weight)
    vis = read_measurement_set(path)
    assert np.all(np.isfinite(vis.vis)) and np.all(np.isfinite(vis.weight))
    assert vis.flag[(vis.antenna1 == 2) | (vis.antenna2 == 2)].all()
    assert vis.flag[:, 1].all() and vis.flag[:, 3].all()
    assert np.all(vis.vis[vis.flag] == 0) and np.all(vis.weight[vis.flag] == 0)


def _auto(path) -> np.ndarray:
    with tables.table(str(path), ack=False) as t:
        return t.getcol("ANTENNA1") == t.getcol("ANTENNA2")


def test_selection_columns_are_read_in_blocks(tmp_path, monkeypatch):
    """Row masks and the windows' metadata are made a few rows at a time (a long
    observation's columns are never read whole); they are what the whole columns give."""
    path = tmp_path / "w.ms"
    build_ms(path, _spec(nfield_used=2))
    add_window(path, frequencies=FREQS + 20e6, field=1, scale=2.0)
    with tables.table(str(path), readonly=False, ack=False) as t:
        interval = t.getcol("INTERVAL")
        interval[::3] *= 2.0  # a median to compute, not a constant
        t.putcol("INTERVAL", interval)
        columns = {n: t.getcol(n) for n in ("DATA_DESC_ID", "FIELD_ID", "ANTENNA1", "ANTENNA2")}
        time = t.getcol("TIME")
    monkeypatch.setattr(ms_windows, "COLUMN_ROWS", 7)  # several blocks and a ragged end
    assert time.size > 3 * 7
    middle = np.unique(time)[1]
    windows = read_measurement_set_windows(path)
    assert [(w.field_id, w.spw_id) for w in windows] == [(0, 0), (1, 0), (1, 1)]
    for info in windows:
        cross = columns["ANTENNA1"] != columns["ANTENNA2"]
        mine = np.isin(columns["DATA_DESC_ID"], info.data_desc_ids)
        mine &= columns["FIELD_ID"] == info.field_id
        assert info.nrow == int(mine.sum())
        assert info.time_range == (time[mine].min(), time[mine].max())
        assert info.integration_time == np.median(interval[mine])
        np.testing.assert_array_equal(ms_read.window_rows(path, info), mine & cross)
        both = ms_read.window_rows(path, info, autocorrelations=True)
        np.testing.assert_array_equal(both, mine)
        later = ms_read.window_rows(path, info, time_range=(middle, np.inf))
        np.testing.assert_array_equal(later, mine & cross & (time >= middle))


def test_a_planned_row_span_reads_only_its_rows(tmp_path, monkeypatch):
    """A reader given the row span of a time range (from window_times) and the window's
    metadata reads what the time range alone reads, and touches no row outside the span."""
    path = tmp_path / "w.ms"
    build_ms(path, _spec(nfield_used=2))
    add_window(path, frequencies=FREQS + 20e6, field=1, scale=2.0)
    monkeypatch.setattr(ms_windows, "COLUMN_ROWS", 5)
    seen, getcol = [], tables.table.getcol

    def spy(self, name, startrow=0, nrow=-1, *args, **kwargs):
        seen.append((startrow, startrow + (self.nrows() - startrow if nrow < 0 else nrow)))
        return getcol(self, name, startrow, nrow, *args, **kwargs)

    for info in read_measurement_set_windows(path):
        rows, times = ms_read.window_times(path, info)
        np.testing.assert_array_equal(rows, np.flatnonzero(ms_read.window_rows(path, info)))
        with tables.table(str(path), ack=False) as t:
            np.testing.assert_array_equal(times, t.getcol("TIME")[rows])
        distinct = np.unique(times)
        window = (0.5 * (distinct[0] + distinct[1]), 0.5 * (distinct[1] + distinct[2]))
        mine = rows[(times >= window[0]) & (times < window[1])]
        span = (int(mine[0]), int(mine[-1]) + 1)
        whole = read_measurement_set(path, field=info.field_id, spw=info.spw_id, time_range=window)
        seen.clear()
        monkeypatch.setattr(tables.table, "getcol", spy)
        planned = read_measurement_set(path, time_range=window, rows=span, info=info)
        monkeypatch.setattr(tables.table, "getcol", getcol)
        assert planned.nrow == whole.nrow == mine.size > 0
        for name in ("vis", "weight", "flag", "uvw", "time", "antenna1", "antenna2"):
            np.testing.assert_array_equal(getattr(planned, name), getattr(whole, name))
        main_reads = [r for r in seen if r[1] - r[0] > 1]  # subtable reads are single rows here
        assert main_reads and all(span[0] <= a and b <= span[1] for a, b in main_reads)


@pytest.mark.parametrize("n", [1, 2, 7, 10])
def test_median_of_counted_values_is_numpys(n):
    values = np.random.default_rng(n).integers(1, 5, n).astype(float)
    counts = dict(zip(*np.unique(values, return_counts=True), strict=True))
    assert ms_windows._median(counts) == np.median(values)
    assert ms_windows._median({}) == 0.0
