"""PNG preview of an image on the sky: RA/Dec axes (astropy WCSAxes, the FITS products' WCS),
the clean beam, the phase centre, an asinh stretch between percentiles and a colour bar."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from sdpbatch.io.atomic import atomic_path
from sdpbatch.io.fits_image import fits_header
from sdpbatch.science.assess import robust_rms


def preview_figure(
    image: np.ndarray,
    *,
    cellsize: float,
    phase_centre: tuple[float, float],
    title: str,
    beam: Any = None,
    unit: str = "Jy/beam",
    low_percentile: float = 0.5,
    dpi: int = 100,
):
    """A matplotlib Figure of an (N, N) science-orientation image ``[ix, iy]`` (ix east).

    The axes are RA and Dec (J2000) from the same celestial WCS as the FITS products, east to
    the left; the clean beam (bmaj, bmin, bpa radians, or an object with those attributes) is
    drawn in the lower left corner, the phase centre as a cross.  The colour scale is
    :func:`asinh_stretch` from the ``low_percentile`` to the peak.
    """
    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib.figure import Figure

    image = np.asarray(image, dtype=np.float64)
    if image.ndim != 2 or image.shape[0] != image.shape[1]:
        raise ValueError(f"preview needs an (N, N) image, got shape {image.shape}")
    wcs = _celestial_wcs(image.shape[0], cellsize=cellsize, phase_centre=phase_centre, unit=unit)
    fig = Figure(figsize=(7.5, 6.5), dpi=dpi)
    ax = fig.add_subplot(1, 1, 1, projection=wcs)
    # science [ix, iy] -> FITS pixels [y, x] with x = N - 1 - ix (RA to the left)
    norm = asinh_stretch(image, low_percentile=low_percentile)
    shown = ax.imshow(image.T[:, ::-1], origin="lower", cmap="inferno", norm=norm)
    ax.coords[0].set_axislabel("RA (J2000)")
    ax.coords[1].set_axislabel("Dec (J2000)")
    ax.coords.grid(color="white", alpha=0.25, linestyle=":")
    centre = wcs.wcs.crpix - 1.0  # 0-based pixel of the phase centre
    ax.plot(*centre, marker="+", markersize=14, color="cyan", label="phase centre")
    if beam is not None:
        _draw_beam(ax, beam, cellsize=cellsize, npixel=image.shape[0])
    ax.set_title(title)
    fig.colorbar(shown, ax=ax, label=unit)
    return fig


def asinh_stretch(image: np.ndarray, *, low_percentile: float = 0.5):
    """The colour scale of an image: an asinh stretch from the ``low_percentile`` of its finite
    pixels to the peak, linear within 3 robust sigma (:func:`~sdpbatch.science.assess.robust_rms`),
    so the noise and the brightest sources both show (a matplotlib ``AsinhNorm``)."""
    from matplotlib import colors

    finite = image[np.isfinite(image)]
    if finite.size == 0:
        finite = np.zeros(1)
    lo, hi = float(np.percentile(finite, low_percentile)), float(finite.max())
    if hi <= lo:
        hi = lo + 1.0
    rms = robust_rms(finite)
    width = 3.0 * rms if rms > 0 else 0.01 * (hi - lo)
    return colors.AsinhNorm(linear_width=width, vmin=lo, vmax=hi)


def _celestial_wcs(npixel: int, *, cellsize: float, phase_centre: tuple[float, float], unit: str):
    """The RA/Dec WCS of the FITS products for an image of ``npixel`` squared."""
    from astropy.wcs import WCS

    header = fits_header(
        npixel=npixel,
        phase_centre=phase_centre,
        cellsize=cellsize,
        frequencies=np.array([1.0]),
        bandwidths=None,
        bunit=unit,
    )
    return WCS(header).celestial


def _draw_beam(ax, beam: Any, *, cellsize: float, npixel: int) -> None:
    """The clean beam (bmaj, bmin, bpa rad) as a filled ellipse in the lower left corner."""
    from matplotlib.patches import Ellipse

    bmaj, bmin, bpa = (beam.bmaj, beam.bmin, beam.bpa) if hasattr(beam, "bmaj") else tuple(beam)
    corner = max(bmaj / cellsize, 0.06 * npixel)  # the beam's centre, from the lower left
    ax.add_patch(
        Ellipse(
            (corner, corner),
            width=bmaj / cellsize,
            height=bmin / cellsize,
            angle=float(np.degrees(bpa)) + 90.0,  # PA from north through east (left)
            facecolor="white",
            edgecolor="white",
            alpha=0.8,
            label="clean beam",
        )
    )


def write_preview_png(path: str | Path, image: np.ndarray, **figure: Any) -> Path:
    """Render :func:`preview_figure` of ``image`` to a PNG at ``path`` (atomically)."""
    fig = preview_figure(image, **figure)
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    return path
