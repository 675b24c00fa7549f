"""Provenance: every ICAL product set carries provenance.json, and `sdpbatch verify` checks
a folder against it (a missing or changed file fails it)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from astropy.io import fits

from casacore_ms_builder import MsSpec, build_ms, random_enu
from sdpbatch.cli import main
from sdpbatch.io.provenance import checksum, verify, write_manifest
from sdpbatch.io.qa import write_qa


def test_a_directory_checksum_covers_names_and_contents(tmp_path):
    ms = tmp_path / "a.ms"
    (ms / "sub").mkdir(parents=True)
    (ms / "table.f0").write_bytes(b"rows")
    (ms / "sub" / "table.dat").write_bytes(b"meta")
    first = checksum(ms)
    assert first["bytes"] == 8
    (ms / "sub" / "table.dat").write_bytes(b"meta!")
    assert checksum(ms)["sha256"] != first["sha256"]
    (ms / "sub" / "table.dat").write_bytes(b"meta")
    (ms / "sub" / "table.dat").rename(ms / "sub" / "other.dat")  # same bytes, other name
    assert checksum(ms)["sha256"] != first["sha256"]


def test_verify_names_missing_changed_and_unlisted_files(tmp_path):
    files = [tmp_path / "image.fits", tmp_path / "qa.json"]
    files[0].write_bytes(b"x" * 1000)
    write_qa(files[1], {"peak": 1.0})
    write_manifest(tmp_path, files=files, record={"parameters": {"niter": 3}})
    assert verify(tmp_path).ok and verify(tmp_path).good == ["image.fits", "qa.json"]
    files[0].write_bytes(b"x" * 999 + b"y")  # same size, other content
    (tmp_path / "stray.txt").write_text("?")
    files[1].unlink()
    found = verify(tmp_path)
    assert not found.ok
    assert (found.changed, found.missing, found.unlisted) == (
        ["image.fits"],
        ["qa.json"],
        ["stray.txt"],
    )


def _small_ms(path):
    spec = MsSpec(
        enu=random_enu(20, 500.0, seed=5),
        frequencies=np.array([100e6, 104e6]),
        ntimes=2,
        sources=[(3.0, 0.01, -0.005)],
        gains=np.exp(1j * np.random.default_rng(2).normal(0, 0.3, (2, 20))),
    )
    build_ms(path, spec)


@pytest.fixture(scope="module")
def products(tmp_path_factory):
    base = tmp_path_factory.mktemp("prov")
    _small_ms(base / "obs.ms")
    params = {"n_workers": 1, "npixel": 128, "cellsize": 0.001, "nmajor": 2, "niter": 200}
    (base / "params.json").write_text(json.dumps(params))
    out = base / "img"
    code = main(["ical", str(base / "obs.ms"), "--out", str(out), "--params",
                 str(base / "params.json"), "--no-progress", "-name", "field7"])  # fmt: skip
    assert code == 0
    return base, out


def test_ical_products_carry_a_manifest_naming_their_origin(products):
    base, out = products
    manifest = json.loads((out / "provenance.json").read_text())
    listed = set(manifest["files"])
    assert listed == {p.name for p in out.iterdir()} - {"provenance.json"}
    assert {"field7_restored.fits", "field7_gains.h5", "qa.json"} <= listed
    for name, entry in manifest["files"].items():
        assert entry == checksum(out / name)
    assert manifest["sdpbatch"] and manifest["dependencies"]["ducc0"]
    assert manifest["dependencies"]["python-casacore"]
    assert manifest["parameters"]["nmajor"] == 2 and manifest["parameters"]["prefix"] == "field7"
    (entry,) = manifest["inputs"]
    assert entry["path"] == str(base / "obs.ms") and entry["nchan"] == 2
    assert len(entry["metadata_sha256"]) == 64
    assert manifest["engine"]["kind"] == "in-process" and manifest["engine"]["workers"]
    assert {"read", "clean", "write", "total"} <= set(manifest["stages"])
    assert manifest["resumed_from"] == []
    history = str(fits.getheader(out / "field7_restored.fits")["HISTORY"])
    assert f"sdpbatch {manifest['sdpbatch']}" in history and "provenance.json" in history


def test_verify_command_passes_then_catches_a_changed_and_a_missing_file(products, capsys):
    _, out = products
    assert main(["verify", str(out)]) == 0
    assert capsys.readouterr().out.startswith("OK:")
    with fits.open(out / "field7_residual.fits", mode="update") as hdul:
        hdul[0].data[0, 0, 0, 0] += 1.0
    (out / "field7_restored.png").unlink()
    assert main(["verify", str(out)]) == 1
    printed = capsys.readouterr().out.splitlines()
    assert "changed: field7_residual.fits" in printed
    assert "missing: field7_restored.png" in printed
    assert printed[-1].startswith("MISMATCH: ")


def test_verify_without_a_manifest_is_a_user_error(tmp_path, capsys):
    assert main(["verify", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no provenance.json" in err
    assert main(["verify", str(tmp_path / "nowhere")]) == 2
    assert "not a directory" in capsys.readouterr().err


def test_a_run_leaves_both_buffers_verifiable_and_records_the_write_back(tmp_path, capsys):
    params = {"n_workers": 1, "rmax": 250.0, "ntimes": 2, "nfreqwin": 2, "npixel": 128,
              "cellsize": 0.0015, "nmajor": 1, "niter": 100, "flux_limit": 5.0,
              "write_model": True, "buffer_vis": "v", "buffer_img": "i"}  # fmt: skip
    (tmp_path / "p.json").write_text(json.dumps(params))
    code = main(["run", str(tmp_path / "p.json"), "--out", str(tmp_path / "d"), "--no-progress"])
    assert code == 0, capsys.readouterr().err
    vis = tmp_path / "d" / "v"
    manifest = json.loads((vis / "provenance.json").read_text())
    ms_names = sorted(p.name for p in vis.glob("*.ms"))
    assert len(ms_names) == 2 and set(ms_names) <= set(manifest["files"])
    assert "truth_skymodel.txt" in manifest["files"]
    assert manifest["stages"]["simulate"] > 0 and manifest["parameters"]["ntimes"] == 2
    (change,) = manifest["changes"]
    assert change["what"] == "ICAL wrote MODEL_DATA" and change["files"] == ms_names
    for folder in (vis, tmp_path / "d" / "i"):
        assert main(["verify", str(folder)]) == 0, capsys.readouterr().out
