"""MODEL_DATA and CORRECTED_DATA written back into MeasurementSets, checked with casacore (and
imaged with WSClean where it can be installed), atomically per file."""

from __future__ import annotations

import shutil
import subprocess

import numpy as np
import pytest
from casacore import tables

from casacore_ms_builder import MsSpec, add_window, build_ms, random_enu
from raw_like_ms import true_visibilities
from sdpbatch.execution.writeback import WindowModel, write_back_window
from sdpbatch.io import ms_read, ms_windows, ms_writeback
from sdpbatch.io.ms_read import read_measurement_set, read_measurement_set_metadata
from sdpbatch.io.ms_writeback import (
    OLD_PREFIX,
    TEMP_PREFIX,
    GainTerm,
    recover_columns,
    write_corrected_data,
    write_model_data,
)
from system_packages import ensure_debian_packages


def _columns(path):
    with tables.table(str(path), ack=False) as t:
        return t.colnames()


def _info(path, spw=None):
    """The window as a run checked it (write-back does not read it again)."""
    return read_measurement_set_metadata(path, spw=spw)


def _get(path, column):
    with tables.table(str(path), ack=False) as t:
        return t.getcol(column), t.getcol("ANTENNA1"), t.getcol("ANTENNA2")


def _true_gains(truth) -> list[GainTerm]:
    nchan = truth.frequencies.size
    return [GainTerm(truth.gains[None], np.array([-np.inf, np.inf]), np.arange(nchan))]


def test_model_data_holds_the_model_in_both_hands(raw_like):
    path, truth = raw_like
    model = true_visibilities(truth.uvw, truth.frequencies, truth.sky)
    write_model_data(_info(path), model)
    with tables.table(str(path), ack=False) as t:
        desc = t.getcoldesc("MODEL_DATA")
        assert desc["valueType"] == "complex" and desc["ndim"] == 2
        assert t.getcell("MODEL_DATA", 0).shape == (truth.frequencies.size, 2)  # (nchan, ncorr)
    data, a1, a2 = _get(path, "MODEL_DATA")
    cross = a1 != a2
    np.testing.assert_allclose(data[cross][..., 0], model, rtol=1e-6, atol=1e-5)
    np.testing.assert_array_equal(data[..., 0], data[..., 1])  # XX = YY = I
    assert np.all(data[~cross] == 0)
    back = read_measurement_set(path, data_column="MODEL_DATA")
    ok = ~back.flag
    np.testing.assert_allclose(back.vis[ok], model[ok], rtol=1e-6, atol=1e-5)
    assert not [c for c in _columns(path) if c.startswith(("SDPBATCH", "TEMP"))]


def test_corrected_data_divides_by_the_gains(raw_like):
    path, truth = raw_like
    write_corrected_data(_info(path), _true_gains(truth))
    corrected, a1, a2 = _get(path, "CORRECTED_DATA")
    data, _, _ = _get(path, "DATA")
    gpq = truth.gains[a1] * np.conj(truth.gains[a2])
    np.testing.assert_allclose(corrected, data / gpq[:, :, None], rtol=1e-5, equal_nan=True)
    # autocorrelations are corrected too: the system temperature without the station gain
    flag = _get(path, "FLAG")[0] | _get(path, "FLAG_ROW")[0][:, None, None]
    auto = (a1 == a2)[:, None, None] & ~flag
    assert auto.sum() > 1000
    np.testing.assert_allclose(corrected[auto], 5000.0, rtol=0.01)
    # the reader sees the true sky plus noise of the weights' variance divided by |g_p g_q|
    back = read_measurement_set(path, data_column="CORRECTED_DATA")
    ok = ~back.flag
    cross_gpq = truth.gains[back.antenna1] * np.conj(truth.gains[back.antenna2])
    z = (back.vis - truth.stokes_i_true)[ok] * np.abs(cross_gpq)[ok] * np.sqrt(back.weight[ok])
    assert np.std(z.real) == pytest.approx(1.0, abs=0.03)
    assert abs(np.mean(z)) < 0.05


