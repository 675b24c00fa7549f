"""Sky models: the WSClean/DP3 text format, the GLEAM-like population, the station beam."""

from __future__ import annotations

import math

import numpy as np
import pytest

from sdpbatch.io.skymodel_file import (
    SkyModelFileError,
    format_dec,
    format_ra,
    read_sky_model,
    write_sky_model,
)
from sdpbatch.science.skymodel import (
    SkyModel,
    apparent_sky,
    catalogue_view,
    expected_source_count,
    gleam_like_sources,
    hpbw,
    lmn,
    station_beam,
)

PC = (0.0, math.radians(-30.0))


def _population(seed: int = 7) -> SkyModel:
    return gleam_like_sources(
        np.random.default_rng(seed), PC, fov_radius=math.radians(6.0), flux_limit=1.0
    )


def test_file_round_trip(tmp_path):
    sky = _population()
    sky.spectral_index = np.stack([sky.spectral_index[:, 0], np.full(len(sky), 0.05)], axis=1)
    path = write_sky_model(tmp_path / "sky.txt", sky, header=["a test"])
    back = read_sky_model(path)
    assert back.names == sky.names
    np.testing.assert_allclose(back.ra, sky.ra, rtol=0, atol=1e-9)
    np.testing.assert_allclose(back.dec, sky.dec, rtol=0, atol=1e-9)
    np.testing.assert_allclose(back.flux, sky.flux, rtol=1e-11)
    np.testing.assert_allclose(back.spectral_index, sky.spectral_index, rtol=1e-11)
    freqs = np.array([0.9e8, 1.3e8])
    np.testing.assert_allclose(back.flux_at(freqs), sky.flux_at(freqs), rtol=1e-10)


def test_reads_a_wsclean_style_file(tmp_path):
    f = tmp_path / "m.txt"
    f.write_text(
        "Format = Name, Type, Ra, Dec, I, SpectralIndex, LogarithmicSI, "
        "ReferenceFrequency='150000000', MajorAxis, MinorAxis, Orientation\n"
        "# a comment\n"
        "s0,POINT,12:30:00.0,-30.30.00.0,2.0,[-0.7,0.1],true,,,,\n"
        "s1,POINT,187.5deg,+45.0deg,1.0,[],true,100e6,,,\n"
    )
    sky = read_sky_model(f)
    np.testing.assert_allclose(np.degrees(sky.ra), [187.5, 187.5])
    np.testing.assert_allclose(np.degrees(sky.dec), [-30.5, 45.0])
    np.testing.assert_allclose(sky.ref_freq, [1.5e8, 1e8])
    np.testing.assert_allclose(sky.spectral_index, [[-0.7, 0.1], [0.0, 0.0]])
    # S(nu) = I (nu/nu0)^(c0 + c1 log10(nu/nu0))
    x = math.log10(3e8 / 1.5e8)
    assert sky.flux_at(3e8)[0, 0] == pytest.approx(2.0 * 2.0 ** (-0.7 + 0.1 * x), rel=1e-12)


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("s,SHAPELET,00:00:00,-30.00.00,1,[],true,1e8,1,1,0", "SHAPELET"),
        ("g,GAUSSIAN,00:00:00,-30.00.00,1,[],true,1e8,-1,1,0", "MajorAxis"),
        ("p,POINT,00:00:00,-95.00.00,1,[],true,1e8,,,", "declination"),
        ("p,POINT,00:61:00,-30.00.00,1,[],true,1e8,,,", "minutes"),
        ("p,POINT,00:00:00,-30.00.00,abc,[],true,1e8,,,", "line 3"),
    ],
)
def test_bad_lines_name_the_line(tmp_path, line, message):
    f = tmp_path / "bad.txt"
    f.write_text(
        "# header\nFormat = Name, Type, Ra, Dec, I, SpectralIndex, LogarithmicSI, "
        "ReferenceFrequency, MajorAxis, MinorAxis, Orientation\n" + line + "\n"
    )
    with pytest.raises(SkyModelFileError, match=message) as err:
        read_sky_model(f)
    assert "line 3" in str(err.value) and "bad.txt" in str(err.value)


def test_missing_format_line(tmp_path):
    f = tmp_path / "nofmt.txt"
    f.write_text("s,POINT,00:00:00,-30.00.00,1\n")
    with pytest.raises(SkyModelFileError, match="Format"):
        read_sky_model(f)


def test_sexagesimal_formatting():
    assert format_ra(math.radians(187.5)) == "12:30:00.000000"
    assert format_dec(math.radians(-30.5)) == "-30.30.00.00000"
    assert format_dec(math.radians(0.25)) == "+00.15.00.00000"


