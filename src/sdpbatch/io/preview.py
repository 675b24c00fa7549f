"""PNG preview of an image on the sky: RA/Dec axes (astropy WCSAxes, the FITS products' WCS),
the clean beam, the phase centre, an asinh stretch between percentiles and a colour bar."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from sdpbatch.io.atomic import atomic_path
from sdpbatch.io.fits_image import fits_header


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
    drawn in the lower left corner, the phase centre as a cross.  The colour scale is an asinh
    stretch from the ``low_percentile`` to the peak, linear within a few times the robust rms.
    """
    import matplotlib

    matplotlib.use("Agg", force=False)
    from astropy.wcs import WCS
    from matplotlib import colors
    from matplotlib.figure import Figure
    from matplotlib.patches import Ellipse

    image = np.asarray(image, dtype=np.float64)
    if image.ndim != 2 or image.shape[0] != image.shape[1]:
        raise ValueError(f"preview needs an (N, N) image, got shape {image.shape}")
    n = image.shape[0]
    header = fits_header(
        npixel=n,
        phase_centre=phase_centre,
        cellsize=cellsize,
        frequencies=np.array([1.0]),
        bandwidths=None,
        bunit=unit,
    )
    wcs = WCS(header).celestial
    finite = image[np.isfinite(image)]
    if finite.size == 0:
        finite = np.zeros(1)
    lo, hi = float(np.percentile(finite, low_percentile)), float(finite.max())
    if hi <= lo:
        hi = lo + 1.0
    rms = 1.4826 * float(np.median(np.abs(finite - np.median(finite))))
    width = 3.0 * rms if rms > 0 else 0.01 * (hi - lo)
    norm = colors.AsinhNorm(linear_width=width, vmin=lo, vmax=hi)
    fig = Figure(figsize=(7.5, 6.5), dpi=dpi)
    ax = fig.add_subplot(1, 1, 1, projection=wcs)
    # science [ix, iy] -> FITS pixels [y, x] with x = N - 1 - ix (RA to the left)
    shown = ax.imshow(image.T[:, ::-1], origin="lower", cmap="inferno", norm=norm)
    ax.coords[0].set_axislabel("RA (J2000)")
    ax.coords[1].set_axislabel("Dec (J2000)")
    ax.coords.grid(color="white", alpha=0.25, linestyle=":")
    centre = wcs.wcs.crpix - 1.0  # 0-based pixel of the phase centre
    ax.plot(*centre, marker="+", markersize=14, color="cyan", label="phase centre")
    if beam is not None:
        bmaj, bmin, bpa = (beam.bmaj, beam.bmin, beam.bpa) if hasattr(beam, "bmaj") else tuple(beam)
        corner = max(bmaj / cellsize, 0.06 * n)  # the beam's centre, from the lower left
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
    ax.set_title(title)
    fig.colorbar(shown, ax=ax, label=unit)
    return fig


def write_preview_png(path: str | Path, image: np.ndarray, **figure: Any) -> Path:
    """Render :func:`preview_figure` of ``image`` to a PNG at ``path`` (atomically)."""
    fig = preview_figure(image, **figure)
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    return path
