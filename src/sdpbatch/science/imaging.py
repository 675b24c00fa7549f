"""Imaging with ducc0's w-gridder in the MeasurementSet convention.

Conventions (see ``science/visibility.py`` and the science reference):

- ``uvw[row] = uvw(antenna2) - uvw(antenna1)`` in metres, and a point source of flux S at
  direction cosines (l, m) has ``vis = S exp(+2 pi i nu/c (u l + v m + w (n - 1)))``;
- ducc0 computes ``V = sum I/n exp(-2 pi i [u l + v m - w (n - 1)])``, so we hand it the
  MeasurementSet UVW with u and v negated (``flip_u``/``flip_v``, i.e. ``uvw * (-1, -1, +1)``
  without a copy);
- images are ``image[ix, iy]`` with l = (ix - N/2) cell (east) and m = (iy - N/2) cell (north);
- ``divide_by_n=False`` everywhere: a model in Jy/pixel predicts point-source visibilities, and
  gridding is the exact adjoint of prediction, so a point source of S Jy shows as a peak of S in
  the dirty image normalised by the sum of weights.

Gridding returns *unnormalised* images (the weighted sum) and the sum of weights separately, so
that images of several chunks or frequency windows can be added first and normalised once.
Several channels are gridded onto one image in one ducc0 call (one FFT per pass).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import ducc0
import numpy as np

from sdpbatch.science.constants import C
from sdpbatch.science.image_size import (
    GRID_OVERSAMPLING,
    fast_even_size,
    image_memory_bytes,
    largest_fitting_npixel,
)
from sdpbatch.science.predict import predict_point_sources, predict_rows

WEIGHTING_SCHEMES = ("natural", "uniform", "briggs")

DOUBLE_PRECISION_EPSILON = 1e-5
"""ducc0 needs double precision at and below this accuracy (its documentation: with complex64
visibilities epsilon must be larger than 1e-5); above it the single-precision kernels run, about
1.5x faster (2048^2, 376 k visibilities, epsilon 1e-4, 2 threads: 0.32 s against 0.48-0.51 s)."""

SIGMA_RANGE = (1.1, GRID_OVERSAMPLING)
"""The uv-grid oversampling range handed to ducc0, which picks the cheapest factor in it for the
accuracy and field.  ducc0's default upper bound is 2.6; 2.0 bounds the grid's memory
(:data:`~sdpbatch.science.image_size.GRID_OVERSAMPLING`) at no measured cost: 2048^2, 0.31 rad,
376 k visibilities, 2 threads, 1.1-2.6 against 1.1-2.0: 0.33/0.32 s (epsilon 1e-4, single);
ranges forced to 1.5-2.0 or 2.0-2.6 were 15-50 % slower, 1.1-1.6 and 1.2-1.5 no faster."""


def _dtypes(epsilon: float) -> tuple[type, type]:
    """(complex, real) dtypes ducc0 should compute in for ``epsilon``."""
    if epsilon <= DOUBLE_PRECISION_EPSILON:
        return np.complex128, np.float64
    return np.complex64, np.float32


def _common(
    uvw: np.ndarray, frequencies: np.ndarray, cellsize: float, epsilon: float, nthreads: int
) -> dict:
    return dict(
        uvw=np.ascontiguousarray(uvw, dtype=np.float64),
        freq=np.ascontiguousarray(frequencies, dtype=np.float64),
        pixsize_x=float(cellsize),
        pixsize_y=float(cellsize),
        epsilon=float(epsilon),
        do_wgridding=True,
        nthreads=int(nthreads),
        flip_u=True,
        flip_v=True,
        divide_by_n=False,
        sigma_min=SIGMA_RANGE[0],
        sigma_max=SIGMA_RANGE[1],
    )


def _mask(flag: np.ndarray | None) -> np.ndarray | None:
    if flag is None or not flag.any():
        return None
    return np.ascontiguousarray(~flag, dtype=np.uint8)


def _channel_weight(
    weight: np.ndarray, channel_factors: np.ndarray | None, real: type
) -> np.ndarray:
    if channel_factors is None:
        return np.ascontiguousarray(weight, dtype=real)
    return np.ascontiguousarray(weight * np.asarray(channel_factors)[None, :], dtype=real)


def _weight_sum(weight: np.ndarray, flag: np.ndarray | None) -> float:
    if flag is None:
        return float(np.sum(weight, dtype=np.float64))
    return float(np.sum(np.where(flag, 0.0, weight), dtype=np.float64))


def grid_dirty(
    uvw: np.ndarray,
    frequencies: np.ndarray,
    vis: np.ndarray,
    weight: np.ndarray,
    *,
    npixel: int,
    cellsize: float,
    epsilon: float,
    nthreads: int,
    channel_factors: np.ndarray | None = None,
    flag: np.ndarray | None = None,
) -> tuple[np.ndarray, float]:
    """Unnormalised dirty image of all channels together, and the sum of weights.

    Parameters
    ----------
    uvw : (nrow, 3) metres, MeasurementSet convention.
    frequencies : (nchan,) Hz.
    vis : (nrow, nchan) complex, Jy.
    weight : (nrow, nchan) imaging weights (zero where unused).
    npixel, cellsize : image size (even, >= 32) and pixel size (rad).
    channel_factors : (nchan,) optional extra factor per channel, e.g. ``t_c**k`` of a Taylor
        term; it multiplies the weights when gridding but not the returned weight sum.
    flag : (nrow, nchan) bool, optional: samples to skip.

    Returns
    -------
    image : (npixel, npixel) float64, ``sum w f_c V e^{...}``; divide by ``weight_sum`` for Jy/beam.
    weight_sum : sum of ``weight`` over unflagged samples (without ``channel_factors``).
    """
    cplx, real = _dtypes(epsilon)
    image = ducc0.wgridder.experimental.vis2dirty(
        **_common(uvw, frequencies, cellsize, epsilon, nthreads),
        vis=np.ascontiguousarray(vis, dtype=cplx),
        wgt=_channel_weight(weight, channel_factors, real),
        mask=_mask(flag),
        npix_x=int(npixel),
        npix_y=int(npixel),
    )
    return image.astype(np.float64, copy=False), _weight_sum(weight, flag)


def grid_psf(
    uvw: np.ndarray,
    frequencies: np.ndarray,
    weight: np.ndarray,
    *,
    npixel: int,
    cellsize: float,
    epsilon: float,
    nthreads: int,
    channel_factors: np.ndarray | None = None,
    flag: np.ndarray | None = None,
) -> tuple[np.ndarray, float]:
    """Unnormalised point spread function (the dirty image of unit visibilities).

    Same arguments and returns as :func:`grid_dirty` without ``vis``; the normalised PSF
    ``image / weight_sum`` peaks at 1 at pixel (N/2, N/2) when ``channel_factors`` is None.
    """
    ones = np.ones(np.shape(weight), dtype=_dtypes(epsilon)[0])
    return grid_dirty(
        uvw,
        frequencies,
        ones,
        weight,
        npixel=npixel,
        cellsize=cellsize,
        epsilon=epsilon,
        nthreads=nthreads,
        channel_factors=channel_factors,
        flag=flag,
    )


def predict_visibilities(
    model: np.ndarray,
    uvw: np.ndarray,
    frequencies: np.ndarray,
    *,
    cellsize: float,
    epsilon: float,
    nthreads: int,
    flag: np.ndarray | None = None,
) -> np.ndarray:
    """Visibilities (nrow, nchan) complex128 of a model image in Jy/pixel (same for all channels).

    The adjoint of :func:`grid_dirty` (with unit weights): a single pixel of S Jy at (l, m)
    predicts ``S exp(+2 pi i nu/c (u l + v m + w (n - 1)))``.  Flagged samples are set to zero.
    """
    cplx, real = _dtypes(epsilon)
    vis = ducc0.wgridder.experimental.dirty2vis(
        **_common(uvw, frequencies, cellsize, epsilon, nthreads),
        dirty=np.ascontiguousarray(model, dtype=real),
        mask=_mask(flag),
    )
    return vis.astype(np.complex128, copy=False)


def predict_sparse(
    model_taylor: np.ndarray,
    uvw: np.ndarray,
    frequencies: np.ndarray,
    taylor: np.ndarray,
    *,
    cellsize: float,
    stations: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None,
    nthreads: int = 1,
    rows_per_chunk: int = 8192,
) -> np.ndarray:
    """Visibilities of a sparse Taylor model by direct Fourier sum over its nonzero pixels.

    ``V_c = sum_pixels sum_k taylor_c^k model_taylor[k, ix, iy] exp(+2 pi i nu_c/c (u l + v m +
    w (n - 1)))`` with l, m of the pixel as in :func:`predict_visibilities` (exact, no
    ``epsilon``): each pixel is a point source for
    :func:`sdpbatch.science.predict.predict_point_sources`.  It costs about
    ``nrow * nchan * npixels_nonzero`` complex exponentials, which beats a gridder pass per
    Taylor term when the model has a few tens of pixels (e.g. the increment of a late minor
    cycle).

    model_taylor : (nterm, N, N) Jy/pixel; taylor : (nchan,) t_c of each channel.
    stations : (time_index, antenna1, antenna2) (nrow,) int of the rows: the sum is then
        factored per station when their UVW allow it (:func:`~sdpbatch.science.predict.
        predict_rows`), about ``nant / nbaselines`` of the cost.
    Returns (nrow, nchan) complex128.
    """
    model_taylor = np.asarray(model_taylor, dtype=np.float64)
    nterm, npixel = model_taylor.shape[0], model_taylor.shape[1]
    ix, iy = np.nonzero(np.any(model_taylor != 0, axis=0))
    l = (ix - npixel // 2) * cellsize
    m = (iy - npixel // 2) * cellsize
    lmn = np.stack([l, m, np.sqrt(1.0 - l * l - m * m)], axis=-1)
    powers = np.asarray(taylor, dtype=np.float64)[None, :] ** np.arange(nterm)[:, None]
    amplitude = np.einsum("kp,kc->pc", model_taylor[:, ix, iy], powers)  # (npix, nchan)
    if stations is not None:
        return predict_rows(uvw, *stations, frequencies, lmn, amplitude, nthreads=nthreads)
    return predict_point_sources(
        uvw, frequencies, lmn, amplitude, row_chunk=rows_per_chunk, nthreads=nthreads
    )


# --- small inversion ----------------------------------------------------------------------------

SMALL_INVERSION_MARGIN = 1.2
"""Sampling margin of the small grid over the highest spatial frequency of the image."""


def small_inversion_size(npixel: int, cellsize: float, uvw_max: float, frequency_max: float) -> int:
    """Pixels of the smallest grid over the same field that still samples the dirty image.

    A dirty image holds no spatial frequency above that of the longest baseline plus the
    local frequency the w-term adds at the field's edge; gridding it on fewer, larger pixels
    and interpolating back (:func:`fourier_upsample`) cuts the FFT work of every gridder call,
    as WSClean's "small inversion".  ``uvw_max``: the largest |u|, |v| or |w| (m);
    ``frequency_max``: Hz.  Returns ``npixel`` when the image is not oversampled.
    """
    field = npixel * cellsize
    edge = min(0.99, np.sqrt(2.0) * field / 2)  # direction cosine of the field's corner
    wavelengths = uvw_max * frequency_max / C
    highest = wavelengths * (1.0 + edge / np.sqrt(1.0 - edge * edge))
    size = fast_even_size(math.ceil(2.0 * highest * field * SMALL_INVERSION_MARGIN))
    return min(size, int(npixel))


def fourier_upsample(image: np.ndarray, npixel: int) -> np.ndarray:
    """Band-limited interpolation of an (n, n) image onto (npixel, npixel) pixels over the same
    field, pixel (n/2, n/2) and (npixel/2, npixel/2) both at the field's centre (n, npixel
    even).  Zero-pads its spectrum (the Nyquist row and column split evenly): exact for an
    image whose spatial frequencies the n pixels sample; real in, real out.  One thread
    (:mod:`sdpbatch.science.parallel`).
    """
    n = image.shape[0]
    if n == npixel:
        return image
    shifted = np.fft.ifftshift(np.asarray(image, dtype=np.float64))
    spectrum = ducc0.fft.r2c(shifted, axes=(0, 1))  # (n, n/2 + 1)
    half = n // 2
    rows = np.zeros((npixel, half + 1), dtype=spectrum.dtype)  # the rows padded first
    rows[:half] = spectrum[:half]
    rows[npixel - half + 1 :] = spectrum[half + 1 :]
    rows[half] = rows[npixel - half] = 0.5 * spectrum[half]  # the Nyquist row, split
    padded = np.zeros((npixel, npixel // 2 + 1), dtype=spectrum.dtype)
    padded[:, :half] = rows[:, :half]
    padded[:, half] = 0.5 * rows[:, half]  # the Nyquist column: its other half is implied
    out = ducc0.fft.c2r(padded, axes=(0, 1), lastsize=npixel, forward=False, inorm=2)
    return np.fft.fftshift(out * (npixel / n) ** 2)


# --- weighting ----------------------------------------------------------------------------------


def _uv_cells(
    uvw: np.ndarray, frequencies: np.ndarray, npixel: int, cellsize: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Indices (iu, iv) of each sample's uv cell and of its Hermitian mirror, and validity.

    The uv cell size is ``1 / (npixel * cellsize)`` wavelengths (the FFT grid of the image).
    Returns iu, iv (nrow, nchan) int for the sample itself, and a bool mask of samples inside
    the grid; the mirror cell is ``(-iu, -iv) mod npixel``.
    """
    scale = frequencies[None, :] / C * npixel * cellsize
    iu = np.rint(uvw[:, 0:1] * scale).astype(np.int64)
    iv = np.rint(uvw[:, 1:2] * scale).astype(np.int64)
    half = npixel // 2
    inside = (np.abs(iu) < half) & (np.abs(iv) < half)
    return iu, iv, inside


