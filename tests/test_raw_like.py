"""Raw-like data (tests/raw_like_ms.py): the reader keeps what is usable and nothing else, and
the solver recovers the injected gains within the noise, against the true sky model."""

from __future__ import annotations

import numpy as np
import pytest

from raw_like_ms import REF_FREQ, SKY
from sdpbatch.io.ms_read import read_measurement_set, read_measurement_set_metadata
from sdpbatch.io.skymodel_file import read_sky_model
from sdpbatch.science.predict import predict_point_sources
from sdpbatch.science.skymodel import SkyModel, gaussian_taper_matrix, lmn
from sdpbatch.science.solve import SolverOptions, baseline_gains, compress, solve_term


def _sky_model(truth, components=SKY) -> SkyModel:
    radec = [truth.component_radec()[SKY.index(c)] for c in components]
    return SkyModel(
        ra=np.array([r for r, _ in radec]),
        dec=np.array([d for _, d in radec]),
        flux=np.array([c.flux for c in components]),
        ref_freq=np.full(len(components), REF_FREQ),
        spectral_index=np.array([[c.spectral_index] for c in components]),
        names=[f"c{k}" for k in range(len(components))],
        major=np.array([c.major for c in components]),
        minor=np.array([c.minor for c in components]),
        position_angle=np.array([c.position_angle for c in components]),
    )


def _model(vis, truth, components=SKY) -> np.ndarray:
    sky = _sky_model(truth, components)
    centre = truth.spec.phase_centre
    return predict_point_sources(
        vis.uvw,
        vis.frequency,
        lmn(sky.ra, sky.dec, centre),
        sky.flux_at(vis.frequency),
        shape=gaussian_taper_matrix(sky, centre),
    )


@pytest.fixture(scope="module")
def observed(raw_like_master):
    path, truth = raw_like_master
    return read_measurement_set(path), truth, path


def test_reader_keeps_the_usable_samples_only(observed):
    vis, truth, path = observed
    nant = truth.spec.nant
    assert vis.nrow == nant * (nant - 1) // 2  # autocorrelations (5000 Jy) dropped
    assert np.all(vis.antenna1 != vis.antenna2)
    np.testing.assert_array_equal(vis.flag, truth.flag_i)
    for s in truth.spec.flagged_stations:
        assert vis.flag[(vis.antenna1 == s) | (vis.antenna2 == s)].all()
    assert vis.flag[:, list(truth.spec.flagged_channels)].all()
    assert np.all(np.isfinite(vis.vis)) and np.all(vis.vis[vis.flag] == 0)
    assert np.all(vis.weight[vis.flag] == 0)
    np.testing.assert_allclose(vis.channel_width, truth.spec.channel_width)
    # the unflagged samples are the corrupted sky plus noise of the variance the weights say
    gpq = truth.gains[vis.antenna1] * np.conj(truth.gains[vis.antenna2])
    ok = ~vis.flag
    z = (vis.vis - gpq * truth.stokes_i_true)[ok] * np.sqrt(vis.weight[ok])
    assert np.std(z.real) == pytest.approx(1.0, abs=0.03)
    assert np.std(z.imag) == pytest.approx(1.0, abs=0.03)
    info = read_measurement_set_metadata(path)
    assert info.antenna_diameter == 38.0 and info.field_name == "RAWLIKE"


def test_predicted_model_matches_the_independent_formula(observed):
    vis, truth, _ = observed
    model = _model(vis, truth)
    # equal but for where the taper is evaluated: the builder uses the phase centre's (u, v),
    # the predictor the component's tangent plane (DP3's absolute orientation); the components
    # lie ~6e-4 rad from the centre, so the taper's argument differs by ~6e-4 |w|: ~1e-4 of
    # the flux, a few % of the noise of one sample
    np.testing.assert_allclose(model, truth.stokes_i_true, rtol=0, atol=3e-3)
    assert np.abs(model - truth.stokes_i_true).max() < 0.05 * truth.sigma_i.min()


def test_component_list_is_the_truth(observed, tmp_path):
    vis, truth, _ = observed
    sky = read_sky_model(truth.write_component_list(tmp_path / "sky.txt"))
    expected = _sky_model(truth)
    for name in ("ra", "dec", "flux", "major", "minor", "position_angle", "spectral_index"):
        np.testing.assert_allclose(getattr(sky, name), getattr(expected, name), atol=1e-9)


def _solve(vis, model, term, *, initial=None, normalise=True):
    per_channel = term == "B"
    nfreq = vis.nchan if per_channel else 1
    sums = compress(
        vis.vis,
        model,
        vis.weight,
        antenna1=vis.antenna1,
        antenna2=vis.antenna2,
        interval=np.zeros(vis.nrow, int),
        channel=np.arange(vis.nchan) if per_channel else None,
        flag=vis.flag,
    )
    start = np.ones((1, vis.antenna_positions.shape[0], nfreq)) if initial is None else initial
    return solve_term(sums, term=term, initial=start, normalise=normalise, options=SolverOptions())


