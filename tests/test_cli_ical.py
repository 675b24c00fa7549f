"""`sdpbatch ical` as a WSClean user runs it, on a small simulated set: flags, product names,
FITS metadata, every gain term in the H5parm; MeasurementSet write-back."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from astropy.io import fits
from casacore import tables

from sdpbatch.cli import main
from sdpbatch.io.gaintable import read_gain_terms

SMALL_SIM = {"n_workers": 1, "rmax": 300.0, "ntimes": 3, "nfreqwin": 3, "flux_limit": 5.0}
WSCLEAN_STYLE = ["-size", "256", "256", "-scale", "5amin", "-niter", "500", "-nmiter", "3",
                 "-weight", "briggs", "0", "-mgain", "0.9", "-gain", "0.2", "-threshold",
                 "10mJy", "-j", "2", "-multiscale-scales", "0,3", "--n-workers", "1"]  # fmt: skip


@pytest.fixture(scope="module")
def simulated(tmp_path_factory):
    """Three one-channel MeasurementSets of ~100 SKA1-Low stations, with their truth."""
    root = tmp_path_factory.mktemp("sim")
    params = root / "params.json"
    params.write_text(json.dumps(SMALL_SIM))
    assert main(["simulate", str(params), "--out", str(root / "vis"), "-q"]) == 0
    return root / "vis"


def _ms(folder):
    return sorted(str(p) for p in folder.glob("*.ms"))


def test_wsclean_style_ical_run(simulated, tmp_path, capsys):
    out = tmp_path / "img"
    code = main(["ical", *_ms(simulated), "--out", str(out), *WSCLEAN_STYLE, "-name", "field1",
                 "--context", "TGB", "--first-selfcal-G", "1", "--first-selfcal-B", "2",
                 "--no-progress"])  # fmt: skip
    assert code == 0, capsys.readouterr().err
    names = sorted(p.name for p in out.iterdir())
    assert names == sorted(
        ["qa.json", "provenance.json", "field1_gains.h5", "field1_restored.png"]
        + [
            f"field1_{k}{c}.fits"
            for k in ("restored", "residual", "deconvolved")
            for c in ("", "_cube")
        ]  # fmt: skip
        + ["field1_beam.fits", "field1_restored_pb.fits", "field1_sources.txt",
           "field1_sources_pb.txt"]  # the simulation's beam is known: pb_correct auto
    )
    header = fits.getheader(out / "field1_restored.fits")
    assert header["NAXIS1"] == header["NAXIS2"] == 256
    assert header["CDELT1"] == pytest.approx(-5 / 60) and header["CDELT2"] == pytest.approx(5 / 60)
    with tables.table(_ms(simulated)[0], ack=False) as t:
        first = float(t.getcol("TIME").min())
    with tables.table(_ms(simulated)[0] + "/OBSERVATION", ack=False) as t:
        telescope = t.getcell("TELESCOPE_NAME", 0)
    assert header["TELESCOP"] == telescope == "SKA1-Low"
    assert header["MJD-OBS"] * 86400 == pytest.approx(first, abs=1e-3)
    assert header["DATE-OBS"].startswith("2020-01-01T") and header["TIMESYS"] == "UTC"
    qa = json.loads((out / "qa.json").read_text())
    p = qa["parameters"]
    assert (p["npixel"], p["weighting"], p["robust"], p["niter"], p["nmajor"]) == (
        256, "briggs", 0.0, 500, 3
    )  # fmt: skip
    assert p["fractional_threshold"] == pytest.approx(0.1) and p["threshold"] == 0.01
    assert (p["clean_gain"], p["threads_per_worker"], p["prefix"]) == (0.2, 2, "field1")
    terms = read_gain_terms(out / "field1_gains.h5")
    assert list(terms) == ["T", "G", "B"]
    nant = terms["T"].gains.shape[1]
    assert terms["T"].gains.shape == (3, nant, 1)  # a phase per integration
    assert terms["G"].gains.shape == (1, nant, 1)
    assert terms["B"].gains.shape == (1, nant, 3)  # one per channel
    assert qa["truth"]["gain_phase_rms_error_rad"] < 0.05 < qa["truth"]["gain_phase_rms_true_rad"]
    printed = capsys.readouterr().out
    assert str(out / "field1_restored.fits") in printed


def test_write_model_and_corrected_data(simulated, tmp_path, capsys):
    vis = tmp_path / "vis"
    shutil.copytree(simulated, vis)
    before = {}
    for ms in _ms(vis):
        with tables.table(ms, ack=False) as t:
            before[ms] = t.getcol("DATA")
    code = main(["ical", *_ms(vis), "--out", str(tmp_path / "img"), *WSCLEAN_STYLE,
                 "--write-model", "--write-corrected", "--no-progress"])  # fmt: skip
    assert code == 0, capsys.readouterr().err
    for ms in _ms(vis):
        with tables.table(ms, ack=False) as t:
            assert {"MODEL_DATA", "CORRECTED_DATA"} <= set(t.colnames())
            np.testing.assert_array_equal(t.getcol("DATA"), before[ms])
            model, corrected = t.getcol("MODEL_DATA"), t.getcol("CORRECTED_DATA")
            cross = t.getcol("ANTENNA1") != t.getcol("ANTENNA2")
        # noiseless data, gains solved: the corrected data are the model of the sky
        xx = corrected[cross][..., 0] - model[cross][..., 0]
        assert np.linalg.norm(xx) < 0.1 * np.linalg.norm(model[cross][..., 0])


def test_auto_threshold_stops_the_clean_at_a_multiple_of_the_rms(simulated, tmp_path):
    runs = {}
    for label, extra in (("deep", []), ("auto", ["-auto-threshold", "50"])):
        out = tmp_path / label
        code = main(["ical", *_ms(simulated), "--out", str(out), *WSCLEAN_STYLE, "-mgain", "1",
                     "-threshold", "0", "--no-selfcal", "-q", *extra])  # fmt: skip
        assert code == 0
        runs[label] = json.loads((out / "qa.json").read_text())
    deep, auto = runs["deep"], runs["auto"]
    components = [sum(c.get("components", 0) for c in r["cycles"]) for r in (deep, auto)]
    assert components[1] < components[0] / 2
    assert auto["residual"]["peak"] > 5 * deep["residual"]["peak"]
