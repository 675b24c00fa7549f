"""A minor cycle as sub-images cleaned apart (WSClean's ``-parallel-deconvolution``).

The image is split into square tiles of at most ``size`` pixels a side (:func:`split`).  The
seams between them are not straight: as WSClean does, each runs along the path of lowest
scale-smoothed residual within :func:`freedom` pixels of the straight line (:func:`seams`),
so that a source near a seam lies wholly on one side of it, and the pixels each tile owns, its
*core*, follow them (:func:`owners`: every pixel is owned by exactly one tile).  Each tile is
cleaned on its *sub-image*: its straight core with a margin of the seam's freedom, the largest
scale's half width and the PSF patch's half width (moved inwards at the image's edges, so
every sub-image is a square of one size), with the PSF cut to that size.  There the clean is
:func:`~sdpbatch.science.clean.msmfs_clean` at the whole image's stopping level: sources in
the margin are cleaned too, so their sidelobes do not become false components in the core,
but only the core's components are kept.  A source on a seam is thus cleaned by each tile
that sees it and kept by one.  The cores' models are added, and one exact full-image residual
update (the combined model convolved with the PSF patch, as every outer step of the
whole-image clean) gives the residual.  Extended emission wider than the seam's freedom is
cut; each side keeps its part, and what the parts miss is left for the next minor cycle.

Tiles where nothing can be cleaned (no term-0 residual above the level within reach of the
core) are skipped.  Images are ``[ix, iy]``; units as in :mod:`sdpbatch.science.clean`
(residuals Jy/beam, models Jy/pixel).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from sdpbatch.science.clean import (
    CleanResult,
    msmfs_clean,
    scale_kernel,
)
from sdpbatch.science.clean_psf import stopping_level, subtract_model


@dataclass(frozen=True)
class Tile:
    """One sub-image: its ``number`` (in :func:`owners`' map), its straight core
    ``[x0, x1) x [y0, y1)`` and the square sub-image ``[ox, ox + size) x [oy, oy + size)`` it
    is cleaned on (pixels of the whole image)."""

    number: int
    x0: int
    x1: int
    y0: int
    y1: int
    ox: int
    oy: int
    size: int

    @property
    def window(self) -> tuple[slice, slice]:
        """The sub-image's pixels in the whole image."""
        return slice(self.ox, self.ox + self.size), slice(self.oy, self.oy + self.size)


def reach(scales: Sequence[int]) -> int:
    """The largest scale kernel's half width (px)."""
    return max(scale_kernel(int(s)).shape[0] // 2 for s in scales)


def freedom(scales: Sequence[int]) -> int:
    """How far (px) a seam may leave its straight line: twice the largest scale's reach, and
    at least :data:`SEAM_FREEDOM`."""
    return max(SEAM_FREEDOM, 2 * reach(scales))


SEAM_FREEDOM = 16
"""The least freedom of a seam (px): room to pass around a point source's main lobe."""


def margin(scales: Sequence[int], support: int) -> int:
    """Pixels around a straight core: the seam's freedom, the largest scale's half width and
    the PSF patch's (``support``): a component outside the sub-image subtracts nothing from
    the core."""
    return freedom(scales) + reach(scales) + int(support)


def split(npixel: int, size: int, overlap: int) -> list[Tile]:
    """Tiles of an ``npixel``-square image, row by row: ``ceil(npixel / size)`` straight cores
    a side, of sizes differing by one pixel at most, each with a sub-image of its core plus
    ``overlap`` pixels a side (one even size for all, at most ``npixel``, inside the image)."""
    if size < 1 or overlap < 0:
        raise ValueError(f"tile size must be >= 1 and overlap >= 0, got {size}, {overlap}")
    count = -(-npixel // size)
    edges = [int(e) for e in np.linspace(0, npixel, count + 1).round()]
    largest = max(hi - lo for lo, hi in zip(edges[:-1], edges[1:], strict=True))
    sub = min(npixel, largest + 2 * overlap + (largest + 2 * overlap) % 2)

    def origin(lo: int, hi: int) -> int:
        return int(np.clip(lo - (sub - (hi - lo)) // 2, 0, npixel - sub))

    bands = list(zip(edges[:-1], edges[1:], strict=True))
    return [
        Tile(i * count + j, x0, x1, y0, y1, origin(x0, x1), origin(y0, y1), sub)
        for i, (x0, x1) in enumerate(bands)
        for j, (y0, y1) in enumerate(bands)
    ]


def seams(residual0: np.ndarray, edges: Sequence[int], free: int, width: int) -> np.ndarray:
    """(len(edges), N) int: for each straight seam ``x = e`` of the (N, N) term-0 residual,
    the row ``x(y)`` where the seam crosses column ``y``: within ``free`` px of ``e``, moving
    at most one row from column to column, of least total ``|residual0|`` smoothed by a
    ``width``-pixel box (dynamic programming)."""
    from scipy.ndimage import uniform_filter

    npixel = residual0.shape[1]
    offsets = np.arange(-free, free + 1)
    rows = np.clip(np.asarray(edges, dtype=int)[:, None] + offsets, 1, npixel - 1)  # (seam, r)
    band = np.empty((len(edges), offsets.size, npixel))  # (seam, r, y): the cost near a seam
    for i, edge in enumerate(edges):
        lo, hi = max(0, edge - free - width), min(npixel, edge + free + width + 1)
        near = uniform_filter(np.abs(residual0[lo:hi]), width, mode="constant")
        band[i] = near[rows[i] - lo]
    total = band[:, :, 0].copy()
    step = np.zeros(band.shape, dtype=np.int8)
    inf = np.full((len(edges), 1), np.inf)
    for y in range(1, npixel):
        options = np.stack([np.hstack([inf, total[:, :-1]]), total, np.hstack([total[:, 1:], inf])])
        choice = np.argmin(options, axis=0)
        step[:, :, y] = choice - 1
        total = np.take_along_axis(options, choice[None], axis=0)[0] + band[:, :, y]
    at = np.argmin(total, axis=1)
    seam = np.arange(len(edges))
    paths = np.empty((len(edges), npixel), dtype=int)
    for y in range(npixel - 1, -1, -1):
        paths[:, y] = rows[seam, at]
        at = at + step[seam, at, y]
    return paths


def owners(residual0: np.ndarray, tiles: Sequence[Tile], scales: Sequence[int]) -> np.ndarray:
    """(N, N) int32: the number (:class:`Tile`) of the tile owning each pixel, with the seams
    along the paths of least term-0 residual ``residual0`` (N, N) smoothed by the largest
    scale (:func:`seams`)."""
    npixel = residual0.shape[0]
    edges = sorted({t.x0 for t in tiles} - {0})
    free, width = freedom(scales), 2 * reach(scales) + 1
    x = np.arange(npixel)[:, None]
    band = np.zeros((npixel, npixel), dtype=np.int32)
    for path in seams(residual0, edges, free, width):  # seams across y: each pixel's row band
        band += (x >= path[None, :]) * np.int32(len(edges) + 1)
    for path in seams(residual0.T, edges, free, width):  # seams across x: its column band
        band += (x >= path[None, :]).T
    return band


def needed(tile: Tile, residual0: np.ndarray, level: float, scales: Sequence[int]) -> bool:
    """True when some term-0 residual pixel of ``residual0`` (N, N) within reach of the tile's
    core (its straight core, the seam's freedom and the largest scale's half width) is above
    ``level``: only then can a component fall in the core (a scale-smoothed value is at most
    the largest value under its kernel)."""
    r = reach(scales) + freedom(scales)
    near = residual0[max(0, tile.x0 - r) : tile.x1 + r, max(0, tile.y0 - r) : tile.y1 + r]
    return bool(np.abs(near).max() > level)


def psf_cut(psf_taylor: np.ndarray, size: int) -> np.ndarray:
    """The centre ``size x size`` of the PSF terms (nterm, N, N): peak at ``(size // 2,) * 2``."""
    start = psf_taylor.shape[1] // 2 - size // 2
    return np.ascontiguousarray(psf_taylor[:, start : start + size, start : start + size])


@dataclass(frozen=True)
class Plan:
    """How a minor cycle is split: the whole image's stopping ``level`` (Jy/beam), the PSF
    patch's half width ``support`` (px), the ``tiles`` where something can be cleaned and
    the ``owner`` (N, N) of every pixel (:func:`owners`)."""

    level: float
    support: int
    tiles: list[Tile]
    owner: np.ndarray


def cut(residual_taylor: np.ndarray, plan: Plan, tile: Tile) -> tuple[np.ndarray, np.ndarray]:
    """The tile's sub-image (nmoment, size, size) of the residual Taylor images and its core
    (size, size) bool."""
    window = tile.window
    residual = np.ascontiguousarray(residual_taylor[(slice(None), *window)])
    return residual, plan.owner[window] == tile.number


@dataclass(frozen=True)
class TileResult:
    """A tile's minor cycle: ``model`` (nmoment, size, size) Jy/pixel, its core's components
    only (with their scale kernels, which may reach into the margin); ``components`` its
    core's (the margin's are taken too, and dropped); ``stop_reason`` as
    :class:`~sdpbatch.science.clean.CleanResult`'s."""

    tile: Tile
    model: np.ndarray
    components: int
    stop_reason: str


def clean_tile(
    residual: np.ndarray,
    core: np.ndarray,
    psf: np.ndarray,
    tile: Tile,
    *,
    level: float,
    scales: Sequence[int],
    gain: float,
    niter: int,
    psf_support: int,
    nthreads: int = 1,
) -> TileResult:
    """Clean one sub-image (nmoment, size, size) down to the whole image's ``level`` (Jy/beam)
    with the PSF cut to its size (:func:`psf_cut`), keeping the components in its ``core``
    (size, size) bool; at most ``niter`` components in the sub-image."""
    result = msmfs_clean(
        residual,
        psf,
        scales=scales,
        gain=gain,
        niter=niter,
        threshold=level,
        fractional_threshold=0.0,
        psf_support=psf_support,
        nthreads=nthreads,
        keep=core,
    )
    return TileResult(tile, result.model_taylor, result.components, result.stop_reason)


def combine(
    residual_taylor: np.ndarray,
    psf_taylor: np.ndarray,
    parts: Sequence[TileResult],
    *,
    support: int,
    nthreads: int = 1,
) -> CleanResult:
    """The minor cycle's result from its tiles: their models added in place (nmoment, N, N)
    and the residual updated once with the PSF patch of half width ``support`` px."""
    peak_start = float(np.abs(residual_taylor[0]).max())
    model = np.zeros(residual_taylor.shape)
    for part in parts:
        model[(slice(None), *part.tile.window)] += part.model
    residual = np.array(residual_taylor, dtype=float)
    if model.any():
        residual = subtract_model(residual, psf_taylor, model, support=support, nthreads=nthreads)
    reasons = {p.stop_reason for p in parts}
    return CleanResult(
        model_taylor=model,
        residual_taylor=residual,
        components=sum(p.components for p in parts),
        peak_start=peak_start,
        peak_end=float(np.abs(residual[0]).max()),
        stop_reason=next((r for r in ("niter", "stalled") if r in reasons), "threshold"),
    )


def plan(
    residual_taylor: np.ndarray,
    psf_taylor: np.ndarray,
    *,
    size: int,
    scales: Sequence[int],
    threshold: float,
    fractional_threshold: float,
    psf_support: int,
) -> Plan | None:
    """The :class:`Plan` of a minor cycle in tiles of at most ``size`` px, or None when a
    sub-image would be the whole image (a PSF with high far sidelobes uses all of it) or a
    seam could reach the next one."""
    level, support = stopping_level(
        residual_taylor[0],
        psf_taylor[0],
        threshold=threshold,
        fractional_threshold=fractional_threshold,
        psf_support=psf_support,
    )
    npixel = residual_taylor.shape[1]
    tiles = split(npixel, size, margin(scales, support))
    narrowest = min(t.x1 - t.x0 for t in tiles)
    if len(tiles) < 2 or tiles[0].size >= npixel or narrowest <= 2 * freedom(scales) + 2:
        return None
    owner = owners(residual_taylor[0], tiles, scales)
    kept = [t for t in tiles if needed(t, residual_taylor[0], level, scales)]
    return Plan(level, support, kept, owner)


def tiled_clean(
    residual_taylor: np.ndarray,
    psf_taylor: np.ndarray,
    *,
    size: int,
    scales: Sequence[int],
    gain: float,
    niter: int,
    threshold: float,
    fractional_threshold: float,
    psf_support: int,
    nthreads: int = 1,
) -> CleanResult:
    """:func:`~sdpbatch.science.clean.msmfs_clean` (same arguments and result) as tiles of at
    most ``size`` px cleaned one after the other (the whole image when :func:`plan` says so);
    ICAL runs the same steps as tasks on the workers."""
    clean = dict(scales=scales, gain=gain, niter=niter, psf_support=psf_support)
    limits = dict(threshold=threshold, fractional_threshold=fractional_threshold)
    planned = plan(residual_taylor, psf_taylor, size=size, scales=scales, psf_support=psf_support,
                   **limits)  # fmt: skip
    if planned is None:
        return msmfs_clean(residual_taylor, psf_taylor, nthreads=nthreads, **clean, **limits)
    psf = psf_cut(psf_taylor, planned.tiles[0].size) if planned.tiles else None
    parts = [
        clean_tile(*cut(residual_taylor, planned, t), psf, t, level=planned.level,
                   nthreads=nthreads, **clean)
        for t in planned.tiles
    ]  # fmt: skip
    return combine(residual_taylor, psf_taylor, parts, support=planned.support, nthreads=nthreads)
