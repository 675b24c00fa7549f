"""Primary-beam correction in ICAL: the average station beam on the image grid against a direct
computation, the corrected fluxes against the simulation's intrinsic ones (Airy and EveryBeam
beams), and when the products are (not) written."""

from __future__ import annotations

import json
import math
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from scipy.ndimage import map_coordinates
from scipy.special import j1

from casacore_ms_builder import MsSpec, build_ms, random_enu
from sdpbatch.cli import main
from sdpbatch.execution.cluster import dask_client
from sdpbatch.execution.primary_beam import ObservedBeam, primary_beam
from sdpbatch.execution.runner import InProcess, OnDask
from sdpbatch.execution.station_effects import average_power
from sdpbatch.io.everybeam_element import element_voltage
from sdpbatch.io.fits_image import read_fits_image
from sdpbatch.io.skymodel_file import read_sky_model
from sdpbatch.io.truth import read_truth
from sdpbatch.parameters import ParameterError, Parameters, parse_parameters
from sdpbatch.science.aperture_array import array_factor, horizon_directions, vogel_layout
from sdpbatch.science.assess import measure_source, sky_to_pixel
from sdpbatch.science.components import model_components, model_pixels
from sdpbatch.science.constants import SITE_LAT
from sdpbatch.science.observation import hour_angles
from sdpbatch.science.primary_beam import coarse_beam, pixel_to_sky

PHASE_CENTRE = (0.0, math.radians(-30.0))
OFFSETS = [  # (east, north) deg from the phase centre, intrinsic Jy at 100 MHz
    (0.15, -0.1, 10.0),
    (1.9, 0.3, 8.0),
    (-2.0, 2.0, 8.0),
    (0.5, -3.5, 7.0),
    (-2.8, -1.0, 7.0),
]
"""Sources from the centre out to 45 % of the Airy beam's power (0.18 of EveryBeam's) at
100 MHz."""
RUN = dict(
    n_workers=1, rmax=300.0, ntimes=2, nfreqwin=3, channels_per_window=3, phase_error=0.3,
    npixel=256, cellsize=0.0015, nmajor=3, niter=1000, threshold=0.005,
    fractional_threshold=0.05, scales=[0], nmoment=2, psf_support=64, epsilon=1e-6,
)  # fmt: skip
PREFIX = "ska_pipeline_ical"


def _sky_file(tmp_path):
    l_, m = np.radians([[e for e, _, _ in OFFSETS], [n for _, n, _ in OFFSETS]])
    ra, dec = pixel_to_sky(l_, m, npixel=0, cellsize=1.0, phase_centre=PHASE_CENTRE)  # (l, m)
    lines = ["Format = Name, Type, Ra, Dec, I, SpectralIndex, LogarithmicSI, "
             "ReferenceFrequency='100000000'"]  # fmt: skip
    for k, (a, d, (_, _, flux)) in enumerate(zip(ra, dec, OFFSETS, strict=True)):
        lines.append(f"s{k},POINT,{math.degrees(a)}deg,{math.degrees(d)}deg,{flux},[-0.7],true,1e8")
    path = tmp_path / "sky.txt"
    path.write_text("\n".join(lines) + "\n")
    return path, ra, dec


def _run(tmp_path, name, **values):
    sky, ra, dec = _sky_file(tmp_path)
    params = tmp_path / f"{name}.json"
    params.write_text(json.dumps({**RUN, "sky_model": str(sky), **values}))
    data = tmp_path / name
    assert main(["run", str(params), "--data-dir", str(data), "--no-progress"]) == 0
    return data / Parameters().buffer_img, ra, dec


def test_pixel_to_sky_inverts_sky_to_pixel():
    ix, iy = np.meshgrid(np.linspace(3.3, 1020.7, 7), np.linspace(0.0, 1023.0, 5))
    ra, dec = pixel_to_sky(ix, iy, npixel=1024, cellsize=0.0005, phase_centre=PHASE_CENTRE)
    back = sky_to_pixel(ra, dec, PHASE_CENTRE, 0.0005, 1024)
    np.testing.assert_allclose(back, (ix, iy), atol=1e-8)


