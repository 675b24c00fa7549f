"""MSMFS / Hogbom clean against skies with known components and an independent Hogbom loop."""

from __future__ import annotations

import ducc0
import numpy as np
import pytest
from ducc0.wgridder.experimental import vis2dirty
from scipy.signal import fftconvolve

from sdpbatch.science.clean import msmfs_clean, scale_kernel
from sdpbatch.science.clean_psf import far_sidelobe

NPIXEL = 256
SUPPORT = 100
FREQUENCIES = np.linspace(90e6, 110e6, 5)
NU0 = FREQUENCIES.mean()
T = (FREQUENCIES - NU0) / NU0
# (ix, iy, flux at nu0 in Jy, spectral index)
POINTS = [(128, 128, 10.0, -0.7), (100, 150, 5.0, 0.5), (160, 90, 3.0, -1.0), (140, 141, 1.0, 0.0)]


def channel_psfs(npixel: int, frequencies: np.ndarray, seed: int = 1) -> np.ndarray:
    """(nchan, N, N) peak-1 PSFs of a random 40-station array tracking for 4 hours (ducc0)."""
    rng = np.random.default_rng(seed)
    radius = 1500.0 * np.sqrt(rng.random(40))
    angle = 2 * np.pi * rng.random(40)
    x, y = radius * np.cos(angle), radius * np.sin(angle)
    i, j = np.triu_indices(40, 1)
    bx, by = x[j] - x[i], y[j] - y[i]
    uvw = []
    for hour_angle in np.linspace(-0.5, 0.5, 6):
        u = bx * np.cos(hour_angle) - by * np.sin(hour_angle)
        v = (bx * np.sin(hour_angle) + by * np.cos(hour_angle)) * np.sin(np.radians(-30.0))
        uvw.append(np.stack([u, v, np.zeros_like(u)], axis=1))
    uvw = np.concatenate(uvw)
    cell = 1.0 / (3 * 3000.0 * frequencies.max() / 299792458.0)
    psfs = []
    for frequency in frequencies:
        psf = vis2dirty(
            uvw=uvw,
            freq=np.array([frequency]),
            vis=np.ones((len(uvw), 1), complex),
            npix_x=npixel,
            npix_y=npixel,
            pixsize_x=cell,
            pixsize_y=cell,
            epsilon=1e-7,
            do_wgridding=False,
        )
        psfs.append(psf / psf.max())
    return np.array(psfs)


@pytest.fixture(scope="module")
def psfs() -> np.ndarray:
    """Channel PSFs zero outside ±SUPPORT: the dirty images below are made with that patch,
    so the clean's PSF is exactly the one that made them (no far sidelobe to stop at)."""
    full = channel_psfs(NPIXEL, FREQUENCIES)
    centre = NPIXEL // 2
    window = slice(centre - SUPPORT, centre + SUPPORT + 1)
    patch = np.zeros_like(full)
    patch[:, window, window] = full[:, window, window]
    return patch


def truncated(psfs: np.ndarray, support: int) -> np.ndarray:
    centre = psfs.shape[-1] // 2
    window = slice(centre - support, centre + support + 1)
    return psfs[:, window, window]


def dirty_channels(skies: np.ndarray, psfs: np.ndarray) -> np.ndarray:
    """Per-channel dirty images: each sky convolved (linearly) with the PSF cut to ±SUPPORT."""
    kernels = truncated(psfs, SUPPORT)
    return np.array(
        [fftconvolve(sky, k, mode="same") for sky, k in zip(skies, kernels, strict=True)]
    )


def taylor(images: np.ndarray, nterm: int) -> np.ndarray:
    """The contract's Taylor weighting with equal channel weights."""
    return np.array([np.tensordot(T**k, images, axes=1) / len(T) for k in range(nterm)])


def point_skies() -> np.ndarray:
    skies = np.zeros((len(FREQUENCIES), NPIXEL, NPIXEL))
    for ix, iy, flux, alpha in POINTS:
        skies[:, ix, iy] = flux * (FREQUENCIES / NU0) ** alpha
    return skies


def test_point_sources_fluxes_positions_and_spectral_index(psfs):
    dirty = dirty_channels(point_skies(), psfs)
    result = msmfs_clean(
        taylor(dirty, 2),
        taylor(psfs, 3),
        scales=[0],
        gain=0.2,
        niter=5000,
        threshold=0.002,
        fractional_threshold=0.0,
        psf_support=SUPPORT,
    )
    assert result.stop_reason == "threshold"
    model = result.model_taylor
    truth = np.zeros((NPIXEL, NPIXEL), bool)
    for ix, iy, flux, alpha in POINTS:
        truth[ix, iy] = True
        # the 2-term least-squares fit of the power law over the channels is what MSMFS finds
        spectrum = flux * (FREQUENCIES / NU0) ** alpha
        slope, intercept = np.polyfit(T, spectrum, 1)
        assert model[0, ix, iy] == pytest.approx(intercept, rel=3e-3)
        assert model[0, ix, iy] == pytest.approx(flux, rel=1e-2)
        assert model[1, ix, iy] / model[0, ix, iy] == pytest.approx(slope / intercept, abs=0.02)
    # positions: the flux sits on the true pixels, next to nothing elsewhere
    assert np.abs(model[0][~truth]).sum() < 0.01 * model[0][truth].sum()
    assert np.abs(result.residual_taylor[0]).max() <= 0.002