def test_population_is_deterministic_and_inside_the_field():
    a, b, c = _population(7), _population(7), _population(8)
    np.testing.assert_array_equal(a.ra, b.ra)
    np.testing.assert_array_equal(a.flux, b.flux)
    assert len(a) != len(c) or not np.array_equal(a.flux, c.flux)
    n = lmn(a.ra, a.dec, PC)[:, 2]
    assert np.all(n >= math.cos(math.radians(6.0)) - 1e-12)
    assert np.all(a.flux >= 1.0) and np.all(np.diff(a.flux) <= 0)


def test_population_statistics():
    """Counts follow the requested density; N(>S) slope ~ -1.5; spectral index ~ N(-0.7, 0.2)."""
    radius = math.radians(6.0)
    rng = np.random.default_rng(1)
    pops = [gleam_like_sources(rng, PC, fov_radius=radius, flux_limit=1.0) for _ in range(40)]
    counts = np.array([len(p) for p in pops])
    mean = expected_source_count(1.0, radius)
    assert abs(counts.mean() - mean) < 4 * math.sqrt(mean / counts.size)
    flux = np.concatenate([p.flux for p in pops])
    frac = np.mean(flux > 4.0)
    assert frac == pytest.approx(4.0**-1.5, abs=0.03)
    alpha = np.concatenate([p.spectral_index[:, 0] for p in pops])
    assert alpha.mean() == pytest.approx(-0.7, abs=0.03)
    assert alpha.std() == pytest.approx(0.2, abs=0.03)


def test_station_beam_half_power_width():
    for freq in (1e8, 2e8):
        half = 0.5 * hpbw(freq)
        ra = np.array([0.0, 0.0])
        dec = np.array([PC[1], PC[1] + half])
        beam = station_beam(ra, dec, PC, np.array([freq]))[:, 0]
        assert beam[0] == pytest.approx(1.0)
        assert beam[1] == pytest.approx(0.5, abs=1e-6)
    assert math.degrees(hpbw(1e8)) == pytest.approx(6.6)


def test_apparent_sky_reproduces_beam_times_spectrum():
    sky = _population()
    freqs = np.array([0.9e8, 1.0e8, 1.1e8])
    app = apparent_sky(sky, PC, freqs)  # 3 frequencies, 2 terms: exact interpolation
    expected = sky.flux_at(freqs) * station_beam(sky.ra, sky.dec, PC, freqs)
    np.testing.assert_allclose(app.flux_at(freqs), expected, rtol=1e-9)


def test_catalogue_view_has_the_asked_errors():
    rng = np.random.default_rng(4)
    n = 4000
    sky = SkyModel(
        ra=rng.uniform(0, 2 * np.pi, n),
        dec=rng.uniform(-1.2, 1.2, n),
        flux=rng.uniform(1, 50, n),
        ref_freq=np.full(n, 1e8),
        spectral_index=np.full((n, 1), -0.7),
        names=[str(k) for k in range(n)],
    )
    sigma = np.radians(2.0 / 3600)
    view = catalogue_view(sky, np.random.default_rng(1), flux_error=0.05, position_error=sigma)
    assert np.std(view.flux / sky.flux) == pytest.approx(0.05, rel=0.1)
    assert abs(np.mean(view.flux / sky.flux) - 1) < 0.005
    east = (view.ra - sky.ra) * np.cos(sky.dec)
    assert np.std(east) == pytest.approx(sigma, rel=0.1)
    assert np.std(view.dec - sky.dec) == pytest.approx(sigma, rel=0.1)
    assert np.array_equal(view.spectral_index, sky.spectral_index)
    exact = catalogue_view(sky, np.random.default_rng(1), flux_error=0.0, position_error=0.0)
    assert np.array_equal(exact.flux, sky.flux) and np.array_equal(exact.ra, sky.ra)


def test_every_bad_line_is_reported_at_once(tmp_path):
    f = tmp_path / "two.txt"
    f.write_text(
        "Format = Name, Type, Ra, Dec, I, MajorAxis, MinorAxis, Orientation\n"
        "a,POINT,00:00:00,-95.00.00,1,,,\n"
        "b,POINT,00:00:00,-30.00.00,1,,,\n"
        "c,GAUSSIAN,00:00:00,-30.00.00,1,,,\n"
    )
    with pytest.raises(SkyModelFileError) as err:
        read_sky_model(f)
    message = str(err.value)
    assert "line 2: declination" in message and "line 4: a GAUSSIAN needs" in message
    assert "line 3" not in message and "\n" not in message