@pytest.mark.parametrize(("grid", "passes"), [(32, True), (8, False)])
def test_airy_beam_image_is_the_direct_beam_at_every_pixel(grid, passes):
    """The Airy power at every pixel from its formula (angle from the pointing, HPBW 6.6 deg
    at 100 MHz): the grid of 32 interpolates it to 1e-4 (measured 6e-5 on this image; 1.6e-4
    at the seed's 1024 px x 0.0005 rad), a grid of 8 does not."""
    npix, cell, nu = 256, 0.0015, 1e8
    image = coarse_beam(
        lambda ra, dec: average_power(Parameters(), ra, dec, phase_centre=PHASE_CENTRE,
                                      nstations=1, frequencies=nu),
        npixel=npix, cellsize=cell, phase_centre=PHASE_CENTRE, grid=grid,
    ).image([1.0])  # fmt: skip
    ix = np.arange(npix)
    l_, m = (ix[:, None] - npix / 2) * cell, (ix[None, :] - npix / 2) * cell
    x = 1.616339948310703 * np.sqrt(l_**2 + m**2) / np.sin(np.radians(3.3))
    safe = np.where(x == 0, 1.0, x)
    direct = np.where(x == 0, 1.0, 2 * j1(safe) / safe) ** 2
    assert direct.min() < 0.005 and direct.max() == 1.0  # the image reaches the beam's skirt
    assert bool(np.abs(image - direct).max() < 1e-4) is passes


def test_everybeam_beam_image_is_the_mean_station_power_at_its_pixels():
    """At a few pixels: the mean over 3 stations (turned as the simulation turns them) and the
    2 hour angles of |array factor x element pattern / its value at the pointing|^2, built
    here from the aperture-array and EveryBeam functions; the grid interpolates it to 1e-3."""
    params, npix, cell, nu = Parameters(beam="everybeam", ntimes=2), 128, 0.002, 1e8
    image = coarse_beam(
        lambda ra, dec: average_power(params, ra, dec, phase_centre=PHASE_CENTRE, nstations=3,
                                      frequencies=nu),
        npixel=npix, cellsize=cell, phase_centre=PHASE_CENTRE, grid=24,
    ).image([1.0])  # fmt: skip
    ix, iy = np.array([64, 64, 80, 40, 100, 20]), np.array([64, 90, 50, 30, 100, 70])
    ra, dec = pixel_to_sky(ix, iy, npixel=npix, cellsize=cell, phase_centre=PHASE_CENTRE)
    has = hour_angles(2)
    s = horizon_directions(ra, dec, PHASE_CENTRE, has, SITE_LAT)  # (2, 6, 3)
    s0 = horizon_directions(*np.array(PHASE_CENTRE)[:, None], PHASE_CENTRE, has, SITE_LAT)[:, 0]
    turns = np.random.default_rng(np.random.SeedSequence(params.seed, spawn_key=(3,)))
    af = array_factor(vogel_layout(), turns.uniform(0, 2 * np.pi, 3), s, s0, np.array([nu]))
    theta, phi = np.arccos(s[..., 2]), np.arctan2(s[..., 1], s[..., 0])
    e = element_voltage(theta, phi, np.array([nu]))[..., 0]
    e0 = element_voltage(np.arccos(s0[:, 2]), np.arctan2(s0[:, 1], s0[:, 0]), np.array([nu]))
    direct = np.mean(np.abs(af[..., 0] * (e / e0)[:, None, :]) ** 2, axis=(0, 1))
    assert direct[0] == pytest.approx(1.0, abs=1e-9) and direct.min() < 0.5
    np.testing.assert_allclose(image[ix, iy], direct, atol=1e-3)


def _component_fluxes(components, ra, dec, nu):
    """The band-averaged flux of the components within 8 pixels of each source (the clean
    leaves a ring of negative components 2-3 pixels out; the sources are 20 pixels apart)."""
    at = np.array(sky_to_pixel(components.ra, components.dec, PHASE_CENTRE, 0.0015, 256))
    sources = np.array(sky_to_pixel(ra, dec, PHASE_CENTRE, 0.0015, 256))
    near = np.hypot(*(at[:, :, None] - sources[:, None, :])) < 8  # (component, source)
    return components.flux_at(nu).mean(axis=1) @ near


