"""Station beams of the simulation: 'none' vs 'airy' in the data, EveryBeam's SKA-Low station
beams (unity at the pointing, lambda/D wide, one per station), direction-dependent gains in
the factored direct sum, and the refusals."""

from __future__ import annotations

import json

import numpy as np
import pytest
from casacore import tables
from scipy.special import j1

from sdpbatch.cli import main
from sdpbatch.execution.simulate import prepare_simulation
from sdpbatch.execution.station_effects import direction_gains
from sdpbatch.io.everybeam_element import element_voltage
from sdpbatch.parameters import Parameters
from sdpbatch.parameters.files import load_parameters
from sdpbatch.science.aperture_array import STATION_APERTURE, array_factor, vogel_layout
from sdpbatch.science.constants import C
from sdpbatch.science.predict import predict_point_sources, predict_point_sources_by_station
from sdpbatch.science.skymodel import SkyModel
from sdpbatch.science.skymodel import lmn as skymodel_lmn

SOURCE = (
    "Format = Name, Type, Ra, Dec, I, SpectralIndex, LogarithmicSI, "
    "ReferenceFrequency='100000000'\n"
    "s0,POINT,00:09:00.0,-31.30.00.0,5.0,[-0.7],true,100e6\n"
)
SMALL = {
    "n_workers": 1, "rmax": 300.0, "ntimes": 2, "nfreqwin": 3, "channels_per_window": 3,
    "phase_error": 0.0,
}  # fmt: skip


def _simulate(tmp_path, name, **values):
    sky = tmp_path / "sky.txt"
    sky.write_text(SOURCE)
    params = tmp_path / f"{name}.json"
    params.write_text(json.dumps({**SMALL, "sky_model": str(sky), **values}))
    assert main(["simulate", str(params), "--out", str(tmp_path / name)]) == 0
    ms = tmp_path / name / "ska_pipeline_simulation_vislist_0.ms"
    with tables.table(str(ms), ack=False) as t:
        data = t.getcol("DATA")[:, :, 0]
    with tables.table(str(ms / "SPECTRAL_WINDOW"), ack=False) as t:
        return data, t.getcol("CHAN_FREQ")[0]


def test_airy_and_no_beam_differ_by_the_airy_power_factor(tmp_path):
    bare, nu = _simulate(tmp_path, "none", beam="none")
    airy, _ = _simulate(tmp_path, "airy")  # the default
    ra, dec, dec0 = np.radians(2.25), np.radians(-31.5), np.radians(-30.0)
    cos_theta = np.sin(dec) * np.sin(dec0) + np.cos(dec) * np.cos(dec0) * np.cos(ra)
    x = 1.616339948310703 * np.sqrt(1 - cos_theta**2) / np.sin(np.radians(3.3) * 1e8 / nu)
    factor = (2 * j1(x) / x) ** 2
    assert 0.2 < factor.min() < factor.max() < 0.9
    np.testing.assert_allclose(airy, bare * factor, rtol=1e-6, atol=0)  # DATA is complex64


def test_everybeam_measurement_set_is_the_direct_sum_with_each_stations_beam(tmp_path):
    """Intrinsic flux x E_p conj(E_q) x the geometric phase, E the station beams: the mean
    beam put into the apparent flux and taken out of the gains again leaves exactly that."""
    data, nu = _simulate(tmp_path, "eb", beam="everybeam")
    setup = prepare_simulation(load_parameters(tmp_path / "eb.json"))
    beam = setup.direction_gains.beams.voltage(slice(None), slice(None), setup.frequencies)
    ms = tmp_path / "eb" / "ska_pipeline_simulation_vislist_0.ms"
    with tables.table(str(ms), ack=False) as t:
        uvw, a1, a2 = t.getcol("UVW"), t.getcol("ANTENNA1"), t.getcol("ANTENNA2")
        ti = np.searchsorted(setup.times, t.getcol("TIME") - 1e-3)
    lmn = skymodel_lmn(setup.sky.ra, setup.sky.dec, setup.phase_centre)[0]
    geometry = np.exp(2j * np.pi * nu[None, :] / C * (uvw @ (lmn - [0, 0, 1]))[:, None])
    gain = beam[ti, a1, 0] * beam[ti, a2, 0].conj()
    expected = 5.0 * (nu / 1e8) ** -0.7 * gain * geometry
    assert 0.05 < np.abs(gain).min() < np.abs(gain).max() < 0.95
    assert np.abs(data - expected).max() < 1e-6 * np.abs(expected).max()


def _sky(ra_deg, dec_deg) -> SkyModel:
    n = len(ra_deg)
    return SkyModel(
        ra=np.radians(ra_deg),
        dec=np.radians(dec_deg),
        flux=np.ones(n),
        ref_freq=np.full(n, 1e8),
        spectral_index=np.zeros((n, 1)),
        names=[f"s{i}" for i in range(n)],
    )