def test_a_minor_cycle_stops_at_the_psf_sidelobes_it_does_not_subtract():
    """With the whole PSF given but only a ±SUPPORT patch used, the cycle stops at the
    largest |PSF| outside the patch times the peak (cleaning deeper would subtract the wrong
    sidelobes): the level is that, not the asked threshold."""
    full = channel_psfs(NPIXEL, FREQUENCIES)
    dirty = dirty_channels(point_skies(), full)
    psf_taylor = taylor(full, 3)
    sidelobe = far_sidelobe(psf_taylor[0], SUPPORT)
    assert 0.005 < sidelobe < 0.5  # the test means something
    result = msmfs_clean(
        taylor(dirty, 2),
        psf_taylor,
        scales=[0],
        gain=0.2,
        niter=5000,
        threshold=0.002,
        fractional_threshold=0.0,
        psf_support=SUPPORT,
    )
    level = sidelobe * result.peak_start
    assert result.stop_reason == "threshold"
    assert level > 0.002 and result.peak_end == pytest.approx(level, rel=0.35)


def test_residual_is_dirty_minus_model_convolved_with_psf(psfs):
    """The returned residual equals an independent direct computation from the returned model."""
    dirty = dirty_channels(point_skies(), psfs)
    residual_taylor, psf_taylor = taylor(dirty, 2), taylor(psfs, 3)
    result = msmfs_clean(
        residual_taylor,
        psf_taylor,
        scales=[0, 3],
        gain=0.3,
        niter=200,
        threshold=0.0,
        fractional_threshold=0.0,
        psf_support=SUPPORT,
    )
    kernels = truncated(psf_taylor, SUPPORT)
    for k in range(2):
        expected = residual_taylor[k] - sum(
            fftconvolve(result.model_taylor[q], kernels[k + q], mode="same") for q in range(2)
        )
        # the minor cycle works in single precision: agreement to ~1e-7 of the peak
        scale = np.abs(residual_taylor[k]).max()
        np.testing.assert_allclose(result.residual_taylor[k], expected, atol=1e-6 * scale)


def gaussian_blob(flux: float, centre: tuple[int, int], sigma: float) -> np.ndarray:
    ix, iy = np.indices((NPIXEL, NPIXEL))
    blob = np.exp(-0.5 * ((ix - centre[0]) ** 2 + (iy - centre[1]) ** 2) / sigma**2)
    return flux * blob / blob.sum()


def test_multiscale_recovers_extended_emission_better_than_hogbom(psfs):
    sky = gaussian_blob(20.0, (120, 130), 6.0) + gaussian_blob(8.0, (150, 100), 3.0)
    sky[100, 160] += 4.0
    dirty = dirty_channels(np.repeat(sky[None], len(FREQUENCIES), axis=0), psfs)
    rms, error = {}, {}
    for scales in ([0], [0, 3, 10]):
        result = msmfs_clean(
            taylor(dirty, 1),
            taylor(psfs, 1),
            scales=scales,
            gain=0.2,
            niter=400,
            threshold=0.0,
            fractional_threshold=0.0,
            psf_support=SUPPORT,
        )
        assert result.components == 400
        rms[len(scales)] = np.sqrt(np.mean(result.residual_taylor[0] ** 2))
        error[len(scales)] = np.abs(result.model_taylor[0] - sky).sum()
        if len(scales) == 3:
            assert result.model_taylor[0].sum() == pytest.approx(32.0, rel=0.05)
    assert rms[3] < 0.5 * rms[1]
    assert error[3] < 0.3 * error[1]


def plain_hogbom(dirty, psf, *, gain, niter, level, support):
    """The textbook loop: global peak, subtract the shifted PSF patch, repeat."""
    residual, model = dirty.copy(), np.zeros_like(dirty)
    npixel, centre = dirty.shape[0], dirty.shape[0] // 2
    for _ in range(niter):
        px, py = np.unravel_index(np.argmax(np.abs(residual)), residual.shape)
        if abs(residual[px, py]) <= level:
            break
        flux = gain * residual[px, py]
        model[px, py] += flux
        x0, x1 = max(px - support, 0), min(px + support + 1, npixel)
        y0, y1 = max(py - support, 0), min(py + support + 1, npixel)
        patch = psf[x0 - px + centre : x1 - px + centre, y0 - py + centre : y1 - py + centre]
        residual[x0:x1, y0:y1] -= flux * patch
    return model, residual