def _measured(image, ra, dec, cell=0.0015):
    ix, iy = sky_to_pixel(ra, dec, PHASE_CENTRE, cell, image.shape[0])
    image = np.nan_to_num(image)
    return np.array([measure_source(image, x, y)[0] for x, y in zip(ix, iy, strict=True)])


@pytest.mark.parametrize("beam", ["airy", "everybeam"])
def test_pb_corrected_fluxes_are_the_intrinsic_ones(tmp_path, beam):
    """The corrected image holds each source's intrinsic flux (the band average of its
    spectrum) within 2 % across the beam; the uncorrected one does not off axis."""
    img, ra, dec = _run(tmp_path, beam, beam=beam)
    restored = read_fits_image(img / f"{PREFIX}_restored.fits")[0][0]
    corrected = read_fits_image(img / f"{PREFIX}_restored_pb.fits")[0][0]
    power = read_fits_image(img / f"{PREFIX}_beam.fits")[0][0]
    nu = np.linspace(0.9e8, 1.1e8, 3)
    intrinsic = np.array([f * np.mean((nu / 1e8) ** -0.7) for *_, f in OFFSETS])
    truth = read_truth(img.parent / Parameters().buffer_vis)  # both skies, apart
    np.testing.assert_allclose(truth.intrinsic.flux_at(nu).mean(axis=1), intrinsic, rtol=1e-9)
    assert np.all(truth.sky.flux_at(nu).mean(axis=1) < 0.999 * intrinsic)  # apparent
    ix, iy = sky_to_pixel(ra, dec, PHASE_CENTRE, 0.0015, power.shape[0])
    at = map_coordinates(power, [ix, iy], order=1)
    used = at > 0.3
    assert used.sum() >= 4 and (at[used] < 0.7).sum() >= 2  # spread across the beam
    pb_ratio = _measured(corrected, ra, dec)[used] / intrinsic[used]
    apparent_ratio = _measured(restored, ra, dec)[used] / intrinsic[used]
    assert np.all(np.abs(pb_ratio - 1) < 0.02), pb_ratio
    assert np.sum(np.abs(apparent_ratio - 1) > 0.02) >= used.sum() - 1, apparent_ratio
    apparent = truth.sky.flux_at(nu).mean(axis=1)
    for name, expected in (("sources", apparent), ("sources_pb", intrinsic)):
        found = _component_fluxes(read_sky_model(img / f"{PREFIX}_{name}.txt"), ra, dec, nu)
        assert np.all(np.abs(found[used] / expected[used] - 1) < 0.02), (name, found / expected)
    qa = json.loads((img / "qa.json").read_text())
    assert qa["primary_beam"]["beam"] == beam
    in_qa = {s["name"]: s["pb_flux_ratio"] for s in qa["truth"]["brightest_sources"]}
    assert all(abs(in_qa[f"s{k}"] - 1) < 0.02 for k in np.flatnonzero(used))
    assert np.isnan(corrected[power < 0.005]).all() and np.isfinite(corrected[power >= 0.005]).all()


@pytest.mark.parametrize(("values", "written"), [
    ({"pb_correct": False}, False), ({"beam": "none"}, False),
    ({"beam": "none", "pb_correct": True}, True),
])  # fmt: skip
def test_pb_products_only_when_asked_or_a_beam_is_known(tmp_path, values, written):
    img, _, _ = _run(tmp_path, "run", **values, nmajor=1, niter=100)
    names = {p.name for p in img.iterdir()}
    pb = {f"{PREFIX}_{n}" for n in ("beam.fits", "restored_pb.fits", "sources.txt",
                                   "sources_pb.txt")}  # fmt: skip
    assert (pb <= names) is written and (pb & names == set()) is not written
    assert (json.loads((img / "qa.json").read_text())["primary_beam"] is not None) is written
    manifest = json.loads((img / "provenance.json").read_text())
    assert (pb <= set(manifest["files"])) is written
    if written:  # no beam: all ones, the corrected image is the restored one
        beam = read_fits_image(img / f"{PREFIX}_beam.fits")[0]
        assert np.all(beam == 1.0)