def weight_density(
    uvw: np.ndarray,
    frequencies: np.ndarray,
    weight: np.ndarray,
    *,
    npixel: int,
    cellsize: float,
) -> np.ndarray:
    """Gridded weight density (npixel, npixel): the sum of weights in each uv cell.

    Each sample counts in its own cell and in the mirrored cell (-u, -v), since both halves of
    the uv plane are imaged.  Density grids of different chunks or windows (same npixel and
    cellsize) add up: sum them before :func:`apply_density_weighting`.
    Cell (iu, iv) is stored at index ``(iu mod npixel, iv mod npixel)``.
    """
    iu, iv, inside = _uv_cells(uvw, frequencies, npixel, cellsize)
    w = np.where(inside, weight, 0.0).ravel()
    density = np.zeros(npixel * npixel)
    for su in (1, -1):
        index = ((su * iu) % npixel) * npixel + (su * iv) % npixel
        density += np.bincount(index.ravel(), weights=w, minlength=npixel * npixel)
    return density.reshape(npixel, npixel)


def apply_density_weighting(
    uvw: np.ndarray,
    frequencies: np.ndarray,
    weight: np.ndarray,
    density: np.ndarray,
    *,
    scheme: str,
    robust: float,
    cellsize: float,
) -> np.ndarray:
    """Imaging weights (nrow, nchan) from data weights and the total weight density.

    - ``uniform``: ``w / D`` with D the density of the sample's uv cell;
    - ``briggs`` (Briggs 1995, as in CASA/WSClean): ``w / (1 + D f2)`` with
      ``f2 = (5 * 10**-robust)**2 / (sum D**2 / sum D)``; robust -2 approaches uniform and +2
      natural weighting;
    - ``natural``: ``w`` unchanged.
    ``density`` is the sum of :func:`weight_density` over all data that is imaged together.
    """
    if scheme not in WEIGHTING_SCHEMES:
        raise ValueError(
            f"weighting scheme {scheme!r} is not known; allowed: {', '.join(WEIGHTING_SCHEMES)}"
        )
    weight = np.asarray(weight, dtype=np.float64)
    if scheme == "natural":
        return weight.copy()
    npixel = density.shape[0]
    iu, iv, inside = _uv_cells(uvw, frequencies, npixel, cellsize)
    d = density[iu % npixel, iv % npixel]
    with np.errstate(divide="ignore", invalid="ignore"):
        if scheme == "uniform":
            out = np.where(d > 0, weight / d, 0.0)
        else:
            f2 = (5.0 * 10.0 ** (-robust)) ** 2 / (np.sum(density**2) / np.sum(density))
            out = weight / (1.0 + d * f2)
    return np.where(inside, out, 0.0)


