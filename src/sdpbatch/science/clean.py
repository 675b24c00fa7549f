"""Multi-scale multi-frequency CLEAN (MSMFS, Rau & Cornwell 2011); Hogbom is its simplest case.

Conventions (the ICAL contract): images are ``image[ix, iy]`` with the PSF peak at pixel
``(N // 2, N // 2)``; residuals are Jy/beam, models Jy/pixel. Taylor terms follow
``I(nu) = sum_k model_taylor[k] t**k`` with ``t = (nu - nu0) / nu0``; ``psf_taylor[t]`` is the
PSF weighted by ``t**t`` (``2 * nmoment - 1`` terms, ``psf_taylor[0]`` peaks at 1).

How a minor cycle runs (the layout WSClean uses for multi-scale clean, with MSMFS algebra):

1. Once per minor cycle, with real FFTs on a zero-padded grid: the PSF terms truncated to
   ``±psf_support`` pixels, the scale kernels, and per scale the Hessian patches
   ``H[s, t] = Phi_s * Phi_s * P_t`` (``*`` = convolution) whose centres give the
   ``nmoment x nmoment`` Hessian of each scale.
2. Outer step: smooth the residual Taylor images with every scale kernel (FFT), solve the
   per-pixel principal solution ``a = H_s^-1 r_s`` and pick the scale and pixel with the largest
   ``bias_s * sqrt(a . r_s)`` (the square root of the chi-square reduction, in Jy/beam).
3. Sub-minor loop at that scale, on the pixels whose value is within ``SUBMINOR_FRACTION`` of that
   peak (the active set): find the best active pixel, take ``gain * a`` as the component and
   subtract ``H[s, :]`` around it from the active pixels only (a gather from the PSF patch, not a
   whole-image convolution), until the best active value falls below the fraction.
4. Apply that sub-minor loop's components to the full residual exactly with one FFT
   convolution, and go back to 2 until the thresholds or ``niter`` stop the cycle.

Steps 2-4 run in single precision, as WSClean's images do: twice the FFT speed, rounding about
1e-7 of the peak, far below the dynamic ranges reached (~5e4); the Hessians are float64.

Stopping: the level is ``max(threshold, fractional_threshold * peak_start, far_sidelobe *
peak_start)`` where ``peak_start = max |residual_taylor[0]|`` and ``far_sidelobe`` is the
largest |PSF| outside the patch used (CASA's cycle threshold with the truncated PSF's own
error: cleaning below it subtracts sidelobes the patch does not hold, and a deep minor cycle
on a snapshot with high far sidelobes diverges); only pixels whose scale-smoothed term-0
residual exceeds the level are eligible, so with scale 0 the cycle ends when the residual peak
is below it.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from ducc0.fft import c2r, good_size, r2c

from sdpbatch.science.clean_psf import stopping_level
from sdpbatch.science.parallel import side_by_side

#: The sub-minor loop at one scale runs until its best value falls below this fraction of the
#: value that started it (WSClean's ``-multiscale-gain 0.2`` corresponds to 0.8). Lower is faster
#: (fewer FFT steps) but keeps to one scale longer: 0.5 doubled the model error of extended
#: emission in the tests, 0.65 costs ~25% more time than 0.5.
SUBMINOR_FRACTION = 0.65
#: At most this many pixels take part in one sub-minor loop (the cut is raised to keep it so).
ACTIVE_MAX = 20000
#: Slight bias towards small scales: the value of scale s is multiplied by
#: 1 - SCALE_BIAS * s / max(s) (CASA's form of the small-scale bias). The chi-square value already
#: favours scale 0 for point sources, so only a small push is needed: with 0.1 a point source is
#: never taken at a larger scale and extended emission is taken at its scale.
SCALE_BIAS = 0.1


@dataclass
class CleanResult:
    """The outcome of one minor cycle.

    Attributes
    ----------
    model_taylor : (nmoment, N, N) float64, Jy/pixel: the model found in this minor cycle only.
    residual_taylor : (nmoment, N, N) float64, Jy/beam, after subtracting that model with the
        PSF truncated to ``±psf_support`` pixels.
    components : number of clean components (iterations) taken (those in ``keep`` when
        :func:`msmfs_clean` is given it).
    peak_start, peak_end : max |residual_taylor[0]| before and after, Jy/beam.
    stop_reason : "threshold" (nothing left above the level), "niter", or "stalled" (no
        component could be taken, e.g. a singular Hessian direction).
    """

    model_taylor: np.ndarray
    residual_taylor: np.ndarray
    components: int
    peak_start: float
    peak_end: float
    stop_reason: str


def scale_kernel(scale: int) -> np.ndarray:
    """Multi-scale basis function of width ``scale`` pixels, normalised to unit sum.

    Scale 0 is a delta (1 x 1). Otherwise a paraboloid ``1 - r**2`` tapered by the prolate
    spheroidal function (the kernel CASA and RASCIL use), with ``r = distance / (scale / 2)``,
    zero for ``r >= 1``; shape ``(2 h + 1, 2 h + 1)`` with ``h = ceil(scale / 2)``.
    """
    from scipy.special import pro_ang1

    if scale < 0:
        raise ValueError(f"scales must be >= 0 pixels, got {scale}")
    if scale == 0:
        return np.ones((1, 1))
    half = int(np.ceil(scale / 2))
    offsets = np.arange(-half, half + 1, dtype=float)
    radius = np.hypot(offsets[:, None], offsets[None, :]) / (scale / 2)
    inside = radius < 1.0
    kernel = np.zeros_like(radius)
    taper = pro_ang1(0, 0, 3 * np.pi, radius[inside])[0] / pro_ang1(0, 0, 3 * np.pi, 0.0)[0]
    kernel[inside] = taper * (1.0 - radius[inside] ** 2)
    return kernel / kernel.sum()


def scale_biases(scales: Sequence[int]) -> np.ndarray:
    """Multiplicative preference of each scale: 1 for the smallest, decreasing linearly."""
    scales = np.asarray(scales, dtype=float)
    largest = scales.max()
    if largest == 0:
        return np.ones_like(scales)
    return 1.0 - SCALE_BIAS * scales / largest


def msmfs_clean(
    residual_taylor: np.ndarray,
    psf_taylor: np.ndarray,
    *,
    scales: Sequence[int],
    gain: float,
    niter: int,
    threshold: float,
    fractional_threshold: float,
    psf_support: int,
    nthreads: int = 1,
    keep: np.ndarray | None = None,
) -> CleanResult:
    """Run one MSMFS minor cycle; ``scales=[0]`` with one Taylor term is Hogbom's CLEAN.

    Parameters
    ----------
    residual_taylor : (nmoment, N, N) Jy/beam, Taylor-weighted residual images.
    psf_taylor : (2 * nmoment - 1, N, N) Taylor-weighted PSFs, ``psf_taylor[0]`` peak 1 at
        ``(N // 2, N // 2)``.
    scales : scale widths in pixels (0 = point components).
    gain : loop gain, 0 < gain <= 1.
    niter : maximum number of components.
    threshold : absolute stopping level, Jy/beam.
    fractional_threshold : stopping level relative to the peak at the start.
    psf_support : half-width in pixels of the PSF patch used (clipped to N // 2 - 1; the whole
        PSF when its sidelobes outside the patch are high, see
        :func:`~sdpbatch.science.clean_psf.patch_support`).
    nthreads : FFTs run side by side on this many threads, each on one, so the result does not
        depend on it (:mod:`sdpbatch.science.parallel`).
    keep : (N, N) bool, the pixels whose components go into ``model_taylor`` (a sub-image's
        core, :mod:`sdpbatch.science.subimages`); the residual has them all.  None: every one.
    """
    residual_taylor, psf_taylor = _check_inputs(
        residual_taylor, psf_taylor, scales, gain, niter, threshold, fractional_threshold
    )
    nmoment, npixel, _ = residual_taylor.shape
    residual = residual_taylor.copy()
    peak_start = float(np.abs(residual[0]).max())
    limits = dict(threshold=threshold, fractional_threshold=fractional_threshold)
    level, support = stopping_level(residual[0], psf_taylor[0], psf_support=psf_support, **limits)

    operator = _CleanOperator(psf_taylor, scales, support, npixel, nmoment, nthreads)
    residual_hat = np.stack(side_by_side(operator.fft, residual, nthreads))
    model_by_scale, picked, stop_reason = _minor_loop(
        operator, residual_hat, npixel=npixel, level=level, gain=gain, niter=niter
    )
    components = len(picked)
    if components:
        residual = np.stack(side_by_side(operator.image, residual_hat, nthreads)).astype(float)
    if keep is not None:
        components = _keep_only(model_by_scale, picked, np.asarray(keep, dtype=bool))
    return CleanResult(
        model_taylor=operator.model_image(model_by_scale),
        residual_taylor=residual,
        components=components,
        peak_start=peak_start,
        peak_end=float(np.abs(residual[0]).max()),
        stop_reason=stop_reason,
    )


def _keep_only(model_by_scale: np.ndarray, picked: list[int], keep: np.ndarray) -> int:
    """Zero the components outside ``keep`` (N, N) in place; how many were inside."""
    model_by_scale *= keep
    return int(keep.ravel()[np.asarray(picked, dtype=int)].sum())


def _minor_loop(
    operator: _CleanOperator,
    residual_hat: np.ndarray,
    *,
    npixel: int,
    level: float,
    gain: float,
    niter: int,
) -> tuple[np.ndarray, list[int], str]:
    """Find components until ``niter``, ``level`` or a stall; ``residual_hat`` is updated.

    Returns the model per scale (nscale, nmoment, N, N), the flat pixel index of every
    component taken and why the loop stopped ("niter", "threshold" or "stalled").
    """
    model_by_scale = np.zeros((len(operator.scales), residual_hat.shape[0], npixel, npixel))
    picked: list[int] = []
    while len(picked) < niter:
        smoothed = operator.smooth(residual_hat)
        choice = _choose_scale(operator, smoothed, level)
        if choice is None:
            return model_by_scale, picked, "threshold"
        iscale, peak_value, values = choice
        increment, pixels = _subminor_loop(
            operator,
            smoothed[iscale],
            values,
            iscale,
            peak_value,
            gain=gain,
            level=level,
            budget=niter - len(picked),
        )
        if not pixels:
            return model_by_scale, picked, "stalled"
        picked += pixels
        operator.subtract(residual_hat, increment, iscale)
        model_by_scale[iscale] += increment
    return model_by_scale, picked, "niter"


def _check_inputs(residual_taylor, psf_taylor, scales, gain, niter, threshold, fractional):
    residual_taylor = np.asarray(residual_taylor, dtype=float)
    psf_taylor = np.asarray(psf_taylor, dtype=float)
    if residual_taylor.ndim != 3 or residual_taylor.shape[1] != residual_taylor.shape[2]:
        raise ValueError(f"residual_taylor must be (nmoment, N, N), got {residual_taylor.shape}")
    nmoment, npixel, _ = residual_taylor.shape
    expected = (2 * nmoment - 1, npixel, npixel)
    if psf_taylor.shape != expected:
        raise ValueError(f"psf_taylor must have shape {expected}, got {psf_taylor.shape}")
    centre = npixel // 2
    if np.argmax(psf_taylor[0]) != centre * npixel + centre:
        raise ValueError(f"psf_taylor[0] must peak at the centre pixel ({centre}, {centre})")
    if len(scales) == 0 or any(int(s) != s or s < 0 for s in scales):
        raise ValueError(f"scales must be a non-empty list of integers >= 0, got {list(scales)}")
    if len(set(scales)) != len(scales):
        raise ValueError(f"scales must not repeat, got {list(scales)}")
    if not 0.0 < gain <= 1.0:
        raise ValueError(f"gain must be > 0 and <= 1, got {gain}")
    if niter < 0:
        raise ValueError(f"niter must be >= 0, got {niter}")
    if threshold < 0 or not 0.0 <= fractional <= 1.0:
        raise ValueError(
            f"threshold must be >= 0 and fractional_threshold in [0, 1], "
            f"got {threshold} and {fractional}"
        )
    return residual_taylor, psf_taylor


class _CleanOperator:
    """The FFT-side quantities of one minor cycle: padded grid, kernels, Hessians.

    Images live in the corner ``[:N, :N]`` of an ``M x M`` zero-padded grid, kernels centred on
    pixel (0, 0) with wrap-around, so circular convolution on the grid is linear convolution of
    the image as long as ``M >= N + kernel half-width``.
    """

    def __init__(self, psf_taylor, scales, support, npixel, nmoment, nthreads):
        self.npixel, self.nmoment, self.nthreads = npixel, nmoment, nthreads
        self.scales = [int(s) for s in scales]
        self.biases = scale_biases(self.scales)
        kernels = [scale_kernel(s) for s in self.scales]
        self.halves = halves = [k.shape[0] // 2 for k in kernels]
        hmax = max(halves)
        self.size = good_size(max(npixel + support + 2 * hmax, 2 * (support + 2 * hmax) + 2), True)
        self.spectrum_shape = (self.size, self.size // 2 + 1)
        spectra = side_by_side(self._kernel_spectrum, kernels, nthreads)
        self.kernel_hat = np.stack([k.real for k in spectra])
        centre = npixel // 2
        window = slice(centre - support, centre + support + 1)
        self.psf_hat = np.stack(
            side_by_side(self._kernel_spectrum, [p[window, window] for p in psf_taylor], nthreads)
        )
        self.patches, self.hessian_inverse = [], []
        for iscale, half in enumerate(halves):
            reach = support + 2 * half
            crop = functools.partial(self._crop_patch, self.kernel_hat[iscale] ** 2, reach)
            patch = np.stack(side_by_side(crop, self.psf_hat, nthreads))
            self.patches.append(patch.reshape(len(patch), -1))
            hessian = patch[:, reach, reach][_taylor_index(nmoment)]
            if np.linalg.cond(hessian) > 1e12:
                raise ValueError(
                    f"the {nmoment}-term Hessian of scale {self.scales[iscale]} is singular: "
                    "the PSF Taylor terms carry no spectral information (a single frequency?); "
                    "use nmoment=1"
                )
            self.hessian_inverse.append(np.linalg.inv(hessian))
        # the iterations work in single precision (twice the FFT speed; rounding ~1e-7 of the
        # peak, far below the dynamic ranges reached); the Hessians above are float64
        self.kernel_hat = self.kernel_hat.astype(np.float32)
        self.psf_hat = self.psf_hat.astype(np.complex64)

    def fft(self, image: np.ndarray) -> np.ndarray:
        """Spectrum (complex64) of an (N, N) image placed in the corner of the padded grid."""
        grid = np.zeros((self.size, self.size), dtype=np.float32)
        grid[: image.shape[0], : image.shape[1]] = image
        return r2c(grid, axes=(0, 1))

    def _ifft(self, spectrum: np.ndarray) -> np.ndarray:
        return c2r(spectrum, axes=(0, 1), lastsize=self.size, forward=False, inorm=2)

    def image(self, spectrum: np.ndarray) -> np.ndarray:
        """The (N, N) image of a spectrum on the padded grid."""
        return self._ifft(spectrum)[: self.npixel, : self.npixel]

    def _kernel_spectrum(self, kernel: np.ndarray) -> np.ndarray:
        """Spectrum of an odd-sized kernel centred on grid pixel (0, 0)."""
        half = kernel.shape[0] // 2
        grid = np.zeros((self.size, self.size))
        grid[: kernel.shape[0], : kernel.shape[1]] = kernel
        grid = np.roll(grid, (-half, -half), axis=(0, 1))
        return r2c(grid, axes=(0, 1))

    def _crop_patch(self, squared: np.ndarray, reach: int, psf_hat: np.ndarray) -> np.ndarray:
        """The ``(2 reach + 1)^2`` centre of ``Phi_s * Phi_s * P_t``, given by their spectra."""
        kernel = np.roll(self._ifft(squared * psf_hat), (reach, reach), axis=(0, 1))
        return kernel[: 2 * reach + 1, : 2 * reach + 1]

    def smooth(self, residual_hat: np.ndarray) -> np.ndarray:
        """(nscale, nmoment, N, N): the residual Taylor images convolved with each scale.

        ``residual_hat`` holds the residual's spectra on the padded grid; outside ``[:N, :N]``
        that grid carries the spill of the subtracted PSFs, which only the outer ``scale / 2``
        pixels of the smoothed images see.
        """
        n = self.npixel
        out = np.empty((len(self.scales), self.nmoment, n, n), dtype=np.float32)

        def one(pair: tuple[int, int]) -> None:
            iscale, k = pair
            spectrum = residual_hat[k]
            if self.scales[iscale] != 0:
                spectrum = spectrum * self.kernel_hat[iscale]
            out[iscale, k] = self.image(spectrum)

        side_by_side(one, np.ndindex(len(self.scales), self.nmoment), self.nthreads)
        return out

    def subtract(self, residual_hat, increment, iscale) -> None:
        """Subtract ``Phi_s * P * increment`` (nmoment, N, N) from the residual spectra in place."""
        increment_hat = np.stack(side_by_side(self.fft, increment, self.nthreads))
        if self.scales[iscale] != 0:
            increment_hat *= self.kernel_hat[iscale]
        for k in range(self.nmoment):
            for q in range(self.nmoment):
                residual_hat[k] -= self.psf_hat[k + q] * increment_hat[q]

    def model_image(self, model_by_scale: np.ndarray) -> np.ndarray:
        """(nmoment, N, N) Jy/pixel: the components of each scale convolved with its kernel."""
        model = np.zeros(model_by_scale.shape[1:])
        for iscale, scale in enumerate(self.scales):
            for k, components in enumerate(model_by_scale[iscale]):
                if scale == 0:
                    model[k] += components
                elif components.any():
                    model[k] += self.image(self.fft(components) * self.kernel_hat[iscale])
        return model


def _taylor_index(nmoment: int) -> np.ndarray:
    """Index array ``[k + q]`` that turns the PSF terms into the Hessian ``H[k, q]``."""
    k = np.arange(nmoment)
    return k[:, None] + k[None, :]


def _values(hessian_inverse: np.ndarray, smoothed: np.ndarray) -> np.ndarray:
    """``a . r`` with ``a = H^-1 r`` per pixel (chi-square reduction, >= 0); any trailing shape."""
    nmoment = len(hessian_inverse)
    out = hessian_inverse[0, 0] * smoothed[0] ** 2
    for k in range(nmoment):
        for q in range(k, nmoment):
            if k + q:
                factor = hessian_inverse[k, q] * (1 if k == q else 2)
                out += factor * smoothed[k] * smoothed[q]
    return np.maximum(out, 0.0, out=out)


def _choose_scale(operator: _CleanOperator, smoothed: np.ndarray, level: float):
    """The scale with the largest biased value among pixels above the level, or None.

    Returns (scale index, value, (N, N) squared values of that scale).
    """
    best = None
    for iscale in range(len(operator.scales)):
        values = _values(operator.hessian_inverse[iscale], smoothed[iscale])
        values *= operator.biases[iscale] ** 2
        values[np.abs(smoothed[iscale, 0]) <= level] = 0.0
        border = operator.halves[iscale]  # components must fit inside the image
        if border:
            values[:border], values[-border:], values[:, :border], values[:, -border:] = 0, 0, 0, 0
        peak = np.sqrt(values.max())
        if peak > 0 and (best is None or peak > best[1]):
            best = (iscale, peak, values)
    return best


def _subminor_loop(operator, smoothed, values, iscale, peak_value, *, gain, level, budget):
    """Clean one scale on its active pixels; return the (nmoment, N, N) increment and the
    flat pixel index of each component.

    ``smoothed`` (nmoment, N, N) is the residual convolved with the scale and ``values`` (N, N)
    its squared biased values (neither is modified).
    """
    nmoment, npixel = operator.nmoment, operator.npixel
    hinv = operator.hessian_inverse[iscale]
    bias2 = operator.biases[iscale] ** 2
    stop = (SUBMINOR_FRACTION * peak_value) ** 2
    flat_values = values.ravel()
    active = np.flatnonzero(flat_values >= stop)
    if active.size > ACTIVE_MAX:
        active = np.sort(np.argpartition(flat_values, -ACTIVE_MAX)[-ACTIVE_MAX:])
        stop = max(stop, float(np.partition(flat_values, -ACTIVE_MAX - 1)[-ACTIVE_MAX - 1]))
    ax, ay = np.divmod(active, npixel)
    r = smoothed.reshape(nmoment, -1)[:, active]
    v = flat_values[active]
    patches = operator.patches[iscale]
    width = int(round(np.sqrt(patches.shape[1])))
    reach = width // 2
    taylor = _taylor_index(nmoment)
    increment = np.zeros((nmoment, npixel, npixel))
    pixels: list[int] = []
    while len(pixels) < budget:
        best = int(np.argmax(v))
        if v[best] < stop or v[best] <= 0.0:
            break
        component = gain * (hinv @ r[:, best])
        px, py = ax[best], ay[best]
        increment[:, px, py] += component
        pixels.append(int(active[best]))
        # active pixels are sorted by row (ix): the rows within reach are one slice
        lo, hi = np.searchsorted(ax, (px - reach, px + reach + 1))
        dy = ay[lo:hi] - (py - reach)
        near = lo + np.flatnonzero((dy >= 0) & (dy < width))
        psf = patches[:, (ax[near] - (px - reach)) * width + dy[near - lo]]
        rn = r[:, near] - np.einsum("kqn,q->kn", psf[taylor], component)
        r[:, near] = rn
        v[near] = bias2 * _values(hinv, rn) * (np.abs(rn[0]) > level)
    return increment, pixels
