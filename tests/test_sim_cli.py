"""``sdpbatch simulate``: products, reproducibility, Dask = in-process, and refused inputs."""

from __future__ import annotations

import json

import numpy as np
import pytest
from casacore import tables

from sdpbatch.cli import main
from sdpbatch.execution.cluster import open_runner
from sdpbatch.execution.simulate import ms_name, simulate
from sdpbatch.io.gaintable import read_gain_table
from sdpbatch.parameters import Parameters

SMALL = {"n_workers": 1, "rmax": 300.0, "ntimes": 3, "nfreqwin": 3}


def _params_file(tmp_path, name="params.json", **values):
    path = tmp_path / name
    path.write_text(json.dumps(values))
    return path


def _data(path):
    with tables.table(str(path), ack=False) as t:
        return t.getcol("DATA")


def test_simulate_writes_products(tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["simulate", str(_params_file(tmp_path, **SMALL)), "--out", str(out)]) == 0
    printed = capsys.readouterr().out.splitlines()
    names = sorted(p.name for p in out.iterdir())
    expected = [ms_name(i) for i in range(3)] + [
        "catalogue_skymodel.txt",
        "simulation.json",
        "truth_gains.h5",
        "truth_intrinsic_skymodel.txt",
        "truth_skymodel.txt",
    ]
    assert names == sorted([*expected, "provenance.json"])
    assert all(any(line.endswith(n) for line in printed) for n in expected)
    assert "3 windows, 3 channels in all x 3 times" in printed[-1]
    summary = json.loads((out / "simulation.json").read_text())
    gains = read_gain_table(out / "truth_gains.h5")
    assert gains.gains.shape == (3, summary["nstations"], 3)
    assert len(gains.antenna_names) == summary["nstations"]
    assert summary["nbaselines"] == summary["nstations"] * (summary["nstations"] - 1) // 2


def test_same_seed_identical_other_seed_different(tmp_path):
    runs = {}
    for label, seed in (("a", 11), ("b", 11), ("c", 12)):
        out = tmp_path / label
        params = _params_file(tmp_path, f"{label}.json", seed=seed, **SMALL)
        assert main(["simulate", str(params), "--out", str(out), "--no-progress"]) == 0
        runs[label] = (_data(out / ms_name(1)), read_gain_table(out / "truth_gains.h5").gains)
    assert runs["a"][0].tobytes() == runs["b"][0].tobytes()
    np.testing.assert_array_equal(runs["a"][1], runs["b"][1])
    assert not np.allclose(np.angle(runs["a"][1]), np.angle(runs["c"][1]))
    assert not np.allclose(runs["a"][0], runs["c"][0])
    phases = np.angle(runs["a"][1])
    assert 0.7 < phases.std() < 1.1  # phase_error 1 rad (wrapped)


def test_default_layout_rmax_750_counts(tmp_path):
    out = tmp_path / "out"
    params = _params_file(tmp_path, n_workers=1, ntimes=1, nfreqwin=1)
    assert main(["simulate", str(params), "--out", str(out), "--no-progress"]) == 0
    with tables.table(str(out / ms_name(0)), ack=False) as t:
        assert t.nrows() == 29_161
    with tables.table(str(out / ms_name(0) / "ANTENNA"), ack=False) as t:
        assert t.nrows() == 242


def test_dask_workers_write_what_the_in_process_run_writes(tmp_path):
    params = Parameters(rmax=300.0, ntimes=2, nfreqwin=2, n_workers=2, add_noise=True)
    local = simulate(params, tmp_path / "local")
    with open_runner(2) as runner:
        remote = simulate(params, tmp_path / "dask", runner=runner)
    for a, b in zip(local.ms_paths, remote.ms_paths, strict=True):
        assert _data(a).tobytes() == _data(b).tobytes()


BAD = [
    ({"freq_min": 1.2e8, "freq_max": 1.1e8}, "freq_min"),
    ({"nfreqwin": 0}, "nfreqwin"),
    ({"ntimes": 0}, "ntimes"),
    ({"dec": -91.0}, "dec"),
    ({"rmax": 5.0}, "rmax"),
    ({"colour": "blue"}, "colour"),
    ({"ntimes": "five"}, "ntimes"),
    ({"buffer_vis": "../escape"}, "buffer_vis"),
    ({"layout": "no-such-layout.txt"}, "layout"),
    ({"sky_model": "no-such-sky.txt"}, "sky_model"),
    ({"beam": "gaussian"}, "beam"),
    ({"ionosphere_rms_phase": -0.5}, "ionosphere_rms_phase"),
    ({"ionosphere_scale_km": 0.0}, "ionosphere_scale_km"),
    ({"ionosphere_speed": 11.0}, "ionosphere_speed"),
]


@pytest.mark.parametrize(("values", "field"), BAD)
def test_bad_parameters_are_refused_and_nothing_is_written(tmp_path, capsys, values, field):
    out = tmp_path / "out"
    params = _params_file(tmp_path, **{**SMALL, **values})
    assert main(["simulate", str(params), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert f"'{field}'" in err
    assert not out.exists() or not any(out.iterdir())


def test_rmax_error_names_the_smallest_useful_rmax(tmp_path, capsys):
    params = _params_file(tmp_path, **{**SMALL, "rmax": 5.0})
    assert main(["simulate", str(params), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "keeps" in err and "use rmax >=" in err