def imaging_weights(
    uvw: np.ndarray,
    frequencies: np.ndarray,
    weight: np.ndarray,
    *,
    scheme: str,
    robust: float,
    npixel: int,
    cellsize: float,
) -> np.ndarray:
    """Imaging weights (nrow, nchan) for data imaged on its own (see the two functions above)."""
    if scheme == "natural":
        return np.asarray(weight, dtype=np.float64).copy()
    density = weight_density(uvw, frequencies, weight, npixel=npixel, cellsize=cellsize)
    return apply_density_weighting(
        uvw, frequencies, weight, density, scheme=scheme, robust=robust, cellsize=cellsize
    )


# --- image size advice ---------------------------------------------------------------------------

MAX_FIELD_OF_VIEW = 1.0
"""Largest advised image side (direction cosines, ~57 deg): beyond it w-gridding grows steeply
in time and memory (ducc0 0.42, 2048^2 at epsilon 1e-5: 3 s and 128 MiB for a 0.1 rad field,
42 s and 270 MiB at 1 rad, 200 s and 1.6 GiB at 2 rad)."""

PRIMARY_BEAM_FIRST_NULL = 2.44
"""The advised field in ``lambda / D``: the primary beam from first null to first null of an
aperture of diameter D illuminated uniformly (an Airy pattern: first null 1.22 lambda/D from the
centre, FWHM 1.02 lambda/D, so about 2.4 times the FWHM), at the lowest frequency (the widest
beam).  Sources beyond it are attenuated below the first sidelobe's ~2 %."""

