"""Figures of an image product, drawn on the server with matplotlib (Agg) and astropy's WCSAxes.

- an image from its FITS: celestial axes from the header's WCS (RA to the left), an asinh
  stretch from a low percentile to the peak, a colour bar in BUNIT and the clean beam drawn to
  scale in the lower left corner;
- the gains: phase and amplitude per station over time (or frequency), one row per term;
- the per-cycle figures of ``qa.json``: peak before and after each minor cycle (with the terms
  solved), residual rms, components and time.

Renders are kept in a small cache keyed by the files' path, size and modification time, so a
product rewritten in place is drawn again and memory stays bounded.
"""

from __future__ import annotations

import io
import threading
import warnings
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path

import numpy as np

from sdpbatch.io.preview import asinh_stretch
from sdpbatch.io.qa import read_qa
from sdpbatch.vocabulary import QA_FILE
from sdpbatch.web.products import FitsPlane, beam_of, gain_series, read_gain_terms, read_plane

CACHE_ENTRIES = 24
_LOCK = threading.Lock()  # one figure at a time: matplotlib's global state is not thread-safe
_CACHE: OrderedDict[tuple, bytes] = OrderedDict()


def _stamp(path: Path) -> tuple:
    stat = path.stat()
    return (str(path), stat.st_size, stat.st_mtime_ns)


def cached_png(kind: str, paths: list[Path], draw: Callable[[], bytes]) -> bytes:
    """``draw()``'s PNG, from the cache while none of ``paths`` has changed."""
    key = (kind, *(_stamp(p) for p in paths))
    with _LOCK:
        if key in _CACHE:
            _CACHE.move_to_end(key)
            return _CACHE[key]
        png = draw()
        _CACHE[key] = png
        while len(_CACHE) > CACHE_ENTRIES:
            _CACHE.popitem(last=False)
    return png


def _png(fig) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    return buffer.getvalue()


def _figure(**kwargs):
    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib.figure import Figure

    return Figure(**kwargs)


# ---------------------------------------------------------------------------------------------
# images
# ---------------------------------------------------------------------------------------------


def _stretch(data: np.ndarray, *, symmetric: bool):
    """(norm, colour map): a residual linear and symmetric about zero (to 99.5 % of the largest
    values), otherwise an asinh stretch from the 0.5 percentile to the peak, linear within
    3 robust sigma of zero, so the noise and the brightest sources both show."""
    from matplotlib import colors

    if not symmetric:
        return asinh_stretch(data, low_percentile=0.5), "inferno"
    finite = data[np.isfinite(data)]
    finite = finite if finite.size else np.zeros(1)
    limit = float(np.percentile(np.abs(finite), 99.5)) or 1.0
    return colors.Normalize(-limit, limit), "RdBu_r"


def image_figure(plane: FitsPlane, *, title: str, beam: dict | None, symmetric: bool = False):
    """The figure of one image plane with RA/Dec axes and ``beam`` (degrees) drawn to scale;
    ``symmetric``: a linear scale about zero (for a residual), see :func:`_stretch`."""
    import astropy.units as u
    from astropy.visualization.wcsaxes import add_beam
    from astropy.wcs import WCS, FITSFixedWarning

    data = plane.data
    norm, cmap = _stretch(data, symmetric=symmetric)
    fig = _figure(figsize=(7.2, 6.0), dpi=100)
    with warnings.catch_warnings():  # DATE-OBS -> MJD-OBS, a fix astropy reports
        warnings.simplefilter("ignore", FITSFixedWarning)
        wcs = WCS(plane.header).celestial
    ax = fig.add_subplot(1, 1, 1, projection=wcs)
    shown = ax.imshow(data, origin="lower", cmap=cmap, norm=norm, interpolation="nearest")
    ra, dec = ax.coords[0], ax.coords[1]
    ra.set_axislabel("Right ascension (J2000)")
    dec.set_axislabel("Declination (J2000)")
    ra.set_major_formatter("hh:mm")
    dec.set_major_formatter("dd:mm")
    ax.coords.grid(color="grey" if symmetric else "white", alpha=0.4, linestyle="dotted")
    if beam is not None:
        add_beam(
            ax,
            major=beam["bmaj_deg"] * u.deg,
            minor=beam["bmin_deg"] * u.deg,
            angle=beam["bpa_deg"] * u.deg,
            corner="bottom left",
            frame=True,
            facecolor="cyan",
            edgecolor="black",
        )
        title += (
            f"\nbeam {60 * beam['bmaj_deg']:.3g}' x {60 * beam['bmin_deg']:.3g}', "
            f"PA {beam['bpa_deg']:.0f} deg"
        )
    ax.set_title(title)
    fig.colorbar(shown, ax=ax, label=plane.header.get("BUNIT", ""))
    return fig