def test_pb_correct_true_without_a_known_beam_and_bad_values_are_refused(tmp_path, capsys):
    """A MeasurementSet sdpbatch did not simulate has no recorded beam: ``true`` is refused
    before any work, one line naming the flag; a word that is not a choice likewise."""
    ms = tmp_path / "foreign.ms"
    build_ms(ms, MsSpec(enu=random_enu(6, 300.0, seed=3), frequencies=np.array([1e8]),
                        ntimes=2, sources=[(1.0, 0.0, 0.0)]))  # fmt: skip
    for flag, named in (("true", "--pb-correct true: true, but the station beam"),
                        ("maybe", "--pb-correct maybe: expected true, false or auto")):  # fmt: skip
        code = main(["ical", str(ms), "--out", str(tmp_path / "img"), "--pb-correct", flag])
        err = capsys.readouterr().err
        errors = [line for line in err.splitlines() if " INFO " not in line]
        assert code == 2 and len(errors) == 1 and named in errors[0], err
        assert not (tmp_path / "img").exists()
    with pytest.raises(ParameterError, match="parameter 'pb_correct': expected true or false"):
        parse_parameters({"pb_correct": "auto"})  # JSON: null is auto


def test_model_components_hold_the_taylor_spectra_apparent_and_intrinsic():
    """Each model pixel a point at its direction whose spectrum is the Taylor polynomial at the
    blocks' frequencies (divided by the beam there for the intrinsic list); one whose
    polynomial changes sign within the band is flat at its mean."""
    model = np.zeros((2, 64, 64))
    model[:, 40, 20] = 2.0, -1.4  # I(t) = 2 - 1.4 t
    model[:, 10, 50] = -0.5, 0.2
    model[:, 30, 30] = 0.05, 1.0  # 0.05 + t: negative below 95 % of nu0
    nu = np.array([0.9e8, 1.0e8, 1.1e8])
    t = (nu - 1e8) / 1e8
    common = dict(cellsize=0.002, phase_centre=PHASE_CENTRE, reference_frequency=1e8,
                  frequencies=nu)  # fmt: skip
    apparent = model_components(model, **common)
    power = np.array([[0.9, 0.8, 0.7], [0.5, 0.4, 0.3], [1.0, 1.0, 1.0]])
    intrinsic = model_components(model, power=power, **common)
    ix, iy = model_pixels(model)
    assert sorted(zip(ix.tolist(), iy.tolist(), strict=True)) == [(10, 50), (30, 30), (40, 20)]
    spectra = model[0][ix, iy][:, None] + model[1][ix, iy][:, None] * t
    exact = ix != 30
    np.testing.assert_allclose(apparent.flux_at(nu)[exact], spectra[exact], rtol=1e-9)
    np.testing.assert_allclose(intrinsic.flux_at(nu)[exact], (spectra / power)[exact], rtol=1e-9)
    np.testing.assert_allclose(apparent.flux_at(nu)[~exact], 0.05, rtol=1e-9)  # the mean
    back = sky_to_pixel(apparent.ra, apparent.dec, PHASE_CENTRE, 0.002, 64)
    np.testing.assert_allclose(back, (ix, iy), atol=1e-8)


def test_the_beam_grid_split_over_dask_workers_is_the_in_process_one():
    """The coarse grid's directions in one task per worker thread, on two worker processes
    (EveryBeam's data found there too): the same beam as in this process."""
    observed = ObservedBeam(simulation=Parameters(beam="everybeam", ntimes=1), nstations=2,
                            record=Path("simulation.json"))  # fmt: skip
    result = SimpleNamespace(
        npixel=64, cellsize=0.004, phase_centre=PHASE_CENTRE, frequencies=np.array([1e8, 1.05e8]),
        block_weights=np.array([1.0, 3.0]), restored=np.ones((64, 64)),
    )  # fmt: skip
    here = primary_beam(observed, result, InProcess())
    with dask_client(2, threads_per_worker=1) as client:
        there = primary_beam(observed, result, OnDask(client))
    assert here.beam.min() < 0.05 and here.beam.max() > 0.99
    np.testing.assert_array_equal(there.beam, here.beam)
    np.testing.assert_array_equal(there.grid.values, here.grid.values)
