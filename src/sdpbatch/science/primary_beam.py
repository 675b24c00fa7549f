"""The average station power beam on an image grid, and images corrected by it.

The beam (as WSClean's ``-beam-0.fits``) is evaluated on a coarse grid of ``grid`` x ``grid``
nodes spanning the image's pixels, ends included, and interpolated to every pixel by a bicubic
spline (as WSClean does, ``-pb-grid-size``): the beam changes over a station's
lambda/D, hundreds of pixels, so the coarse grid costs a few thousand beam evaluations
whatever the image size.  What gives the power towards a direction is the caller's
(``power_at``): the simulation's Airy beam, or its EveryBeam station beams averaged over
stations and times.

Images are ``image[ix, iy]``, ``l = (ix - N/2) cell`` east, ``m = (iy - N/2) cell`` north
(SIN projection about the phase centre).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from scipy.interpolate import RectBivariateSpline

GRID = 32
"""Nodes across the coarse grid of the beam (at most the image's pixels), WSClean's
``-pb-grid-size`` default: on the seed's 1024-pixel field the bicubic interpolation is within
1.7e-4 of the Airy beam everywhere and 7e-4 of the EveryBeam station beams (64: 9e-6)."""
ROWS_PER_STRIP = 256
"""Image rows interpolated at a time (bounds the spline's temporaries)."""


def pixel_to_sky(
    ix: np.ndarray, iy: np.ndarray, *, npixel: int, cellsize: float,
    phase_centre: tuple[float, float],
) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
    """(ra, dec) radians of fractional pixels (ix, iy) of a SIN-projected image (NaN beyond
    the horizon of the projection); the inverse of :func:`sdpbatch.science.assess.sky_to_pixel`."""
    ix, iy = np.broadcast_arrays(np.asarray(ix, np.float64), np.asarray(iy, np.float64))
    l_ = (ix - npixel / 2) * cellsize
    m = (iy - npixel / 2) * cellsize
    n = np.sqrt(np.where(l_ * l_ + m * m <= 1.0, 1.0 - l_ * l_ - m * m, np.nan))
    ra0, dec0 = phase_centre
    sd0, cd0 = np.sin(dec0), np.cos(dec0)
    dec = np.arcsin(np.clip(m * cd0 + n * sd0, -1.0, 1.0))
    ra = np.mod(ra0 + np.arctan2(l_, n * cd0 - m * sd0), 2 * np.pi)
    return ra, dec


def beam_image(
    power_at: Callable[[np.ndarray, np.ndarray], np.ndarray],
    *,
    npixel: int,
    cellsize: float,
    phase_centre: tuple[float, float],
    grid: int = GRID,
) -> np.ndarray:
    """(npixel, npixel) float32 power beam: ``power_at(ra, dec)`` ((n,) rad -> (n,) power) on
    ``min(grid, npixel)`` nodes a side, interpolated bicubically (exact when the grid is the
    image), never below 0."""
    g = min(grid, npixel)
    nodes = np.linspace(0.0, npixel - 1.0, g)
    ra, dec = pixel_to_sky(
        nodes[:, None], nodes[None, :], npixel=npixel, cellsize=cellsize,
        phase_centre=phase_centre,
    )  # fmt: skip
    coarse = np.asarray(power_at(ra.ravel(), dec.ravel()), dtype=np.float64).reshape(g, g)
    if g == npixel:
        return np.maximum(coarse, 0.0).astype(np.float32)
    spline = RectBivariateSpline(nodes, nodes, coarse, kx=3, ky=3)
    out = np.empty((npixel, npixel), dtype=np.float32)
    columns = np.arange(npixel, dtype=np.float64)
    for start in range(0, npixel, ROWS_PER_STRIP):
        rows = columns[start : start + ROWS_PER_STRIP]
        out[start : start + rows.size] = np.maximum(spline(rows, columns), 0.0)
    return out


def corrected(image: np.ndarray, beam: np.ndarray, *, limit: float) -> np.ndarray:
    """``image / beam`` (float32), NaN where the beam is below ``limit`` (WSClean's
    ``-primary-beam-limit``): there the division would only amplify the noise."""
    image = np.asarray(image, dtype=np.float64)
    beam = np.asarray(beam, dtype=np.float64)
    if image.shape != beam.shape:
        raise ValueError(f"image {image.shape} and beam {beam.shape} differ in shape")
    out = np.full(image.shape, np.nan, dtype=np.float32)
    keep = beam >= limit
    out[keep] = image[keep] / beam[keep]
    return out
