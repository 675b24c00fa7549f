"""ducc0 imaging wrappers against an independent direct Fourier sum (MeasurementSet convention)."""

from __future__ import annotations

import ducc0
import numpy as np
import pytest

from sdpbatch.science.imaging import (
    DOUBLE_PRECISION_EPSILON,
    SIGMA_RANGE,
    advise_image,
    apply_density_weighting,
    fourier_upsample,
    grid_dirty,
    grid_psf,
    imaging_weights,
    predict_sparse,
    predict_visibilities,
    small_inversion_size,
    weight_density,
)

C = 299_792_458.0


def random_uvw(rng, nrow, radius=300.0, wscale=60.0):
    r = radius * np.sqrt(rng.uniform(0, 1, nrow))
    phi = rng.uniform(0, 2 * np.pi, nrow)
    return np.column_stack([r * np.cos(phi), r * np.sin(phi), rng.normal(0, wscale, nrow)])


def lmn_grid(npixel, cell):
    x = (np.arange(npixel) - npixel // 2) * cell
    l, m = np.meshgrid(x, x, indexing="ij")  # image[ix, iy]: l along ix, m along iy
    return l, m, np.sqrt(1 - l * l - m * m)


def direct_dirty(uvw, freq, vis, weight, npixel, cell):
    """sum w Re(V exp(-2 pi i nu/c (u l + v m + w (n - 1)))), the adjoint of the MS convention."""
    l, m, n = lmn_grid(npixel, cell)
    out = np.zeros((npixel, npixel))
    for c, f in enumerate(freq):
        k = 2 * np.pi * f / C
        for (u, v, w), val, wt in zip(uvw, vis[:, c], weight[:, c], strict=True):
            out += wt * np.real(val * np.exp(-1j * k * (u * l + v * m + w * (n - 1))))
    return out


def direct_predict(pixels, uvw, freq, npixel, cell):
    """MS-convention visibilities of {(ix, iy): flux} pixels by direct sum."""
    vis = np.zeros((uvw.shape[0], freq.size), complex)
    for (ix, iy), flux in pixels.items():
        l, m = (ix - npixel // 2) * cell, (iy - npixel // 2) * cell
        n = np.sqrt(1 - l * l - m * m)
        path = uvw[:, 0] * l + uvw[:, 1] * m + uvw[:, 2] * (n - 1)
        vis += flux * np.exp(2j * np.pi * path[:, None] * freq[None, :] / C)
    return vis


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(11)
    uvw = random_uvw(rng, 200)
    freq = np.array([0.95e8, 1.05e8])
    vis = rng.normal(size=(200, 2)) + 1j * rng.normal(size=(200, 2))
    weight = rng.uniform(0.5, 2.0, (200, 2))
    return uvw, freq, vis, weight


NPIX, CELL = 64, 0.008  # a 29 deg field: the w-term matters


@pytest.mark.parametrize("epsilon", [1e-6, 1e-5, 3e-5, 1e-4, 1e-3])
def test_grid_dirty_matches_direct_sum(data, epsilon, monkeypatch):
    """At every accuracy, in double (epsilon <= 1e-5) or single precision (above), within the
    oversampling range ICAL hands ducc0: the image within epsilon of the direct sum."""
    uvw, freq, vis, weight = data
    seen = []
    vis2dirty = ducc0.wgridder.experimental.vis2dirty

    def spy(**kwargs):
        seen.append((kwargs["vis"].dtype, kwargs["sigma_min"], kwargs["sigma_max"]))
        return vis2dirty(**kwargs)

    monkeypatch.setattr(ducc0.wgridder.experimental, "vis2dirty", spy)
    image, wsum = grid_dirty(
        uvw, freq, vis, weight, npixel=NPIX, cellsize=CELL, epsilon=epsilon, nthreads=1
    )
    single = np.complex64 if epsilon > DOUBLE_PRECISION_EPSILON else np.complex128
    assert seen == [(np.dtype(single), *SIGMA_RANGE)]
    ref = direct_dirty(uvw, freq, vis, weight, NPIX, CELL)
    assert np.linalg.norm(image - ref) / np.linalg.norm(ref) < epsilon
    assert wsum == pytest.approx(weight.sum())


@pytest.mark.parametrize("epsilon", [1e-5, 1e-4, 1e-3])
def test_predict_matches_direct_sum_at_its_epsilon(data, epsilon):
    """Prediction (degridding) in double or single precision within epsilon of the exact
    visibilities of a few pixels across the 29 deg field."""
    uvw, freq, _, _ = data
    pixels = {(32, 32): 2.0, (40, 27): 1.5, (10, 55): -0.7, (60, 3): 0.4}
    model = np.zeros((NPIX, NPIX))
    for pix, flux in pixels.items():
        model[pix] = flux
    vis = predict_visibilities(model, uvw, freq, cellsize=CELL, epsilon=epsilon, nthreads=1)
    ref = direct_predict(pixels, uvw, freq, NPIX, CELL)
    assert np.linalg.norm(vis - ref) / np.linalg.norm(ref) < epsilon


def test_channel_factors_and_flags(data):
    uvw, freq, vis, weight = data
    factors = np.array([-0.5, 2.0])
    flag = np.zeros(vis.shape, bool)
    flag[:50, 0] = True
    image, wsum = grid_dirty(
        uvw,
        freq,
        vis,
        weight,
        npixel=NPIX,
        cellsize=CELL,
        epsilon=1e-6,
        nthreads=1,
        channel_factors=factors,
        flag=flag,
    )
    used = np.where(flag, 0.0, weight)
    ref = direct_dirty(uvw, freq, vis, used * factors, NPIX, CELL)
    assert np.linalg.norm(image - ref) / np.linalg.norm(ref) < 1e-6
    assert wsum == pytest.approx(used.sum())


def test_predict_matches_direct_sum(data):
    uvw, freq, _, _ = data
    pixels = {(32, 32): 2.0, (40, 27): 1.5, (10, 55): -0.7}
    model = np.zeros((NPIX, NPIX))
    for pix, flux in pixels.items():
        model[pix] = flux
    vis = predict_visibilities(model, uvw, freq, cellsize=CELL, epsilon=1e-6, nthreads=1)
    ref = direct_predict(pixels, uvw, freq, NPIX, CELL)
    assert np.linalg.norm(vis - ref) / np.linalg.norm(ref) < 1e-6


def _station_rows(uvw: np.ndarray):
    """(uvw, time_index, antenna1, antenna2): rows of every baseline of stations placed at
    random about the data's UVW scale, at two times."""
    rng = np.random.default_rng(4)
    stations = rng.normal(0, np.abs(uvw).max() / 4, (2, 10, 3))
    a1, a2 = np.triu_indices(10, 1)
    t = np.repeat([0, 1], a1.size)
    a1, a2 = np.tile(a1, 2), np.tile(a2, 2)
    return stations[t, a2] - stations[t, a1], t, a1, a2


@pytest.mark.parametrize("freq", [[0.9e8, 1.0e8, 1.1e8, 1.2e8], [0.9e8, 1.05e8, 1.07e8]])
def test_sparse_prediction_matches_direct_sum(data, freq):
    """Taylor model pixels by direct sum, with equally spaced (recurrence) or other channels."""
    uvw = data[0]
    freq = np.array(freq)
    taylor = (freq - freq.mean()) / freq.mean()
    model = np.zeros((2, NPIX, NPIX))
    pixels = {(32, 32): (2.0, 0.5), (40, 27): (1.5, -3.0), (10, 55): (-0.7, 0.0)}
    for pix, (i0, i1) in pixels.items():
        model[(0, *pix)], model[(1, *pix)] = i0, i1
    vis = predict_sparse(model, uvw, freq, taylor, cellsize=CELL, nthreads=2, rows_per_chunk=64)
    ref = sum(
        direct_predict({pix: 1.0}, uvw, freq, NPIX, CELL) * (i0 + i1 * taylor)
        for pix, (i0, i1) in pixels.items()
    )
    assert np.abs(vis - ref).max() < 1e-10 * np.abs(ref).max()
    stations = _station_rows(uvw)  # the same rows as station differences: factored
    factored = predict_sparse(
        model, stations[0], freq, taylor, cellsize=CELL, stations=stations[1:]
    )
    reference = sum(
        direct_predict({pix: 1.0}, stations[0], freq, NPIX, CELL) * (i0 + i1 * taylor)
        for pix, (i0, i1) in pixels.items()
    )
    assert np.abs(factored - reference).max() < 1e-10 * np.abs(reference).max()
    # the gridder agrees to its accuracy
    gridded = sum(
        predict_visibilities(model[k], uvw, freq, cellsize=CELL, epsilon=1e-7, nthreads=1)
        * taylor**k
        for k in range(2)
    )
    assert np.linalg.norm(gridded - ref) / np.linalg.norm(ref) < 1e-6


def test_point_source_images_at_its_position():
    """A source east (l > 0) and north (m > 0) lands at ix > N/2, iy > N/2 with its flux."""
    rng = np.random.default_rng(12)
    uvw = random_uvw(rng, 3000, radius=600.0, wscale=100.0)
    freq = np.array([1.0e8, 1.1e8])
    npixel, cell = 128, 0.004
    ix, iy = npixel // 2 + 17, npixel // 2 + 5
    l, m = (ix - npixel // 2) * cell, (iy - npixel // 2) * cell
    n = np.sqrt(1 - l * l - m * m)
    path = uvw[:, 0] * l + uvw[:, 1] * m + uvw[:, 2] * (n - 1)
    vis = 3.0 * np.exp(2j * np.pi * path[:, None] * freq[None, :] / C)
    weight = np.ones(vis.shape)
    image, wsum = grid_dirty(
        uvw, freq, vis, weight, npixel=npixel, cellsize=cell, epsilon=1e-5, nthreads=1
    )
    dirty = image / wsum
    assert np.unravel_index(np.argmax(dirty), dirty.shape) == (ix, iy)
    assert dirty[ix, iy] == pytest.approx(3.0, rel=1e-5)
    # the mirrored source would be found if the u, v signs were wrong
    assert dirty[npixel - ix, npixel - iy] < 1.0
    psf, psum = grid_psf(uvw, freq, weight, npixel=npixel, cellsize=cell, epsilon=1e-5, nthreads=1)
    assert psf[npixel // 2, npixel // 2] / psum == pytest.approx(1.0, rel=1e-6)
    assert np.argmax(psf) == np.ravel_multi_index((npixel // 2, npixel // 2), psf.shape)


def test_predict_is_adjoint_of_gridding(data):
    uvw, freq, vis, _ = data
    rng = np.random.default_rng(13)
    model = rng.normal(size=(NPIX, NPIX))
    ones = np.ones(vis.shape)
    forward = predict_visibilities(model, uvw, freq, cellsize=CELL, epsilon=1e-7, nthreads=1)
    back, _ = grid_dirty(uvw, freq, vis, ones, npixel=NPIX, cellsize=CELL, epsilon=1e-7, nthreads=1)
    lhs = np.real(np.vdot(vis, forward))
    rhs = np.vdot(model, back)
    assert lhs == pytest.approx(rhs, rel=1e-6)


def test_uniform_weighting_flattens_density():
    rng = np.random.default_rng(14)
    uvw = random_uvw(rng, 4000, radius=200.0)
    uvw[:2000, :2] *= 0.2  # a dense core
    freq = np.array([1e8, 1.05e8])
    weight = rng.uniform(0.5, 1.5, (4000, 2))
    npixel, cell = 128, 0.01
    natural_density = weight_density(uvw, freq, weight, npixel=npixel, cellsize=cell)
    assert natural_density.max() > 20  # the core is dense
    uniform = imaging_weights(
        uvw, freq, weight, scheme="uniform", robust=0.0, npixel=npixel, cellsize=cell
    )
    flat = weight_density(uvw, freq, uniform, npixel=npixel, cellsize=cell)
    occupied = natural_density > 0
    assert np.allclose(flat[occupied], 1.0)
    assert np.all(flat[~occupied] == 0)
    # the density of windows adds: two halves give the whole
    halves = sum(
        weight_density(uvw, freq[[c]], weight[:, [c]], npixel=npixel, cellsize=cell)
        for c in range(2)
    )
    assert np.allclose(halves, natural_density)
    assert np.allclose(
        apply_density_weighting(
            uvw, freq, weight, halves, scheme="uniform", robust=0.0, cellsize=cell
        ),
        uniform,
    )
    # uniform weighting narrows the PSF's main lobe (seen with finer pixels)
    fine = dict(npixel=npixel, cellsize=0.001)
    uniform = imaging_weights(uvw, freq, weight, scheme="uniform", robust=0.0, **fine)
    common = dict(**fine, epsilon=1e-5, nthreads=1)
    psf_n, sum_n = grid_psf(uvw, freq, weight, **common)
    psf_u, sum_u = grid_psf(uvw, freq, uniform, **common)
    assert np.sum(psf_u / sum_u > 0.5) < np.sum(psf_n / sum_n > 0.5)


def test_briggs_between_uniform_and_natural():
    rng = np.random.default_rng(15)
    uvw = random_uvw(rng, 3000, radius=200.0)
    uvw[:1500, :2] *= 0.2
    freq = np.array([1e8])
    weight = np.ones((3000, 1))
    kw = dict(npixel=128, cellsize=0.005)
    uniform = imaging_weights(uvw, freq, weight, scheme="uniform", robust=0.0, **kw)
    natural = imaging_weights(uvw, freq, weight, scheme="natural", robust=0.0, **kw)

    def spread(a, b):  # how far a is from a constant multiple of b
        ratio = a[b > 0] / b[b > 0]
        return ratio.std() / ratio.mean()

    for robust, close, far in ((-2.0, uniform, natural), (2.0, natural, uniform)):
        briggs = imaging_weights(uvw, freq, weight, scheme="briggs", robust=robust, **kw)
        assert spread(briggs, close) < 0.02
        assert spread(briggs, far) > 0.3
    middle = imaging_weights(uvw, freq, weight, scheme="briggs", robust=0.0, **kw)
    assert spread(middle, uniform) > 0.05 and spread(middle, natural) > 0.05
    with pytest.raises(ValueError, match="allowed: natural, uniform, briggs"):
        imaging_weights(uvw, freq, weight, scheme="robust", robust=0.0, **kw)


def test_advise_image():
    advice = advise_image(1263.0, 0.9e8, 1.1e8, 35.0)
    npixel, cell = advice.npixel, advice.cellsize
    baseline = 1263.0 * 1.1e8 / C
    assert cell == pytest.approx(1 / (3 * baseline))
    fov = 2.44 * (C / 0.9e8) / 35.0  # the primary beam to its first null
    assert advice.reasons[0].startswith(f"cell {cell:.3g} rad: 1/3 of the synthesized beam")
    assert advice.reasons[1].startswith(f"field {fov:.3g} rad: the primary beam to its first")
    assert advice.reasons[2].startswith(f"{npixel} pixels (a fast FFT size)")
    assert npixel >= fov / cell and npixel % 2 == 0
    assert npixel == ducc0.fft.good_size(npixel)
    assert npixel < 1.1 * fov / cell + 2
    with pytest.raises(ValueError, match="station_diameter"):
        advise_image(1263.0, 0.9e8, 1.1e8, 0.0)


def _band_limited(npixel: int, terms) -> np.ndarray:
    """sum a cos(2 pi (kx x + ky y) + phase) sampled on npixel pixels of a unit field, pixel
    (N/2, N/2) at the centre: a periodic image of integer spatial frequencies (kx, ky)."""
    x = (np.arange(npixel) - npixel // 2) / npixel
    xx, yy = np.meshgrid(x, x, indexing="ij")
    return sum(a * np.cos(2 * np.pi * (kx * xx + ky * yy) + ph) for a, kx, ky, ph in terms)


def test_fourier_upsample_is_exact_for_sampled_frequencies():
    """Every spatial frequency the small grid holds, the Nyquist ones included, is
    reproduced on the large grid to rounding."""
    rng = np.random.default_rng(4)
    n, big = 64, 160
    terms = [
        (rng.normal(), int(kx), int(ky), rng.uniform(0, 2 * np.pi))
        for kx, ky in rng.integers(-n // 2 + 1, n // 2, size=(25, 2))
    ]
    terms += [(0.7, n // 2, 0, 0.0), (0.4, 0, n // 2, 0.0)]  # Nyquist along each axis
    up = fourier_upsample(_band_limited(n, terms), big)
    assert np.abs(up - _band_limited(big, terms)).max() < 1e-11
    assert fourier_upsample(up, big) is up  # same size: nothing to do


def test_small_inversion_images_as_the_full_grid():
    """A dirty image of sources gridded on the fewest pixels that sample it and interpolated
    back is the one gridded on all of them, but for the ringing of the field's cut: with these
    400 random baselines (sidelobes everywhere) within 0.5 % of the peak inside and 5 % at
    the edges; the seed's dense coverage gives ~1e-5 and ~1e-3 (hence off by default)."""
    rng = np.random.default_rng(11)
    uvw, freq = random_uvw(rng, 400), np.array([0.95e8, 1.05e8])
    npixel, cell = 256, 0.002
    sources = {(120, 140): 5.0, (100, 110): 2.0, (150, 90): 1.0}
    vis, weight = direct_predict(sources, uvw, freq, npixel, cell), np.ones((400, 2))
    small = small_inversion_size(npixel, cell, float(np.abs(uvw).max()), float(freq.max()))
    assert 64 <= small < npixel  # the test means something
    full, w_full = grid_dirty(uvw, freq, vis, weight, npixel=npixel, cellsize=cell,
                              epsilon=1e-6, nthreads=1)  # fmt: skip
    part, w_part = grid_dirty(uvw, freq, vis, weight, npixel=small,
                              cellsize=cell * npixel / small, epsilon=1e-6, nthreads=1)  # fmt: skip
    assert w_part == pytest.approx(w_full)
    error = np.abs(fourier_upsample(part, npixel) - full) / np.abs(full).max()
    inner = slice(npixel // 10, -npixel // 10)
    assert error[inner, inner].max() < 5e-3
    assert error.max() < 0.05
