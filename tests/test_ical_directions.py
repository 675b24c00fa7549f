"""ICAL with calibration per direction (the D term) on a MeasurementSet whose bright sources
each carry their own station phases (an ionosphere seen through different pierce points)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from casacore_ms_builder import MsSpec, build_ms, random_enu
from sdpbatch.cli import main
from sdpbatch.execution.cluster import dask_client
from sdpbatch.execution.ical import IcalSettings, driver
from sdpbatch.execution.ical.directions import choose_directions, facet_map, facet_part
from sdpbatch.execution.ical.driver import run_ical
from sdpbatch.execution.runner import OnDask
from sdpbatch.io.checkpoint import read_checkpoint
from sdpbatch.io.gaintable import read_gain_terms
from sdpbatch.io.skymodel_file import write_sky_model
from sdpbatch.io.truth import read_ionosphere, read_truth
from sdpbatch.parameters import ParameterError, Parameters, parse_parameters
from sdpbatch.science.assess import gain_phase_error
from sdpbatch.science.directions import radec_of
from sdpbatch.science.skymodel import SkyModel, lmn

NPIX, CELL = 256, 0.0005
SOURCES = [(8.0, 0.0123, -0.0071), (5.0, -0.035, 0.028), (4.0, 0.041, 0.033),
           (3.0, -0.022, -0.043)]  # fmt: skip
"""(S Jy, l, m): four bright sources, off the pixel grid, each its own direction."""
NTIMES, NANT = 3, 30


@pytest.fixture(scope="module")
def observation(tmp_path_factory):
    """The MeasurementSet and the phases (nsrc, ntimes, nant) each source was given."""
    rng = np.random.default_rng(4)
    phases = rng.normal(0, 0.8, (len(SOURCES), 1, NANT))
    phases = phases + rng.normal(0, 0.1, (len(SOURCES), NTIMES, NANT))  # a slow drift
    spec = MsSpec(
        enu=random_enu(NANT, 600.0, seed=11),
        frequencies=np.array([96e6, 99e6, 102e6, 105e6]),
        ntimes=NTIMES,
        sources=SOURCES,
        source_gains=np.exp(1j * phases),
        correlations=("XX", "YY"),
    )
    path = tmp_path_factory.mktemp("dd") / "dd.ms"
    build_ms(path, spec)
    return path, spec, phases


def _ical(tmp_path, ms, context: str, capsys) -> dict:
    # a shallow clean per cycle (self-calibration's practice): what the first cycles clean
    # of sources whose phases are still wrong stays in the model as spurious components
    params = dict(n_workers=1, npixel=NPIX, cellsize=CELL, nmajor=8, niter=200,
                  threshold=0.001, fractional_threshold=0.3, scales=[0], nmoment=1,
                  psf_support=64, epsilon=1e-6, calibration_model="none")  # fmt: skip
    file = tmp_path / f"params-{context}.json"
    file.write_text(json.dumps(params))
    out = tmp_path / f"img-{context}"
    code = main(["ical", str(ms), "--out", str(out), "--params", str(file), "--no-progress",
                 "--context", context, "--directions", str(len(SOURCES))])  # fmt: skip
    assert code == 0, capsys.readouterr().err
    return out


def test_directions_raise_the_dynamic_range_and_find_the_phases(tmp_path, observation, capsys):
    ms, spec, phases = observation
    plain = json.loads((_ical(tmp_path, ms, "T", capsys) / "qa.json").read_text())
    out = _ical(tmp_path, ms, "TD", capsys)
    qa = json.loads((out / "qa.json").read_text())
    dr_t, dr_td = plain["restored"]["dynamic_range"], qa["restored"]["dynamic_range"]
    print(f"dynamic range T {dr_t:.0f}, TD {dr_td:.0f}")  # measured: 135, 661
    assert dr_td > 3 * dr_t
    assert "directions" not in plain and len(qa["directions"]) == len(SOURCES)
    assert any("D" in c["solved"] for c in qa["cycles"])
    terms = read_gain_terms(out / "ska_pipeline_ical_gains.h5")
    d = terms["D"]
    assert d.directions == [f"Dir{k:02d}" for k in range(len(SOURCES))]
    assert d.gains.shape == (NTIMES, NANT, 1, len(SOURCES))
    centres = lmn(*d.direction_radec.T, spec.phase_centre)[:, :2]
    for k, (_, l, m) in enumerate(SOURCES):
        nearest = int(np.argmin(np.hypot(centres[:, 0] - l, centres[:, 1] - m)))
        # the flux-weighted mean of the cluster: the source and what was cleaned near it
        assert np.hypot(centres[nearest, 0] - l, centres[nearest, 1] - m) < 5 * CELL
        total = terms["T"].gains[:, :, 0] * d.gains[:, :, 0, nearest]  # T and D together
        error = gain_phase_error(total, np.exp(1j * phases[k]), spec.enu)
        print(f"source {k}: phase error {error:.4f} rad")  # measured: 0.012 to 0.032
        assert error < 0.05


def test_stopped_and_resumed_with_directions_gives_the_same_numbers(
    observation, tmp_path, monkeypatch
):
    """The D term's centres, gains and the model they were solved against are in the
    checkpoint; the facets predicted again give the uninterrupted run's numbers."""
    ms = observation[0]
    params = Parameters(npixel=NPIX, cellsize=CELL, nmajor=3, niter=200, threshold=0.001,
                        fractional_threshold=0.3, scales=[0], nmoment=1, psf_support=64,
                        calibration_model="none", calibration_context="TD",
                        ndirections=len(SOURCES))  # fmt: skip
    uninterrupted = run_ical([ms], params)
    saved, real = tmp_path / "img.checkpoint", driver.major_cycle

    def stopped(*args):
        if args[-1] == 3:
            raise KeyboardInterrupt
        return real(*args)

    monkeypatch.setattr(driver, "major_cycle", stopped)
    with pytest.raises(KeyboardInterrupt):
        run_ical([ms], params, checkpoint=saved)
    monkeypatch.undo()
    checkpoint = read_checkpoint(saved)
    assert checkpoint.meta["next_cycle"] == 3 and "directions" in checkpoint.meta["directions"]
    resumed = run_ical([ms], params, checkpoint=saved, resume=checkpoint)
    assert np.array_equal(uninterrupted.restored, resumed.restored)
    assert np.array_equal(uninterrupted.directions.gains, resumed.directions.gains)
    assert np.array_equal(uninterrupted.directions.centres, resumed.directions.centres)
    assert np.array_equal(uninterrupted.solutions["T"].gains, resumed.solutions["T"].gains)


