"""PNG preview of an image: RA to the left, asinh stretch between percentiles, colour bar."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from sdpbatch.io.atomic import atomic_path


def write_preview_png(
    path: str | Path,
    image: np.ndarray,
    *,
    cellsize: float,
    title: str,
    unit: str = "Jy/beam",
    low_percentile: float = 0.5,
    dpi: int = 100,
) -> Path:
    """Render an (N, N) science-orientation image ``[ix, iy]`` (ix east) to a PNG.

    Axes are offsets from the phase centre in degrees, east (RA) increasing to the left as on
    the sky.  The colour scale is an asinh stretch from the ``low_percentile`` to the peak,
    linear within a few times the robust rms and logarithmic above, so the noise floor and the
    brightest sources are both visible; the colour bar is in ``unit``.
    """
    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib import colors
    from matplotlib.figure import Figure

    image = np.asarray(image, dtype=np.float64)
    if image.ndim != 2 or image.shape[0] != image.shape[1]:
        raise ValueError(f"preview needs an (N, N) image, got shape {image.shape}")
    n = image.shape[0]
    finite = image[np.isfinite(image)]
    if finite.size == 0:
        finite = np.zeros(1)
    lo, hi = float(np.percentile(finite, low_percentile)), float(finite.max())
    if hi <= lo:
        hi = lo + 1.0
    rms = 1.4826 * float(np.median(np.abs(finite - np.median(finite))))
    width = 3.0 * rms if rms > 0 else 0.01 * (hi - lo)
    norm = colors.AsinhNorm(linear_width=width, vmin=lo, vmax=hi)
    half = np.degrees(cellsize) * n / 2
    # science [ix, iy] -> display [row = y (north up), col = x reversed (east left)]
    display = image.T[:, ::-1]
    fig = Figure(figsize=(7.5, 6.5), dpi=dpi)
    ax = fig.add_subplot(1, 1, 1)
    shown = ax.imshow(
        display,
        origin="lower",
        cmap="inferno",
        norm=norm,
        extent=(half, -half, -half, half),
        interpolation="nearest",
    )
    ax.set_xlabel("RA offset (deg, east to the left)")
    ax.set_ylabel("Dec offset (deg)")
    ax.set_title(title)
    fig.colorbar(shown, ax=ax, label=unit)
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    return path