SYNTHESIZED_BEAM_PIXELS = 3.0
"""Pixels across the synthesized beam ``1 / B`` (B: the longest baseline in wavelengths)."""


@dataclass(frozen=True)
class ImageAdvice:
    """An advised image: ``npixel`` of ``cellsize`` rad, and the reasons, one line each."""

    npixel: int
    cellsize: float
    reasons: tuple[str, ...]


def advise_image(
    uvw_max_m: float,
    freq_min: float,
    freq_max: float,
    station_diameter: float,
    *,
    beam_widths: float = PRIMARY_BEAM_FIRST_NULL,
    oversampling: float = SYNTHESIZED_BEAM_PIXELS,
    max_bytes: float | None = None,
    nmoment: int = 1,
    nscales: int = 1,
    nwindows: int = 1,
    visibilities: int = 0,
    double_precision: bool = True,
) -> ImageAdvice:
    """Image and cell size advised from the data, with the reasons.

    ``cellsize = 1 / (oversampling * B)`` with ``B = uvw_max_m / lambda_min`` the longest
    baseline in wavelengths (lambda_min = c / freq_max); the field is ``beam_widths`` times
    ``lambda_max / station_diameter`` (the station or dish diameter of the ANTENNA table; by
    default the primary beam to its first null), at most :data:`MAX_FIELD_OF_VIEW`; npixel is
    the next fast even FFT size.  With ``max_bytes`` (e.g. ``ADVICE_MEMORY_FRACTION`` of the
    memory available, see :mod:`sdpbatch.science.image_size`), npixel is reduced, keeping the
    cell size, until a worker's :func:`~sdpbatch.science.image_size.image_memory_bytes` (with
    ``nmoment``, ``nscales``, ``nwindows``, ``visibilities``, ``double_precision``) fits.
    """
    for name, value in (
        ("uvw_max_m", uvw_max_m),
        ("freq_min", freq_min),
        ("freq_max", freq_max),
        ("station_diameter", station_diameter),
    ):
        if not (math.isfinite(value) and value > 0):
            raise ValueError(f"advise_image: {name} must be a positive number, got {value}")
    baseline = uvw_max_m * freq_max / C
    cellsize = 1.0 / (oversampling * baseline)
    beam = (C / freq_min) / station_diameter
    field = min(beam_widths * beam, MAX_FIELD_OF_VIEW)
    reasons = [
        f"cell {cellsize:.3g} rad: 1/{oversampling:g} of the synthesized beam of the longest "
        f"baseline ({uvw_max_m:.0f} m, {baseline:.0f} wavelengths at {freq_max / 1e6:.1f} MHz)",
        f"field {field:.3g} rad: the primary beam to its first null ({beam_widths:g} lambda/D, "
        f"D {station_diameter:g} m at {freq_min / 1e6:.1f} MHz)"
        + (f", capped at {MAX_FIELD_OF_VIEW:g} rad" if field < beam_widths * beam else ""),
    ]
    sizes = dict(nmoment=nmoment, nscales=nscales, nwindows=nwindows, visibilities=visibilities)
    npixel, why = _within_memory(
        fast_even_size(math.ceil(field / cellsize)),
        cellsize,
        max_bytes,
        {**sizes, "double_precision": double_precision},
    )
    return ImageAdvice(npixel, cellsize, (*reasons, why))


def _within_memory(npixel: int, cellsize: float, max_bytes: float | None, sizes: dict):
    """(npixel, the reason): ``npixel``, or the largest size of the same cell whose worker
    memory (:func:`~sdpbatch.science.image_size.image_memory_bytes` with ``sizes``) fits
    ``max_bytes``."""
    need = image_memory_bytes(npixel, **sizes)
    if max_bytes is None or need <= max_bytes:
        return npixel, f"{npixel} pixels (a fast FFT size): {need / 2**30:.2f} GiB per worker"
    fits = largest_fitting_npixel(max_bytes, **sizes)
    return fits, (
        f"{npixel} pixels would need {need / 2**30:.1f} GiB per worker, more than the "
        f"{max_bytes / 2**30:.1f} GiB allowed: {fits} pixels of the same cell "
        f"({fits * cellsize:.3g} rad)"
    )