@pytest.mark.parametrize(
    ("flag", "value"), [("--directions", "0"), ("--directions", "many"), ("--context", "TDG")]
)
def test_bad_direction_flags_are_refused_in_one_line(observation, tmp_path, capsys, flag, value):
    out = tmp_path / "o"
    assert main(["ical", str(observation[0]), "--out", str(out), flag, value]) == 2
    err = capsys.readouterr().err.strip()
    assert flag in err and "\n" not in err
    assert not out.exists()


def test_ndirections_from_a_file_is_checked():
    with pytest.raises(ParameterError, match="ndirections"):
        parse_parameters({"ndirections": 0})
    assert parse_parameters({"ndirections": 3, "calibration_context": "TD"}).ndirections == 3


def test_run_with_an_ionosphere_finds_the_screen_in_each_direction(tmp_path, capsys):
    """`sdpbatch run` at reduced size: four sources seen through a simulated TEC screen whose
    phases differ by ~0.2 rad between them (after the gradient self-calibration cannot know);
    T and D together give each direction's screen phases to a few hundredths of a radian."""
    sources = np.array([(10.0, 0.01, -0.005), (6.0, -0.05, 0.04), (5.0, 0.055, 0.045),
                        (4.0, -0.03, -0.06)])  # fmt: skip
    radec = radec_of(sources[:, 1], sources[:, 2], (0.0, np.radians(-30.0)))
    sky = SkyModel(radec[:, 0], radec[:, 1], sources[:, 0], np.full(4, 1e8), np.zeros((4, 1)),
                   [f"s{k}" for k in range(4)])  # fmt: skip
    write_sky_model(tmp_path / "sky.txt", sky)
    params = dict(n_workers=1, rmax=300.0, ntimes=3, nfreqwin=3, cellsize=0.0015, npixel=256,
                  nmajor=4, niter=500, scales=[0], psf_support=64, nmoment=1, epsilon=1e-6,
                  sky_model=str(tmp_path / "sky.txt"), phase_error=0.0,
                  ionosphere_rms_phase=1.0, ionosphere_scale_km=0.3,
                  calibration_context="TD", ndirections=4)  # fmt: skip
    (tmp_path / "p.json").write_text(json.dumps(params))
    data = tmp_path / "data"
    assert main(["run", str(tmp_path / "p.json"), "--data-dir", str(data), "--no-progress"]) == 0
    vis = next(data.glob("*-vis"))
    terms = read_gain_terms(next(data.glob("*-img")) / "ska_pipeline_ical_gains.h5")
    screen = read_ionosphere(vis / "truth_ionosphere.h5")
    enu = read_truth(vis).gains.antenna_positions
    centres = lmn(*terms["D"].direction_radec.T, (0.0, np.radians(-30.0)))[:, :2]
    for k, (_, l, m) in enumerate(sources):
        nearest = int(np.argmin(np.hypot(centres[:, 0] - l, centres[:, 1] - m)))
        solved = terms["T"].gains[:, :, 0] * terms["D"].gains[:, :, 0, nearest]
        true = np.exp(1j * screen["phase"][:, :, k])  # at 100 MHz, the band's centre
        alone = gain_phase_error(np.ones_like(true), true, enu)
        error = gain_phase_error(solved, true, enu)
        print(f"source {k}: screen {alone:.3f} rad, error {error:.4f} rad")
        assert alone > 0.15 and error < 0.05  # measured: screen 0.21-0.27, error 0.005-0.03


