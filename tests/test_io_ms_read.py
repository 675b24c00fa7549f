"""The MeasurementSet reader against MeasurementSets built independently with casacore."""

from __future__ import annotations

import numpy as np
import pytest
from casacore import tables

from casacore_ms_builder import MsSpec, build_ms, random_enu
from sdpbatch.io.ms_read import (
    MeasurementSetError,
    read_measurement_set,
    read_measurement_set_metadata,
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


def test_several_fields_rejected(tmp_path):
    build_ms(tmp_path / "f.ms", _spec(nfield_used=2))
    with pytest.raises(MeasurementSetError, match=r"f\.ms.*2 fields"):
        read_measurement_set_metadata(tmp_path / "f.ms")


def test_missing_column_and_subtable(tmp_path):
    build_ms(tmp_path / "d.ms", _spec())
    with pytest.raises(MeasurementSetError, match=r"d\.ms.*CORRECTED_DATA"):
        read_measurement_set(tmp_path / "d.ms", column="CORRECTED_DATA")
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


def test_several_spectral_windows_need_a_choice(tmp_path):
    spec = _spec()
    build_ms(tmp_path / "s.ms", spec)
    with tables.table(str(tmp_path / "s.ms"), readonly=False, ack=False) as t:
        dd = t.getcol("DATA_DESC_ID")
        dd[::2] = 1
        t.putcol("DATA_DESC_ID", dd)
    with tables.table(str(tmp_path / "s.ms/DATA_DESCRIPTION"), readonly=False, ack=False) as t:
        t.addrows(1)
        t.putcell("SPECTRAL_WINDOW_ID", 1, 0)
        t.putcell("POLARIZATION_ID", 1, 0)
    with pytest.raises(MeasurementSetError, match=r"s\.ms.*data_desc_id"):
        read_measurement_set(tmp_path / "s.ms")
    vis = read_measurement_set(tmp_path / "s.ms", data_desc_id=1)
    assert vis.nrow == int(((dd == 1) & ~_auto(tmp_path / "s.ms")).sum())


def _auto(path) -> np.ndarray:
    with tables.table(str(path), ack=False) as t:
        return t.getcol("ANTENNA1") == t.getcol("ANTENNA2")