def test_write_back_with_several_windows(tmp_path):
    path = tmp_path / "w.ms"
    freqs = np.array([99e6, 100e6, 101e6])
    build_ms(path, MsSpec(enu=random_enu(5, 300.0), frequencies=freqs, sources=[(1.0, 0, 0)]))
    add_window(path, frequencies=freqs + 30e6, field=0, scale=3.0)
    first = read_measurement_set(path, spw=0)
    write_model_data(_info(path, 1), np.full((first.nrow, 3), 2.0 + 1j))
    with tables.table(str(path), ack=False) as t:
        ddid = t.getcol("DATA_DESC_ID")
        model = t.getcol("MODEL_DATA")
        cross = t.getcol("ANTENNA1") != t.getcol("ANTENNA2")
    assert np.all(model[ddid == 0] == 0)  # the other window: zeros in a new column
    assert np.all(model[(ddid == 1) & cross][..., [0, 3]] == 2.0 + 1j)
    assert np.all(model[(ddid == 1) & cross][..., [1, 2]] == 0)  # XY = YX = 0
    write_model_data(_info(path, 0), np.full((first.nrow, 3), 5.0))
    model = _get(path, "MODEL_DATA")[0]
    assert np.all(model[(ddid == 1) & cross][..., 0] == 2.0 + 1j)  # kept
    assert np.all(model[(ddid == 0) & cross][..., 0] == 5.0)
    unit = GainTerm(np.full((1, 5, 1), 2.0), np.array([-np.inf, np.inf]), np.zeros(3, int))
    write_corrected_data(_info(path, 1), [unit])
    corrected, data = _get(path, "CORRECTED_DATA")[0], _get(path, "DATA")[0]
    np.testing.assert_array_equal(corrected[ddid == 0], data[ddid == 0])  # as CASA starts it
    np.testing.assert_allclose(corrected[ddid == 1], data[ddid == 1] / 4.0, rtol=1e-6)


def test_write_back_reads_no_metadata_again(raw_like, monkeypatch):
    """A window's write-back (execution's task) takes the window as the run checked it: no
    MeasurementSet is described again, no subtable opened; the columns are as written above."""
    path, truth = raw_like
    info = _info(path)
    opened, real_open = [], ms_windows.open_table

    def spy_open(path, name=None, **kwargs):
        opened.append(name)
        return real_open(path, name, **kwargs)

    def refuse(*args, **kwargs):
        raise AssertionError("write-back read the MeasurementSet's metadata again")

    for module in (ms_windows, ms_read, ms_writeback):
        monkeypatch.setattr(module, "open_table", spy_open)
    monkeypatch.setattr(ms_windows, "read_measurement_set_windows", refuse)
    monkeypatch.setattr(ms_windows, "read_measurement_set_metadata", refuse)
    monkeypatch.setattr(ms_read, "read_measurement_set_metadata", refuse)
    point = np.zeros((1, 128, 128))
    point[0, 64, 64] = 2.0  # at the phase centre: 2 Jy on every baseline and channel
    model = WindowModel(
        model_taylor=point,
        reference_frequency=float(info.frequency.mean()),
        cellsize=1e-4,
        epsilon=1e-6,
        nthreads=1,
    )
    terms = [(truth.gains[None], np.array([-np.inf, np.inf]), True)]
    written = write_back_window(info, 0, model=model, terms=terms, data_column="DATA")
    assert written == ["MODEL_DATA", "CORRECTED_DATA"]
    assert opened and set(opened) == {None}  # the main table only, no subtable
    monkeypatch.undo()
    data, a1, a2 = _get(path, "MODEL_DATA")
    cross = a1 != a2
    assert info.correlations == ["XX", "YY"]
    np.testing.assert_allclose(data[cross], 2.0, atol=1e-5)
    assert np.all(data[~cross] == 0)
    corrected = _get(path, "CORRECTED_DATA")[0]
    gpq = truth.gains[a1] * np.conj(truth.gains[a2])
    expected = _get(path, "DATA")[0] / gpq[:, :, None]
    np.testing.assert_allclose(corrected, expected, rtol=1e-6, equal_nan=True)


class _FailingModel:
    """An array-like model whose rows beyond ``limit`` cannot be read (a failing producer)."""

    def __init__(self, values: np.ndarray, limit: int):
        self.values, self.limit, self.shape = values, limit, values.shape

    def __getitem__(self, index):
        if index.stop > self.limit:
            raise OSError("the model's storage went away")
        return self.values[index]


