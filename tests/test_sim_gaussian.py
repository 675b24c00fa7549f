"""Gaussian components: the analytic visibility against a numerical integration of the image,
the WSClean/DP3 conventions (FWHM axes, position angle north through east), the text format."""

from __future__ import annotations

import math

import numpy as np
import pytest

from sdpbatch.io.skymodel_file import SkyModelFileError, read_sky_model, write_sky_model
from sdpbatch.science.constants import C
from sdpbatch.science.predict import predict_point_sources, predict_point_sources_by_station
from sdpbatch.science.skymodel import SkyModel, apparent_sky, gaussian_taper_matrix, lmn

ARCSEC = math.radians(1 / 3600)
PC = (math.radians(30.0), math.radians(-30.0))
FREQS = np.array([1.2e8, 1.5e8])


def _gaussian(ra, dec, flux, major_as, minor_as, pa_deg) -> SkyModel:
    return SkyModel(
        ra=np.array([ra]),
        dec=np.array([dec]),
        flux=np.array([flux]),
        ref_freq=np.array([1.5e8]),
        spectral_index=np.zeros((1, 1)),
        names=["g"],
        major=np.array([major_as * ARCSEC]),
        minor=np.array([minor_as * ARCSEC]),
        position_angle=np.array([math.radians(pa_deg)]),
    )


def _integrate(sky: SkyModel, uvw: np.ndarray, freqs: np.ndarray, n: int = 81) -> np.ndarray:
    """Visibilities of the Gaussian's image by a direct sum over a fine grid of its pixels.

    The image is sampled on the component's own tangent plane (SIN projection about the
    component), each sample a point of flux ``brightness * pixel area``, placed on the sphere
    and summed with the full phase (including the w term) about the phase centre.
    """
    sig_maj = sky.major[0] / (2 * math.sqrt(2 * math.log(2)))
    sig_min = sky.minor[0] / (2 * math.sqrt(2 * math.log(2)))
    pa = sky.position_angle[0]
    t = np.linspace(-6, 6, n)
    step = t[1] - t[0]
    a, b = np.meshgrid(t * sig_maj, t * sig_min, indexing="ij")  # along major, minor axes
    east = a * math.sin(pa) + b * math.cos(pa)
    north = a * math.cos(pa) - b * math.sin(pa)
    weight = np.exp(-0.5 * (t[:, None] ** 2 + t[None, :] ** 2)) * step * step / (2 * math.pi)
    ra0, dec0 = sky.ra[0], sky.dec[0]
    d = np.array([math.cos(dec0) * math.cos(ra0), math.cos(dec0) * math.sin(ra0), math.sin(dec0)])
    e = np.array([-math.sin(ra0), math.cos(ra0), 0.0])
    nn = np.cross(d, e)
    up = np.sqrt(1 - east**2 - north**2)
    direction = up[..., None] * d + east[..., None] * e + north[..., None] * nn
    ra = np.arctan2(direction[..., 1], direction[..., 0]).ravel()
    dec = np.arcsin(direction[..., 2]).ravel()
    directions = lmn(ra, dec, PC)
    flux = (sky.flux[0] * weight.ravel())[:, None] * np.ones(freqs.size)
    return predict_point_sources(uvw, freqs, directions, flux)


def _analytic(sky: SkyModel, uvw: np.ndarray) -> np.ndarray:
    return predict_point_sources(
        uvw,
        FREQS,
        lmn(sky.ra, sky.dec, PC),
        sky.flux_at(FREQS),
        shape=gaussian_taper_matrix(sky, PC),
    )


def test_gaussian_at_the_phase_centre_is_exact_on_a_plane():
    """With w = 0 the image is the plane Fourier transform: equal to quadrature precision."""
    rng = np.random.default_rng(1)
    uvw = np.column_stack([rng.normal(0, 500, (300, 2)), np.zeros(300)])
    sky = _gaussian(*PC, 4.0, 150.0, 60.0, 30.0)
    numeric = _integrate(sky, uvw, FREQS)
    point = predict_point_sources(uvw, FREQS, lmn(sky.ra, sky.dec, PC), sky.flux_at(FREQS))
    assert np.median(np.abs(point - numeric)) > 0.15  # most baselines resolve the component
    np.testing.assert_allclose(_analytic(sky, uvw), numeric, rtol=0, atol=1e-7)