def _expected(truth_gains, solution):
    """The injected gains (nant, nchan) as the solution sees them: phases referenced to its
    reference station, amplitudes normalised to unit mean over its unflagged stations."""
    ref = solution.stats.reference
    g = truth_gains * np.conj(truth_gains[ref]) / np.abs(truth_gains[ref])
    good = ~solution.flags[0]
    mean = [np.abs(g[good[:, c], c]).mean() if good[:, c].any() else 1.0 for c in range(g.shape[1])]
    return g / np.array(mean)


def _error_scale(solution) -> np.ndarray:
    """The predicted standard error of each solution against the referenced truth (inf
    without data): its own ``|g| / SNR`` and the reference station's phase error (half of
    its complex variance) carried to every station by the referencing."""
    snr, amp = solution.snr[0], np.abs(solution.gains[0])
    own = np.divide(amp, snr, out=np.full(snr.shape, np.inf), where=snr > 0)
    ref = solution.stats.reference
    ref_phase = own[ref] / amp[ref]  # (nchan,) rad
    return np.sqrt(own**2 + 0.5 * (amp * ref_phase) ** 2)


def test_bandpass_solution_recovers_the_injected_gains(observed):
    vis, truth, _ = observed
    sol = _solve(vis, _model(vis, truth), "B")
    flagged = sol.flags[0]
    # exactly the dead tiles and the RFI channels have no solution
    expected_flags = np.zeros_like(flagged)
    expected_flags[list(truth.spec.flagged_stations), :] = True
    expected_flags[:, list(truth.spec.flagged_channels)] = True
    np.testing.assert_array_equal(flagged, expected_flags)
    assert sol.stats.flagged_no_data == expected_flags.sum() and sol.stats.converged
    assert np.all(np.isfinite(sol.gains))
    good = ~flagged
    error = np.abs(sol.gains[0] - _expected(truth.gains, sol))[good]
    predicted = _error_scale(sol)[good]
    assert np.all(error < 5 * predicted)
    ratio = np.sqrt(np.mean(error**2) / np.mean(predicted**2))
    assert 0.6 < ratio < 1.6  # the errors are the noise the SNR predicts
    # and they are small: 30 % scatter is recovered to about a percent
    assert np.median(error / np.abs(sol.gains[0][good])) < 0.02


def test_amplitude_then_bandpass_chain(observed):
    """G on all channels, then B given G: their product is the injected gain per channel."""
    vis, truth, _ = observed
    model = _model(vis, truth)
    g = _solve(vis, model, "G")
    assert g.stats.flagged_no_data == 2 and g.stats.flagged_fraction == pytest.approx(2 / 48)
    gpq = baseline_gains(
        g.gains,
        interval=np.zeros(vis.nrow, int),
        antenna1=vis.antenna1,
        antenna2=vis.antenna2,
        channel=np.zeros(vis.nchan, int),
    )
    b = _solve(vis, model * gpq, "B")
    total = g.gains * b.gains
    ref = b.stats.reference
    total = total * np.conj(total[:, ref : ref + 1]) / np.abs(total[:, ref : ref + 1])
    good = ~b.flags[0]
    expected = _expected(truth.gains, b)  # B is normalised per channel, G to its mean
    expected *= np.abs(total[0][good]).mean() / np.abs(expected[good]).mean()
    error = np.abs(total[0] - expected)[good]
    # G's error adds to B's: bound by both solutions' predicted errors
    predicted_b = (_error_scale(b) * np.abs(g.gains[0]))[good]
    predicted_g = (_error_scale(g) * np.abs(b.gains[0]))[good]
    assert np.all(error < 5 * np.hypot(predicted_b, predicted_g))
    assert np.median(error / np.abs(total[0][good])) < 0.02


def test_model_without_the_double_source_does_not_blow_up(observed):
    """Calibrating against the points only (the 21 Jy double missing): flagged or normalised,
    finite, and the statistics say the model is poor."""
    vis, truth, _ = observed
    good_model = _solve(vis, _model(vis, truth), "B")
    points = _model(vis, truth, [c for c in SKY if c.major == 0])
    sol = _solve(vis, points, "B")
    assert np.all(np.isfinite(sol.gains))
    kept = ~sol.flags[0]
    for c in range(vis.nchan):
        if kept[:, c].any():
            assert np.abs(sol.gains[0, kept[:, c], c]).mean() == pytest.approx(1.0, abs=1e-9)
    assert np.abs(sol.gains).max() < 11
    assert sol.stats.median_snr < good_model.stats.median_snr / 3