def image_png(path: Path, *, title: str, beam_source: Path, symmetric: bool = False) -> bytes:
    """PNG of the image in ``path``; the beam from ``beam_source``'s header (the restored
    image's, so a residual shows the same beam)."""

    def draw() -> bytes:
        plane = read_plane(path)
        beam = beam_of(plane.header) or beam_of(read_plane(beam_source).header)
        return _png(image_figure(plane, title=title, beam=beam, symmetric=symmetric))

    return cached_png(f"image-{symmetric}", [path, beam_source], draw)


# ---------------------------------------------------------------------------------------------
# gains and per-cycle QA
# ---------------------------------------------------------------------------------------------


def gains_figure(path: Path):
    """Phase (deg) and amplitude per station, one row per solved term, colour = station."""
    from matplotlib import cm, colors

    terms = [gain_series(t) for t in read_gain_terms(path)]
    fig = _figure(figsize=(10.0, 3.2 * max(1, len(terms))), dpi=100, layout="constrained")
    axes = fig.subplots(max(1, len(terms)), 2, squeeze=False)
    for row, series in zip(axes, terms, strict=False):
        nstation = len(series["stations"])
        norm = colors.Normalize(0, max(1, nstation - 1))
        for s in range(nstation):
            colour = cm.viridis(norm(s))
            for ax, key in zip(row, ("phase_deg", "amplitude"), strict=True):
                values = np.array([np.nan if v is None else v for v in series[key][s]])
                ax.plot(series["x"], values, "-o", color=colour, lw=0.8, ms=2, alpha=0.8)
        row[0].set_ylabel(f"{series['term']} phase (deg)")
        row[1].set_ylabel(f"{series['term']} amplitude")
        for ax in row:
            ax.set_xlabel(series["x_unit"])
            ax.grid(alpha=0.3)
        fig.colorbar(cm.ScalarMappable(norm, cm.viridis), ax=row[1], label="station index")
    fig.suptitle(f"Solved gains per station ({path.name})")
    return fig


def gains_png(path: Path) -> bytes:
    return cached_png("gains", [path], lambda: _png(gains_figure(path)))


def qa_figure(qa: dict):
    """The minor cycles: peak before/after (Jy/beam, terms solved above), rms, components, s."""
    cycles = qa.get("cycles", [])
    labels = [str(c.get("cycle")) for c in cycles]
    x = np.arange(len(cycles))

    def values(key: str) -> np.ndarray:
        return np.array([np.nan if c.get(key) is None else float(c[key]) for c in cycles])

    fig = _figure(figsize=(10.0, 6.4), dpi=100, layout="constrained")
    (peak, rms), (comps, secs) = fig.subplots(2, 2)
    peak.semilogy(x, values("peak"), "o-", label="at start")
    peak.semilogy(x, values("peak_end"), "s--", label="at end")
    for i, c in enumerate(cycles):
        solved = "".join(c.get("solved") or [])
        if not solved:
            continue
        peak.annotate(f"solved {solved}", (i, values("peak")[i]), textcoords="offset points",
                      xytext=(0, 6), ha="center", fontsize=8)  # fmt: skip
    peak.margins(y=0.25)
    peak.set_ylabel("residual peak (Jy/beam)")
    peak.legend(fontsize=8)
    rms.semilogy(x, values("rms"), "o-", color="tab:red")
    rms.set_ylabel("residual rms (Jy/beam)")
    comps.bar(x, values("components"), color="tab:green")
    comps.set_ylabel("clean components")
    secs.bar(x, values("seconds"), color="tab:gray")
    secs.set_ylabel("time (s)")
    for ax in (peak, rms, comps, secs):
        ax.set_xticks(x, labels)
        ax.set_xlabel("major cycle")
        ax.grid(alpha=0.3)
    fig.suptitle(f"ICAL per cycle: clean and self-calibration ({QA_FILE})")
    return fig


def qa_png(path: Path) -> bytes:
    return cached_png("qa", [path], lambda: _png(qa_figure(read_qa(path))))