def test_a_failed_write_leaves_the_file_as_it_was(raw_like):
    path, truth = raw_like
    model = true_visibilities(truth.uvw, truth.frequencies, truth.sky)
    write_model_data(_info(path), model)
    before = _get(path, "MODEL_DATA")[0]
    with pytest.raises(OSError, match="went away"):
        write_model_data(_info(path), _FailingModel(2 * model, 300), block_rows=200)
    np.testing.assert_array_equal(_get(path, "MODEL_DATA")[0], before)
    assert not [c for c in _columns(path) if c.startswith("SDPBATCH")]
    with pytest.raises(ValueError, match="model_vis has shape"):
        write_model_data(_info(path), model[:10])
    np.testing.assert_array_equal(_get(path, "MODEL_DATA")[0], before)
    # no CORRECTED_DATA appears from a failed first write either
    bad = GainTerm(truth.gains[None], np.array([-np.inf, np.inf]), np.arange(3))
    with pytest.raises(ValueError, match="channels"):
        write_corrected_data(_info(path), [bad])
    assert "CORRECTED_DATA" not in _columns(path)


def test_an_interrupted_swap_is_completed_or_undone(raw_like):
    path, truth = raw_like
    model = true_visibilities(truth.uvw, truth.frequencies, truth.sky)
    write_model_data(_info(path), model)
    before = _get(path, "MODEL_DATA")[0]
    with tables.table(str(path), readonly=False, ack=False) as t:  # crash after the set-aside
        t.renamecol("MODEL_DATA", OLD_PREFIX + "MODEL_DATA")
        t.addcols(tables.makecoldesc(TEMP_PREFIX + "MODEL_DATA", t.getcoldesc("DATA")))
    assert set(recover_columns(path)) == {
        "restored MODEL_DATA",
        f"removed the unfinished {TEMP_PREFIX}MODEL_DATA",
    }
    np.testing.assert_array_equal(_get(path, "MODEL_DATA")[0], before)
    with tables.table(str(path), readonly=False, ack=False) as t:  # crash before the removal
        t.addcols(tables.makecoldesc(OLD_PREFIX + "MODEL_DATA", t.getcoldesc("DATA")))
    assert recover_columns(path) == ["removed the replaced MODEL_DATA"]
    np.testing.assert_array_equal(_get(path, "MODEL_DATA")[0], before)
    assert not [c for c in _columns(path) if c.startswith("SDPBATCH")]
    assert recover_columns(path) == []


def _wsclean_dirty(path, column, out, cell_arcsec, size=256) -> np.ndarray:
    from astropy.io import fits

    subprocess.run(
        ["wsclean", "-quiet", "-data-column", column, "-size", str(size), str(size),
         "-scale", f"{cell_arcsec}asec", "-niter", "0", "-weight", "natural",
         "-no-update-model-required", "-name", str(out), str(path)],
        check=True, capture_output=True, timeout=300,
    )  # fmt: skip
    with fits.open(f"{out}-dirty.fits") as hdul:
        return np.asarray(hdul[0].data).squeeze()


def test_wsclean_images_the_written_columns(raw_like, tmp_path):
    """WSClean reads MODEL_DATA and CORRECTED_DATA: the corrected data image like the model."""
    reason = ensure_debian_packages(["wsclean"], ["wsclean"])
    if reason:
        pytest.skip(reason)
    path, truth = raw_like
    model = true_visibilities(truth.uvw, truth.frequencies, truth.sky)
    write_model_data(_info(path), model)
    write_corrected_data(_info(path), _true_gains(truth))
    copy = tmp_path / "copy.ms"
    shutil.copytree(path, copy)
    with tables.table(str(copy), readonly=False, ack=False) as t:
        # WSClean 3.1 ignores FLAG_ROW (the raw-like data set it on rows whose FLAG is clear)
        t.putcol("FLAG", t.getcol("FLAG") | t.getcol("FLAG_ROW")[:, None, None])
    cell = 30.0  # arcsec: the double source spans ~6 pixels, the field ~2 deg
    dirty_model = _wsclean_dirty(copy, "MODEL_DATA", tmp_path / "m", cell)
    dirty_corrected = _wsclean_dirty(copy, "CORRECTED_DATA", tmp_path / "c", cell)
    dirty_raw = _wsclean_dirty(copy, "DATA", tmp_path / "r", cell)
    peak = dirty_model.max()
    assert peak > 5.0  # the double source, Jy/beam
    # the difference is the noise: the rms of its natural-weighted dirty image
    vis = read_measurement_set(copy)
    ok = ~vis.flag
    gpq = truth.gains[vis.antenna1] * np.conj(truth.gains[vis.antenna2])
    w = vis.weight[ok].astype(float)
    expected = np.sqrt(np.sum(w / np.abs(gpq[ok]) ** 2)) / np.sum(w)
    residual = dirty_corrected - dirty_model
    assert 0.7 * expected < residual.std() < 1.3 * expected
    assert np.abs(dirty_raw - dirty_model).max() > 0.2 * peak  # the gains were there
