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
from dataclasses import dataclass

import numpy as np
from scipy.interpolate import RectBivariateSpline

GRID = 32
"""Nodes across the coarse grid of the beam (at most the image's pixels), WSClean's
``-pb-grid-size`` default: on the seed's field (1024 pixels of 0.0005 rad, or 4096 of
0.000125) the bicubic interpolation is within 1.7e-4 of the Airy beam everywhere (9e-6 with a
grid of 64) and within 7e-4 of the EveryBeam station beams at 200 pixels sampled."""
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


@dataclass(frozen=True)
class CoarseBeam:
    """A power beam at a few frequencies on the coarse grid's nodes (pixel coordinates of an
    ``npixel`` image), interpolated bicubically wherever it is asked for."""

    nodes: np.ndarray  # (g,) pixel coordinates, 0 to npixel - 1
    values: np.ndarray  # (g, g, nfreq) power
    npixel: int

    def image(self, weights: np.ndarray) -> np.ndarray:
        """(npixel, npixel) float32: the frequencies' beams averaged with ``weights``, never
        below 0 (exact at the nodes; every pixel is a node when the grid is the image)."""
        weights = np.asarray(weights, dtype=np.float64)
        coarse = self.values @ (weights / weights.sum())
        if self.nodes.size == self.npixel:
            return np.maximum(coarse, 0.0).astype(np.float32)
        spline = RectBivariateSpline(self.nodes, self.nodes, coarse, kx=3, ky=3)
        out = np.empty((self.npixel, self.npixel), dtype=np.float32)
        columns = np.arange(self.npixel, dtype=np.float64)
        for start in range(0, self.npixel, ROWS_PER_STRIP):
            rows = columns[start : start + ROWS_PER_STRIP]
            out[start : start + rows.size] = np.maximum(spline(rows, columns), 0.0)
        return out

    def at(self, ix: np.ndarray, iy: np.ndarray) -> np.ndarray:
        """(n, nfreq) the beam at each frequency at fractional pixels (ix, iy) (n,)."""
        ix, iy = np.asarray(ix, np.float64).ravel(), np.asarray(iy, np.float64).ravel()
        out = np.empty((ix.size, self.values.shape[2]))
        for f in range(self.values.shape[2]):
            spline = RectBivariateSpline(self.nodes, self.nodes, self.values[:, :, f], kx=3, ky=3)
            out[:, f] = spline(ix, iy, grid=False)
        return np.maximum(out, 0.0)


def coarse_beam(
    power_at: Callable[[np.ndarray, np.ndarray], np.ndarray],
    *,
    npixel: int,
    cellsize: float,
    phase_centre: tuple[float, float],
    grid: int = GRID,
) -> CoarseBeam:
    """``power_at(ra, dec)`` ((n,) rad -> (n, nfreq) power) on ``min(grid, npixel)`` nodes a
    side spanning the image's pixels, ends included."""
    g = min(grid, npixel)
    nodes = np.linspace(0.0, npixel - 1.0, g)
    ra, dec = pixel_to_sky(
        nodes[:, None], nodes[None, :], npixel=npixel, cellsize=cellsize,
        phase_centre=phase_centre,
    )  # fmt: skip
    values = np.asarray(power_at(ra.ravel(), dec.ravel()), dtype=np.float64)
    return CoarseBeam(nodes=nodes, values=values.reshape(g, g, -1), npixel=npixel)


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
