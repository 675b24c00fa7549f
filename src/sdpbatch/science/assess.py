"""Quality measures of ICAL results: image statistics, source photometry, gain errors.

Pure numpy.  Images are in science orientation ``image[ix, iy]`` with
``l = (ix - N/2) cell`` (east) and ``m = (iy - N/2) cell`` (north).
"""

from __future__ import annotations

import numpy as np

from sdpbatch.science.constants import C

MAD_TO_SIGMA = 1.4826


def robust_rms(image: np.ndarray) -> float:
    """``1.4826 * median(|x - median(x)|)`` over the finite pixels: the noise, robust to the
    sources in the image."""
    finite = np.asarray(image, dtype=np.float64)
    finite = finite[np.isfinite(finite)]
    return float(MAD_TO_SIGMA * np.median(np.abs(finite - np.median(finite))))


def image_statistics(image: np.ndarray, *, noise_image: np.ndarray | None = None) -> dict:
    """Peak, robust rms and dynamic range of an image (Jy/beam).

    The rms is ``1.4826 * median(|x - median(x)|)`` over ``noise_image`` (e.g. the residual)
    if given, else over ``image``: robust to the sources in it.  Also returns the plain
    standard deviation and the minimum.
    """
    image = np.asarray(image, dtype=np.float64)
    rms = robust_rms(image if noise_image is None else noise_image)
    peak = float(np.nanmax(image))
    return {
        "peak": peak,
        "min": float(np.nanmin(image)),
        "rms": rms,
        "std": float(np.nanstd(image)),
        "dynamic_range": peak / rms if rms > 0 else float("inf"),
    }


def sky_to_pixel(
    ra: np.ndarray | float,
    dec: np.ndarray | float,
    phase_centre: tuple[float, float],
    cellsize: float,
    npixel: int,
) -> tuple[np.ndarray, np.ndarray]:
    """Fractional pixel (ix, iy) of directions (ra, dec) radians in a SIN-projected image.

    ``l = cos(dec) sin(ra - ra0)``, ``m = sin(dec) cos(dec0) - cos(dec) sin(dec0) cos(ra - ra0)``,
    ``ix = N/2 + l/cell``, ``iy = N/2 + m/cell``.
    """
    ra0, dec0 = phase_centre
    dra = np.asarray(ra, dtype=np.float64) - ra0
    dec = np.asarray(dec, dtype=np.float64)
    l = np.cos(dec) * np.sin(dra)
    m = np.sin(dec) * np.cos(dec0) - np.cos(dec) * np.sin(dec0) * np.cos(dra)
    return npixel / 2 + l / cellsize, npixel / 2 + m / cellsize


def _quadratic_peak(patch: np.ndarray) -> tuple[float, float, float]:
    """Peak value and offset (dx, dy) of a 3x3 patch by a least-squares 2-D quadratic.

    Fitted to log(patch) when all values are positive: exact for a Gaussian peak, which is
    what a restored point source is.
    """
    use_log = bool(np.all(patch > 0))
    z = np.log(patch) if use_log else patch
    dx, dy = np.meshgrid([-1.0, 0.0, 1.0], [-1.0, 0.0, 1.0], indexing="ij")
    design = np.stack(
        [
            np.ones(9),
            dx.ravel(),
            dy.ravel(),
            dx.ravel() ** 2,
            dx.ravel() * dy.ravel(),
            dy.ravel() ** 2,
        ],
        axis=1,
    )
    a, bx, by, cxx, cxy, cyy = np.linalg.lstsq(design, z.ravel(), rcond=None)[0]
    hessian = np.array([[2 * cxx, cxy], [cxy, 2 * cyy]])
    try:
        offset = -np.linalg.solve(hessian, [bx, by])
    except np.linalg.LinAlgError:
        offset = np.zeros(2)
    if not np.all(np.isfinite(offset)) or np.any(np.abs(offset) > 1.0):
        offset = np.zeros(2)  # not a proper maximum: keep the pixel
    ox, oy = offset
    value = a + bx * ox + by * oy + cxx * ox**2 + cxy * ox * oy + cyy * oy**2
    return float(np.exp(value) if use_log else value), float(ox), float(oy)