def test_directions_of_a_model_image_and_its_facets():
    """Centres from a model's pixels (l along the first axis), its facets cover every pixel
    once; an empty model has no direction."""
    model = np.zeros((1, 64, 64))
    model[0, 40, 32], model[0, 41, 32], model[0, 10, 50] = 5.0, 1.0, 2.0
    centres = choose_directions(model, 4, 0.01)
    np.testing.assert_allclose(centres, [[(8 + 1.0 / 6) * 0.01, 0.0], [-0.22, 0.18]])
    facets = facet_map(model, centres, 0.01)
    parts = [facet_part(model, facets, d) for d in range(len(centres))]
    np.testing.assert_array_equal(sum(parts), model)
    assert parts[0][0, 40, 32] == 5.0 and parts[1][0, 10, 50] == 2.0
    assert choose_directions(np.zeros((1, 8, 8)), 4, 0.01).shape == (0, 2)


def test_directions_split_over_two_workers_equal_in_process(observation):
    """Time chunks spilled to scratch, two groups on a Dask cluster (each predicting its
    facets and summing its cells): the in-process result within the solver's tolerance."""
    ms = observation[0]
    params = Parameters(npixel=NPIX, cellsize=CELL, nmajor=3, niter=200, threshold=0.001,
                        fractional_threshold=0.3, scales=[0], nmoment=1, psf_support=64,
                        calibration_model="none", calibration_context="TD",
                        ndirections=len(SOURCES))  # fmt: skip
    settings = IcalSettings(chunk_visibilities=2000, group_visibilities=1)  # one time a chunk
    alone = run_ical([ms], params, settings=settings)
    with dask_client(2, threads_per_worker=1) as client:
        split = run_ical([ms], params, runner=OnDask(client), settings=settings)
    assert alone.differences(split, image_rtol=1e-6, gain_atol=1e-6) == []
    np.testing.assert_allclose(split.directions.gains, alone.directions.gains, atol=1e-6)