@pytest.mark.parametrize(
    ("offset_deg", "pa_deg"), [((0.0, 0.0), 30.0), ((2.5, -1.5), 110.0), ((0.0, 3.0), -20.0)]
)
def test_gaussian_matches_integrated_image(offset_deg, pa_deg):
    """Anywhere in the field, with w: equal but for the sky's curvature across the component.

    The taper is evaluated on the component's tangent plane; the curvature adds the phase
    ``-pi w' x^2`` (x the offset from the component's centre, w' the baseline towards it in
    wavelengths), i.e. an error of at most ~``S pi |uvw| (s_maj^2 + s_min^2)``.
    """
    rng = np.random.default_rng(1)
    uvw = rng.normal(0, 500, (300, 3))  # up to ~2.5 km at 150 MHz: ~1000 wavelengths
    ra = PC[0] + math.radians(offset_deg[0]) / math.cos(PC[1])
    dec = PC[1] + math.radians(offset_deg[1])
    sky = _gaussian(ra, dec, 4.0, 150.0, 60.0, pa_deg)
    numeric = _integrate(sky, uvw, FREQS)
    sigma2 = (sky.major[0] ** 2 + sky.minor[0] ** 2) / (8 * math.log(2))
    wavelengths = np.linalg.norm(uvw, axis=1)[:, None] * FREQS[None, :] / C
    bound = 1.5 * 4.0 * math.pi * wavelengths * sigma2 + 1e-7
    error = np.abs(_analytic(sky, uvw) - numeric)
    assert np.all(error <= bound)
    assert error.max() > 0.05 * bound.max()  # the bound is tight: the estimate is the effect


def test_position_angle_is_north_through_east():
    """PA 0: major axis north-south, so the visibility falls off fastest along v."""
    sky = _gaussian(*PC, 1.0, 200.0, 50.0, 0.0)
    shape = gaussian_taper_matrix(sky, PC)
    along_u = np.array([[800.0, 0.0, 0.0]])
    along_v = np.array([[0.0, 800.0, 0.0]])
    direction = lmn(sky.ra, sky.dec, PC)
    vu = abs(predict_point_sources(along_u, FREQS[:1], direction, [[1.0]], shape=shape)[0, 0])
    vv = abs(predict_point_sources(along_v, FREQS[:1], direction, [[1.0]], shape=shape)[0, 0])
    assert vv < vu
    # and the taper along v is that of the FWHM of the major axis
    sigma = 200.0 * ARCSEC / (2 * math.sqrt(2 * math.log(2)))
    expected = math.exp(-2 * math.pi**2 * (sigma * 800.0 * FREQS[0] / C) ** 2)
    assert vv == pytest.approx(expected, rel=1e-12)
    turned = _gaussian(*PC, 1.0, 200.0, 50.0, 90.0)  # east-west: now u falls fastest
    shape = gaussian_taper_matrix(turned, PC)
    vu90 = abs(predict_point_sources(along_u, FREQS[:1], direction, [[1.0]], shape=shape)[0, 0])
    assert vu90 == pytest.approx(expected, rel=1e-9)


def test_station_factored_predict_with_gaussians():
    rng = np.random.default_rng(2)
    ntime, nant = 2, 8
    ant_uvw = rng.normal(0, 400, (ntime, nant, 3))
    a1, a2 = np.triu_indices(nant, 1)
    tidx = np.repeat(np.arange(ntime), a1.size)
    a1, a2 = np.tile(a1, ntime), np.tile(a2, ntime)
    sky = SkyModel(
        ra=PC[0] + np.array([0.0, 0.01, -0.02]),
        dec=PC[1] + np.array([0.0, 0.005, 0.01]),
        flux=np.array([3.0, 2.0, 1.0]),
        ref_freq=np.full(3, 1.5e8),
        spectral_index=np.array([[-0.7], [0.0], [-0.3]]),
        names=["a", "b", "c"],
        major=np.array([0.0, 90 * ARCSEC, 40 * ARCSEC]),
        minor=np.array([0.0, 30 * ARCSEC, 40 * ARCSEC]),
        position_angle=np.array([0.0, 0.4, 0.0]),
    )
    direction, flux = lmn(sky.ra, sky.dec, PC), sky.flux_at(FREQS)
    shape = gaussian_taper_matrix(sky, PC)
    uvw = ant_uvw[tidx, a2] - ant_uvw[tidx, a1]
    expected = predict_point_sources(uvw, FREQS, direction, flux, shape=shape)
    got = predict_point_sources_by_station(
        ant_uvw, tidx, a1, a2, FREQS, direction, flux, shape=shape
    )
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-10)
    points_only = predict_point_sources(uvw, FREQS, direction, flux)
    assert np.abs(points_only - expected).max() > 0.1


def test_shapes_follow_selection_and_apparent_sky():
    sky = read_sky_model_text(
        "s0,POINT,02:00:00.0,-30.00.00.0,2.0,[-0.7],true,150e6,,,\n"
        "s1,GAUSSIAN,02:00:10.0,-30.05.00.0,3.0,[-0.8],true,150e6,120.0,45.0,30.0\n"
    )
    assert sky.is_gaussian.tolist() == [False, True]
    picked = sky.select(np.array([1]))
    assert picked.major[0] == pytest.approx(120 * ARCSEC)
    seen = apparent_sky(sky, PC, FREQS)
    np.testing.assert_array_equal(seen.position_angle, sky.position_angle)


