"""Checkpoints and resume: an ICAL run stopped anywhere (an exception at every cycle boundary,
SIGKILL at five points of its timeline) and resumed gives the uninterrupted run's products;
1 and 2 workers and other chunkings give the same images; a checkpoint of another run is
refused; `run --resume` reuses a complete simulation."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from astropy.io import fits

from casacore_ms_builder import MsSpec, build_ms, random_enu
from sdpbatch.cli import main
from sdpbatch.execution.ical import driver
from sdpbatch.execution.ical.driver import run_ical
from sdpbatch.execution.ical.settings import IcalSettings
from sdpbatch.io.checkpoint import read_checkpoint
from sdpbatch.io.gaintable import read_gain_table
from sdpbatch.parameters import Parameters

PARAMS = dict(
    npixel=256,
    cellsize=0.0005,
    nmajor=5,
    niter=1000,
    threshold=0.001,
    fractional_threshold=0.05,
    scales=[0],
    nmoment=2,
    psf_support=64,
    calibration_context="TG",
    first_selfcal_G=2,
)
IMAGES = [f"ska_pipeline_ical_{k}{c}.fits" for k in ("restored", "residual", "deconvolved")
          for c in ("", "_cube")]  # fmt: skip


@pytest.fixture(scope="module")
def observation(tmp_path_factory):
    path = tmp_path_factory.mktemp("resume") / "obs.ms"
    rng = np.random.default_rng(21)
    spec = MsSpec(
        enu=random_enu(30, 600.0, seed=11),
        frequencies=np.array([96e6, 99e6, 102e6, 105e6]),
        ntimes=3,
        sources=[(5.0, 0.0123, -0.0071), (1.0, -0.031, 0.022)],
        gains=np.exp(1j * rng.normal(0, 0.7, (3, 30))),
    )
    build_ms(path, spec)
    return path


@pytest.fixture(scope="module")
def uninterrupted(observation):
    return run_ical([observation], Parameters(**PARAMS))


def _same(a, b) -> None:
    """Bit for bit: images, model and every term's gains."""
    assert np.array_equal(a.restored, b.restored)
    assert np.array_equal(a.residual_taylor, b.residual_taylor)
    assert np.array_equal(a.model_taylor, b.model_taylor)
    assert set(a.solutions) == set(b.solutions)
    for term in a.solutions:
        assert np.array_equal(a.solutions[term].gains, b.solutions[term].gains)
    assert [c.to_dict()["peak"] for c in a.cycles] == [c.to_dict()["peak"] for c in b.cycles]


@pytest.mark.parametrize("stop", [1, 2, 3, 4, 5, "last_pass", "finish"])
def test_stopped_at_any_cycle_and_resumed_gives_the_same_numbers(
    observation, uninterrupted, tmp_path, monkeypatch, stop
):
    params, saved = Parameters(**PARAMS), tmp_path / "img.checkpoint"
    where = "major_cycle" if isinstance(stop, int) else stop
    real = getattr(driver, where)

    def stopped(*args, **kwargs):
        if not isinstance(stop, int) or args[-1] == stop:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(driver, where, stopped)
    with pytest.raises(KeyboardInterrupt):
        run_ical([observation], params, checkpoint=saved)
    monkeypatch.undo()
    checkpoint = read_checkpoint(saved)
    assert checkpoint.meta["next_cycle"] == (stop if isinstance(stop, int) else 6)
    # no visibilities: sparse models and gains; after the last pass also its images (the
    # residual of each channel block and the PSF, 256^2 each)
    assert ("ending" in checkpoint.meta) == (stop == "finish")
    images = [a.nbytes for k, a in checkpoint.arrays.items() if k.startswith("ending.")]
    assert len(images) <= 4 + 1 + 2 + 2 * 2  # blocks, psf, moments, T and G intervals
    assert sum(a.nbytes for a in checkpoint.arrays.values()) - sum(images) < 200_000
    blocks = checkpoint.meta["plan"]["channel_blocks"]  # [first channel, channels, Hz]
    assert blocks[0][0] == 0 and sum(b[1] for b in blocks) == 4
    resumed = run_ical([observation], params, checkpoint=saved, resume=checkpoint)
    _same(uninterrupted, resumed)
    assert resumed.resumed_from == [checkpoint.meta["next_cycle"] - 1]
    assert len(resumed.cycles) == 6


def test_other_chunks_give_the_same_images_within_the_gridding_accuracy(observation):
    # each gridder call approximates to grid_epsilon (its kernel chosen for its own data):
    # other time chunks agree to that accuracy; here 1e-6, so to 1e-6 of the peak
    params = Parameters(**PARAMS, grid_epsilon=1e-6)
    whole = run_ical([observation], params)
    chunked = run_ical(
        [observation], params, settings=IcalSettings(chunk_visibilities=2000)
    )  # two time chunks per channel block of 2 x 1395 rows
    peak = np.abs(whole.restored).max()
    assert np.abs(chunked.restored - whole.restored).max() < 1e-6 * peak


def test_run_to_run_on_one_layout_is_bit_for_bit(observation, uninterrupted):
    _same(uninterrupted, run_ical([observation], Parameters(**PARAMS)))


def _ical(observation, out, *extra) -> list[str]:
    return [sys.executable, "-m", "sdpbatch.cli", "ical", str(observation), "--out", str(out),
            "--params", str(out.parent / "p.json"), "--no-progress", *extra]  # fmt: skip