def measure_source(
    image: np.ndarray, ix: float, iy: float, *, search: int = 2
) -> tuple[float, float, float]:
    """Flux (peak, Jy/beam) and fractional position (x, y) of a compact source near (ix, iy).

    Finds the brightest pixel within ``search`` pixels of the expected position, then fits a
    2-D quadratic to the logarithm of its 3x3 neighbourhood (a Gaussian, i.e. the restoring
    beam), so the result is the interpolated peak, not the nearest pixel's value.
    """
    image = np.asarray(image, dtype=np.float64)
    n0, n1 = image.shape
    cx, cy = int(round(ix)), int(round(iy))
    x0, x1 = max(cx - search, 1), min(cx + search + 1, n0 - 1)
    y0, y1 = max(cy - search, 1), min(cy + search + 1, n1 - 1)
    if x0 >= x1 or y0 >= y1:
        raise ValueError(f"position ({ix:.1f}, {iy:.1f}) is outside the {n0}x{n1} image")
    box = image[x0:x1, y0:y1]
    bx, by = np.unravel_index(np.argmax(box), box.shape)
    px, py = x0 + int(bx), y0 + int(by)
    flux, dx, dy = _quadratic_peak(image[px - 1 : px + 2, py - 1 : py + 2])
    return flux, px + dx, py + dy


def local_east_north(antenna_positions: np.ndarray) -> np.ndarray:
    """(nant, 2) east, north metres relative to the array centre.

    Geocentric (ITRF) positions (|mean| > 1000 km) are rotated into the tangent plane at
    their centroid; anything else is taken as local (east, north, up) already.
    """
    pos = np.asarray(antenna_positions, dtype=np.float64).reshape(-1, 3)
    centre = pos.mean(axis=0)
    if np.linalg.norm(centre) < 1e6:
        return pos[:, :2] - centre[:2]
    up = centre / np.linalg.norm(centre)
    east = np.cross([0.0, 0.0, 1.0], up)
    east /= np.linalg.norm(east)
    north = np.cross(up, east)
    rel = pos - centre
    return np.stack([rel @ east, rel @ north], axis=1)


def _phase_difference_planes(
    solved: np.ndarray,
    true: np.ndarray,
    antenna_positions: np.ndarray,
    reference: int,
    fit: bool = True,
) -> tuple[np.ndarray, list[np.ndarray]]:
    """Fit ``a + b east + c north`` to the referenced phase of solved x conj(true).

    Returns the (ntime, nfreq, 3) coefficients (NaN where fewer than 4 stations are valid)
    and the residual phases of every fitted (time, frequency); with ``fit`` False the
    coefficients are zero and the residuals the referenced phases themselves.
    """
    solved = np.asarray(solved, dtype=np.complex128)
    true = np.asarray(true, dtype=np.complex128)
    if solved.ndim == 2:
        solved = solved[..., None]
    if true.ndim == 2:
        true = true[..., None]
    solved, true = np.broadcast_arrays(solved, true)
    valid = np.isfinite(solved) & (np.abs(solved) > 0) & np.isfinite(true) & (np.abs(true) > 0)
    ratio = np.where(valid, solved * np.conj(true), 1.0)
    ratio = (
        ratio
        * np.conj(ratio[:, reference : reference + 1, :])
        / np.maximum(np.abs(ratio[:, reference : reference + 1, :]), 1e-300)
    )
    phase = np.angle(ratio)  # (ntime, nant, nfreq), wrapped to (-pi, pi]
    en = local_east_north(antenna_positions)
    design = np.column_stack([np.ones(en.shape[0]), en])
    coefficients = np.full((phase.shape[0], phase.shape[2], 3), np.nan)
    residuals = []
    for t in range(phase.shape[0]):
        for f in range(phase.shape[2]):
            ok = valid[t, :, f]
            if ok.sum() < 4:
                continue
            coeff = (
                np.linalg.lstsq(design[ok], phase[t, ok, f], rcond=None)[0] if fit else np.zeros(3)
            )
            coefficients[t, f] = coeff
            residuals.append(np.angle(np.exp(1j * (phase[t, ok, f] - design[ok] @ coeff))))
    if not residuals:
        raise ValueError("no time/frequency with at least 4 valid stations to compare")
    return coefficients, residuals


def gain_phase_error(
    solved: np.ndarray,
    true: np.ndarray,
    antenna_positions: np.ndarray,
    *,
    reference: int = 0,
    remove_gradient: bool = True,
) -> float:
    """Rms (rad) of solved minus true gain phases, up to what self-calibration cannot know.

    Both are referenced to station ``reference``; then per time (and frequency) the best-fit
    plane ``a + b east + c north`` of the phase difference across the stations is removed
    (a linear phase gradient only shifts the image; ``remove_gradient`` False keeps it).
    Gains (ntime, nant) or (ntime, nant, nfreq); a single frequency broadcasts against
    several.  Stations whose solved gain is zero or not finite are left out.
    """
    _, residuals = _phase_difference_planes(
        solved, true, antenna_positions, reference, remove_gradient
    )
    return float(np.sqrt(np.mean(np.concatenate(residuals) ** 2)))