@pytest.mark.parametrize("niter", [50, 600])
def test_hogbom_case_matches_plain_hogbom(psfs, niter):
    sky = point_skies()[2] + gaussian_blob(6.0, (110, 110), 4.0)
    dirty = dirty_channels(sky[None], psfs[2:3])[0]
    expected_model, expected_residual = plain_hogbom(
        dirty, psfs[2], gain=0.1, niter=niter, level=0.01, support=SUPPORT
    )
    result = msmfs_clean(
        dirty[None],
        psfs[2:3],
        scales=[0],
        gain=0.1,
        niter=niter,
        threshold=0.01,
        fractional_threshold=0.0,
        psf_support=SUPPORT,
    )
    assert result.components == niter
    np.testing.assert_array_equal(result.model_taylor[0] != 0, expected_model != 0)
    scale = np.abs(dirty).max()  # single-precision minor cycle: ~1e-7 of the peak
    np.testing.assert_allclose(result.model_taylor[0], expected_model, atol=1e-6 * scale)
    np.testing.assert_allclose(result.residual_taylor[0], expected_residual, atol=1e-6 * scale)


def test_thresholds_and_niter_are_respected(psfs):
    dirty = dirty_channels(point_skies(), psfs)
    residual_taylor, psf_taylor = taylor(dirty, 2), taylor(psfs, 3)
    common = dict(scales=[0, 3, 10], gain=0.25, psf_support=SUPPORT)
    capped = msmfs_clean(
        residual_taylor, psf_taylor, niter=7, threshold=0.0, fractional_threshold=0.0, **common
    )
    assert (capped.components, capped.stop_reason) == (7, "niter")

    fractional = msmfs_clean(
        residual_taylor, psf_taylor, niter=10000, threshold=0.5, fractional_threshold=0.2, **common
    )
    assert fractional.stop_reason == "threshold"
    assert fractional.peak_start == pytest.approx(np.abs(residual_taylor[0]).max())
    level = 0.2 * fractional.peak_start
    assert fractional.peak_end <= level < fractional.peak_start
    # stopping at the level, not far below it: something above the level remained until the end
    assert fractional.peak_end > 0.5 * level

    absolute = msmfs_clean(
        residual_taylor, psf_taylor, niter=10000, threshold=1.5, fractional_threshold=0.01, **common
    )
    assert absolute.stop_reason == "threshold"
    assert 0.5 * 1.5 < absolute.peak_end <= 1.5

    nothing = msmfs_clean(
        residual_taylor, psf_taylor, niter=0, threshold=0.0, fractional_threshold=0.0, **common
    )
    assert nothing.components == 0 and not nothing.model_taylor.any()
    np.testing.assert_array_equal(nothing.residual_taylor, residual_taylor)


def test_scale_kernels_have_unit_sum_and_width():
    assert scale_kernel(0).shape == (1, 1)
    for scale in (3, 10):
        kernel = scale_kernel(scale)
        assert kernel.sum() == pytest.approx(1.0)
        assert kernel.shape == (2 * int(np.ceil(scale / 2)) + 1,) * 2
        assert np.all(kernel >= 0) and kernel.argmax() == kernel.size // 2


def test_bad_input_is_rejected(psfs):
    residual = np.zeros((2, NPIXEL, NPIXEL))
    residual[0, 10, 10] = 1.0
    good = dict(
        scales=[0], gain=0.1, niter=10, threshold=0.0, fractional_threshold=0.0, psf_support=20
    )
    with pytest.raises(ValueError, match="psf_taylor must have shape"):
        msmfs_clean(residual, taylor(psfs, 2), **good)
    with pytest.raises(ValueError, match="peak at the centre"):
        msmfs_clean(residual, np.roll(taylor(psfs, 3), 1, axis=1), **good)
    with pytest.raises(ValueError, match="gain"):
        msmfs_clean(residual, taylor(psfs, 3), **{**good, "gain": 1.5})
    with pytest.raises(ValueError, match="scales"):
        msmfs_clean(residual, taylor(psfs, 3), **{**good, "scales": [0, -3]})
    single_frequency = np.stack([psfs[0], 0 * psfs[0], 0 * psfs[0]])
    with pytest.raises(ValueError, match="singular"):
        msmfs_clean(residual, single_frequency, **good)


def test_the_threads_change_nothing(psfs):
    """Its FFTs run side by side on one thread each (sdpbatch.science.parallel): 1 and 3
    threads give the same minor cycle bit for bit, with 2 Taylor terms and 3 scales, where
    ducc0's 2-d FFTs given 3 threads round differently (its pool is grown to 3 here: the
    tests' OMP_NUM_THREADS=1 would cap any ``nthreads`` at 1)."""
    pool = ducc0.misc.thread_pool_size()
    ducc0.misc.resize_thread_pool(3)
    dirty = dirty_channels(point_skies() + gaussian_blob(2.0, (70, 180), 6.0), psfs)
    runs = [
        msmfs_clean(
            taylor(dirty, 2),
            taylor(psfs, 3),
            scales=[0, 3, 10],
            gain=0.1,
            niter=300,
            threshold=0.0,
            fractional_threshold=0.0,
            psf_support=SUPPORT,
            nthreads=nthreads,
        )
        for nthreads in (1, 3)
    ]
    ducc0.misc.resize_thread_pool(pool)
    assert runs[0].components == runs[1].components == 300
    assert np.array_equal(runs[0].model_taylor, runs[1].model_taylor)
    assert np.array_equal(runs[0].residual_taylor, runs[1].residual_taylor)