def _killed_at(command: list[str], pattern: str) -> str:
    """Run ``command``; SIGKILL it as soon as a log line contains ``pattern``; its log."""
    proc = subprocess.Popen(command, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True)
    seen = []
    deadline = time.monotonic() + 120
    for line in proc.stderr:
        seen.append(line)
        if pattern in line or time.monotonic() > deadline:
            os.kill(proc.pid, signal.SIGKILL)
            break
    proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL, "".join(seen[-5:])
    return "".join(seen)


def _products(out) -> dict[str, np.ndarray]:
    found = {name: fits.getdata(out / name) for name in IMAGES}
    gains = read_gain_table(out / "ska_pipeline_ical_gains.h5")
    return {**found, "gains": gains.gains}


def test_sigkill_at_five_points_then_resume_gives_the_uninterrupted_products(observation, tmp_path):
    (tmp_path / "p.json").write_text(json.dumps({**PARAMS, "n_workers": 1}))
    whole = tmp_path / "whole"
    subprocess.run(_ical(observation, whole), check=True, capture_output=True, timeout=300)
    expected = _products(whole)
    points = ["ICAL image", "ICAL cycle 1: peak", "ICAL cycle 3: G solved",
              "ICAL cycle 5: peak", "ICAL final"]  # fmt: skip
    for point in points:
        out = tmp_path / f"killed-{len(point)}"
        _killed_at(_ical(observation, out), point)
        done = subprocess.run(_ical(observation, out, "--resume"), capture_output=True,
                              text=True, timeout=300)  # fmt: skip
        assert done.returncode == 0, done.stderr[-2000:]
        got = _products(out)
        for name, value in expected.items():
            assert np.array_equal(got[name], value), (point, name)
        manifest = json.loads((out / "provenance.json").read_text())
        resumed = [line for line in done.stderr.splitlines() if "ICAL resumed after" in line]
        assert len(resumed) == len(manifest["resumed_from"]) <= 1, point
        if point == "ICAL final":  # killed while writing: the last pass is not made again
            assert resumed and "only the products are left" in resumed[0]
            assert "ICAL cycle" not in done.stderr
        assert not (tmp_path / f"{out.name}.checkpoint").exists()  # gone with the products
        assert not list(tmp_path.glob("*.partial-*"))


def test_a_checkpoint_of_other_parameters_is_refused_in_one_line(observation, tmp_path, capsys):
    (tmp_path / "p.json").write_text(json.dumps(PARAMS))
    out = tmp_path / "img"
    _killed_at(_ical(observation, out), "ICAL cycle 2: peak")
    assert read_checkpoint(tmp_path / "img.checkpoint") is not None
    code = main(["ical", str(observation), "--out", str(out), "--params",
                 str(tmp_path / "p.json"), "-niter", "500", "--resume"])  # fmt: skip
    assert code == 2
    (err,) = [line for line in capsys.readouterr().err.splitlines() if "error" in line]
    assert err.startswith("sdpbatch ical: error: parameter 'resume': the checkpoint ")
    assert err.endswith("was made with niter 1000 there, 500 now")


def test_one_and_two_workers_and_threads_give_the_same_images(observation, tmp_path, capsys):
    """Every ducc0 call computes on one thread and the groups come from the data alone, so
    the layout changes nothing: 1 and 2 workers, and this process on 1 or 2 threads, give
    the same images bit for bit (docs/architecture.md)."""
    found = {}
    for layout in ({"n_workers": 1}, {"n_workers": 2}, {"threads_per_worker": 2}, {}):
        (tmp_path / "p.json").write_text(json.dumps({**PARAMS, **layout}))
        out = tmp_path / f"out{len(found)}"
        assert main(_ical(observation, out)[3:]) == 0, capsys.readouterr().err
        found[json.dumps(layout)] = _products(out)
    first = next(iter(found.values()))
    for layout, products in found.items():
        for name in [*IMAGES, "gains"]:
            assert np.array_equal(first[name], products[name]), (layout, name)


def test_run_resume_reuses_a_complete_simulation(tmp_path, capsys, caplog):
    params = {"n_workers": 1, "rmax": 250.0, "ntimes": 2, "nfreqwin": 2, "npixel": 128,
              "cellsize": 0.0015, "nmajor": 1, "niter": 100, "flux_limit": 5.0,
              "buffer_vis": "v", "buffer_img": "i"}  # fmt: skip
    (tmp_path / "p.json").write_text(json.dumps(params))
    command = ["run", str(tmp_path / "p.json"), "--out", str(tmp_path / "d"), "--no-progress"]
    assert main(command) == 0
    ms = sorted((tmp_path / "d" / "v").glob("*.ms"))
    written = [(p / "table.f0").stat().st_mtime_ns for p in ms]
    caplog.clear()
    assert main([*command, "--resume"]) == 0
    messages = [r.getMessage() for r in caplog.records]
    assert any(m.startswith("Reusing the simulation in") for m in messages)
    assert "Running simulation pipeline" not in messages
    assert [(p / "table.f0").stat().st_mtime_ns for p in ms] == written
    (tmp_path / "d" / "v" / "truth_gains.h5").write_bytes(b"changed")
    caplog.clear()
    assert main([*command, "--resume"]) == 0  # no longer complete: simulated again
    assert "Running simulation pipeline" in [r.getMessage() for r in caplog.records]