def test_everybeam_beams_are_one_at_the_pointing_and_differ_between_stations():
    params = Parameters(beam="everybeam", ntimes=3, nfreqwin=2)
    enu = np.array([[0.0, 0.0, 0.0], [100.0, 20.0, 0.0], [-50.0, 80.0, 0.0]])
    freqs = np.array([0.95e8, 1.05e8])
    gains = direction_gains(
        params, _sky([0.0, 3.0], [-30.0, -31.0]), phase_centre=(0.0, np.radians(-30.0)),
        enu=enu, frequencies=freqs, times=np.array([0.0, 1800.0, 3600.0]),
    )  # fmt: skip
    voltage = gains.beams.voltage(slice(None), slice(None), freqs)  # (time, station, src, chan)
    assert voltage.shape == (3, 3, 2, 2)
    np.testing.assert_allclose(voltage[:, :, 0, :], 1.0, atol=1e-12)
    np.testing.assert_allclose(gains.beams.power[0], 1.0, atol=1e-12)
    off = np.abs(voltage[:, :, 1, :])
    assert 0.0 < off.max() < 0.95
    assert np.ptp(off, axis=1).max() > 1e-3  # each station turned by its own angle
    assert gains.ionosphere is None


def test_everybeam_half_power_width_is_lambda_over_d():
    """Pointing at the zenith, the station beam (array factor x element pattern) falls to half
    power at a full width within 10 % of lambda/D (a filled 38 m circle: 1.03 lambda/D)."""
    theta = np.linspace(0.0, 0.15, 151)
    for phi in (0.0, 1.2):
        sky = np.stack([np.sin(theta) * np.cos(phi), np.sin(theta) * np.sin(phi), np.cos(theta)])
        af = array_factor(
            vogel_layout(), np.array([0.0, 0.7]), sky.T[None], np.array([[0.0, 0.0, 1.0]]),
            np.array([1e8]),
        )[0, :, :, 0]  # fmt: skip
        element = element_voltage(theta, np.full(theta.size, phi), np.array([1e8]))[:, 0]
        power = np.abs(af * element / element[0]) ** 2
        assert power[:, 0] == pytest.approx(1.0, abs=1e-12)
        for station in power:
            k = int(np.argmax(station < 0.5))  # the main lobe's first sample below half power
            half = np.interp(0.5, station[k : k - 2 : -1], theta[k : k - 2 : -1])
            assert 2 * half == pytest.approx(C / 1e8 / STATION_APERTURE, rel=0.1)


def test_factored_sum_with_direction_gains_is_the_direct_sum():
    rng = np.random.default_rng(3)
    ant_uvw = rng.normal(0.0, 300.0, (2, 4, 3))
    a1, a2 = np.triu_indices(4, 1)
    ti = np.repeat([0, 1], a1.size)
    a1, a2 = np.tile(a1, 2), np.tile(a2, 2)
    freq = np.array([1e8, 1.1e8])
    lmn = np.array([[0.01, 0.02, 0.0], [-0.03, 0.01, 0.0], [0.02, -0.02, 0.0]])
    lmn[:, 2] = np.sqrt(1 - lmn[:, 0] ** 2 - lmn[:, 1] ** 2)
    flux = rng.uniform(1.0, 3.0, (3, 2))
    shape = np.zeros((3, 2, 3))
    shape[2] = [[2e-4, 0.0, 0.0], [0.0, 1e-4, 0.0]]  # the third is a Gaussian
    jones = rng.normal(size=(2, 4, 3, 2)) + 1j * rng.normal(size=(2, 4, 3, 2))
    got = predict_point_sources_by_station(
        ant_uvw, ti, a1, a2, freq, lmn, flux, shape=shape, jones=jones
    )
    uvw = ant_uvw[ti, a2] - ant_uvw[ti, a1]
    expected = np.zeros_like(got)
    for s in range(3):
        one = predict_point_sources(uvw, freq, lmn[[s]], flux[[s]], shape=shape[[s]])
        expected += one * jones[ti, a1, s] * jones[ti, a2, s].conj()
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-12 * np.abs(expected).max())


def test_everybeam_without_its_element_patterns_is_refused(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("EVERYBEAM_DATADIR", str(tmp_path))
    params = tmp_path / "p.json"
    params.write_text(json.dumps({**SMALL, "beam": "everybeam"}))
    assert main(["simulate", str(params), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip()
    assert "'beam'" in err and "no SKA-Low element patterns" in err and "\n" not in err


@pytest.mark.parametrize(
    ("flag", "value", "field"),
    [
        ("--beam", "gaussian", "beam"),
        ("--ionosphere-rms-phase", "-1", "ionosphere_rms_phase"),
        ("--ionosphere-scale-km", "0", "ionosphere_scale_km"),
        ("--ionosphere-speed", "fast", "ionosphere_speed"),
    ],
)
def test_bad_beam_and_ionosphere_flags_are_refused(tmp_path, capsys, flag, value, field):
    params = tmp_path / "p.json"
    params.write_text(json.dumps(SMALL))
    assert main(["simulate", str(params), "--out", str(tmp_path / "o"), flag, value]) == 2
    err = capsys.readouterr().err.strip()
    assert (field in err or flag in err) and "\n" not in err
    assert not (tmp_path / "o").exists() or not any((tmp_path / "o").iterdir())