def gradient_image_shift(
    solved: np.ndarray,
    true: np.ndarray,
    antenna_positions: np.ndarray,
    *,
    frequencies: np.ndarray,
    cellsize: float,
) -> tuple[float, float]:
    """Image shift (dx, dy) in pixels caused by the phase gradient self-calibration left.

    Correcting with solved gains whose phase exceeds the truth by ``b east + c north`` (rad)
    multiplies the data by ``exp(+i (b, c) . baseline)``, which moves every source by
    ``(b, c) lambda / (2 pi)`` in (l, m).  Averaged over the times (each time is one image of
    the sum) and over ``frequencies`` (Hz) for lambda; near the zenith (l, m) ~ (east, north).
    """
    coefficients, _ = _phase_difference_planes(solved, true, antenna_positions, 0)
    gradient = np.nanmean(coefficients[..., 1:], axis=(0, 1))  # rad/m, (east, north)
    wavelength = float(np.mean(C / np.asarray(frequencies, dtype=np.float64)))
    shift = gradient * wavelength / (2 * np.pi) / cellsize
    return float(shift[0]), float(shift[1])


# --- comparison with a simulation's truth --------------------------------------------------------


def nearest_index(axis: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Index of the nearest ``axis`` entry to each of ``values``."""
    axis = np.atleast_1d(np.asarray(axis, dtype=np.float64))
    values = np.atleast_1d(np.asarray(values, dtype=np.float64))
    return np.abs(axis[None, :] - values[:, None]).argmin(axis=1)


def gains_on(
    terms: list[tuple[np.ndarray, np.ndarray, np.ndarray]],
    *,
    stations: np.ndarray,
    times: np.ndarray,
    frequencies: np.ndarray,
) -> np.ndarray:
    """Product of gain terms at given times, frequencies and stations (nearest solution).

    terms : (gains (nint, nant, nfreq), interval centres (nint,) s, frequencies (nfreq,) Hz)
    per term; stations : (nsta,) indices into the terms' stations.  Returns
    (ntimes, nsta, nfreq) complex.
    """
    total = np.ones((len(times), len(stations), len(frequencies)), complex)
    for gains, term_times, term_freqs in terms:
        it = nearest_index(term_times, times)
        jf = nearest_index(term_freqs, frequencies)
        total *= np.asarray(gains)[np.ix_(it, stations, jf)]
    return total


def brightest_sources(
    restored: np.ndarray,
    *,
    ra: np.ndarray,
    dec: np.ndarray,
    flux: np.ndarray,
    phase_centre: tuple[float, float],
    cellsize: float,
    count: int,
    margin: int = 4,
) -> list[dict]:
    """The ``count`` brightest sources inside the image (``margin`` px from the edge) measured
    in ``restored``: true and measured flux (Jy), their ratio and the offset (px).

    ra, dec : (nsrc,) rad; flux : (nsrc,) Jy, the flux the image should show.
    """
    n = restored.shape[0]
    ix, iy = sky_to_pixel(ra, dec, phase_centre, cellsize, n)
    inside = (ix > margin) & (ix < n - margin) & (iy > margin) & (iy < n - margin)
    out = []
    for k in [k for k in np.argsort(-flux) if inside[k]][:count]:
        measured, x, y = measure_source(restored, ix[k], iy[k])
        out.append(
            {
                "index": int(k),
                "true_flux_jy": float(flux[k]),
                "measured_flux_jy": measured,
                "flux_ratio": measured / float(flux[k]),
                "offset_xy_pixels": [float(x - ix[k]), float(y - iy[k])],
                "offset_pixels": float(np.hypot(x - ix[k], y - iy[k])),
            }
        )
    return out


def source_offsets_summary(sources: list[dict]) -> dict:
    """Worst flux error and offset of measured sources, their common shift (median, robust to
    a faint badly measured source) and the worst offset once it is removed."""
    if not sources:
        return {}
    offsets = np.array([s["offset_xy_pixels"] for s in sources])
    common = np.median(offsets, axis=0)
    return {
        "max_flux_error": max(abs(s["flux_ratio"] - 1) for s in sources),
        "max_offset_pixels": max(s["offset_pixels"] for s in sources),
        "common_shift_pixels": [float(common[0]), float(common[1])],
        "max_offset_after_common_shift_pixels": float(np.max(np.hypot(*(offsets - common).T))),
    }