def read_sky_model_text(rows: str, tmp=None) -> SkyModel:
    import tempfile
    from pathlib import Path

    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "m.txt"
        path.write_text(
            "Format = Name, Type, Ra, Dec, I, SpectralIndex, LogarithmicSI, "
            "ReferenceFrequency='150000000', MajorAxis, MinorAxis, Orientation\n" + rows
        )
        return read_sky_model(path)


def test_gaussian_file_round_trip(tmp_path):
    sky = read_sky_model_text(
        "s1,GAUSSIAN,02:00:10.0,-30.05.00.0,3.0,[-0.8],true,150e6,120.0,45.0,30.0\n"
        "s2,GAUSSIAN,02:00:20.0,-30.06.00.0,1.0,[],true,150e6,20.0,60.0,10.0\n"  # axes swapped
    )
    assert sky.major[1] == pytest.approx(60 * ARCSEC) and sky.minor[1] == pytest.approx(20 * ARCSEC)
    assert math.degrees(sky.position_angle[1]) == pytest.approx(100.0)
    back = read_sky_model(write_sky_model(tmp_path / "g.txt", sky))
    for name in ("major", "minor", "position_angle", "flux", "ra", "dec"):
        np.testing.assert_allclose(getattr(back, name), getattr(sky, name), rtol=1e-11)
    assert "GAUSSIAN" in (tmp_path / "g.txt").read_text()


def test_reads_dp3_makesourcedb_gaussians(tmp_path):
    f = tmp_path / "ateam.skymodel"
    f.write_text(
        "# (Name, Type, Patch, Ra, Dec, I, Q, U, V, ReferenceFrequency='74e6', "
        "SpectralIndex='[]', MajorAxis, MinorAxis, Orientation) = format\n"
        ", , CasA_patch, 23:23:28, +58.48.42\n"
        "CasA_0, GAUSSIAN, CasA_patch, 23:23:36.066, +58.48.26.841, 2.152e+03, 0.0, 0.0, 0.0, "
        "7.40000e+07, [-0.8], 1.31633e+02, 6.68929e+01, 6.96847e+00\n"
    )
    sky = read_sky_model(f)
    assert len(sky) == 1 and sky.is_gaussian[0]
    assert sky.major[0] / ARCSEC == pytest.approx(131.633)
    assert math.degrees(sky.position_angle[0]) == pytest.approx(6.96847)


def test_gaussian_without_axes_names_the_line(tmp_path):
    f = tmp_path / "bad.txt"
    f.write_text(
        "Format = Name, Type, Ra, Dec, I, MajorAxis, MinorAxis, Orientation\n"
        "g,GAUSSIAN,00:00:00,-30.00.00,1.0,,,\n"
    )
    with pytest.raises(SkyModelFileError, match=r"bad\.txt, line 2.*MajorAxis"):
        read_sky_model(f)


def test_simulation_predicts_gaussian_components(tmp_path):
    """A user's sky model with a Gaussian: the simulated data hold its tapered visibilities,
    and the truth file keeps the shape."""
    from casacore import tables

    from sdpbatch.execution.simulate import simulate
    from sdpbatch.io.truth import read_truth
    from sdpbatch.parameters import Parameters

    sky_file = tmp_path / "sky.txt"
    sky_file.write_text(
        "Format = Name, Type, Ra, Dec, I, SpectralIndex, LogarithmicSI, "
        "ReferenceFrequency='100000000', MajorAxis, MinorAxis, Orientation\n"
        "g,GAUSSIAN,00:00:00.0,-30.00.00.0,5.0,[],true,,600.0,200.0,60.0\n"
        "p,POINT,00:02:00.0,-29.00.00.0,2.0,[],true,,,,\n"
    )
    params = Parameters(
        rmax=400.0, ntimes=2, nfreqwin=1, sky_model=str(sky_file), phase_error=0.0, seed=3
    )
    products = simulate(params, tmp_path / "out")
    truth = read_truth(products.truth_dir)
    assert truth.sky.is_gaussian.tolist() == [True, False]
    with tables.table(str(products.ms_paths[0]), ack=False) as t:
        uvw, data = t.getcol("UVW"), t.getcol("DATA")[:, :, 0]
    freq = np.array([truth.summary["frequencies_hz"][0]])
    centre = (0.0, math.radians(-30.0))
    direction, flux = lmn(truth.sky.ra, truth.sky.dec, centre), truth.sky.flux_at(freq)
    shape = gaussian_taper_matrix(truth.sky, centre)
    model = predict_point_sources(uvw, freq, direction, flux, shape=shape)
    assert np.abs(data - model).max() < 1e-6 * np.abs(model).max()
    points = predict_point_sources(uvw, freq, direction, flux)
    assert np.abs(data - points).max() > 0.5  # the 10 arcmin Gaussian is resolved
