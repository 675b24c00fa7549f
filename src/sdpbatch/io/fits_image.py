"""FITS images with a correct celestial WCS, written atomically.

Science-layer images are ``image[ix, iy]`` with ``l = (ix - N/2) cell`` growing east (RA) and
``m = (iy - N/2) cell`` growing north.  FITS viewers expect RA to increase to the left, so the
x axis is reversed and ``CDELT1 = -cell``: FITS pixel ``p`` (0-based) holds ``ix = N - 1 - p``,
hence the phase centre ``ix = N/2`` sits at 1-based ``CRPIX1 = N/2`` and ``iy = N/2`` at
``CRPIX2 = N/2 + 1``.  Axes: RA---SIN, DEC--SIN, FREQ, STOKES (I only); ``RADESYS = 'FK5'``,
``EQUINOX = 2000`` (the J2000 frame of the MeasurementSet).  A restored image carries its clean
beam as BMAJ/BMIN/BPA (degrees, BPA from north through east) for DS9 and CARTA.  The start of the
observation (the first integration of the MeasurementSets) is DATE-OBS (ISO, UTC) and MJD-OBS
(days), with TIMESYS = 'UTC'; the telescope (OBSERVATION.TELESCOPE_NAME) is TELESCOP.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
from astropy.io import fits
from astropy.time import Time

from sdpbatch.io.atomic import atomic_path

SOFTWARE = "sdpbatch"


def _beam_degrees(beam: Any) -> tuple[float, float, float]:
    """(bmaj, bmin, bpa) degrees from a CleanBeam-like object or a tuple in radians."""
    if hasattr(beam, "bmaj"):
        values = (beam.bmaj, beam.bmin, beam.bpa)
    else:
        values = tuple(beam)
    if len(values) != 3:
        raise ValueError(f"beam must be (bmaj, bmin, bpa) in radians, got {beam!r}")
    return tuple(float(np.degrees(v)) for v in values)  # type: ignore[return-value]


def _version() -> str:
    try:
        from importlib.metadata import version

        return version("sdpbatch")
    except Exception:  # noqa: BLE001 - the version is informative only
        return "unknown"


def _frequency_axis(frequencies: np.ndarray, bandwidths: np.ndarray | None) -> tuple[float, float]:
    """(CRVAL3, CDELT3) of a linear FREQ axis through the given frequencies."""
    if frequencies.size == 1:
        width = float(bandwidths[0]) if bandwidths is not None else 1.0
        return float(frequencies[0]), width
    step = np.diff(frequencies)
    if not np.allclose(step, step[0], rtol=1e-6, atol=1e-3):
        raise ValueError(
            f"frequencies must be evenly spaced for a FITS FREQ axis, got {frequencies.tolist()}"
        )
    return float(frequencies[0]), float(step[0])


def fits_header(
    *,
    npixel: int,
    phase_centre: tuple[float, float],
    cellsize: float,
    frequencies: np.ndarray,
    bandwidths: np.ndarray | None,
    bunit: str,
    beam: Any = None,
    obs_start: float | None = None,
    telescope: str | None = None,
) -> fits.Header:
    """The header of an (N, N) image, nfreq planes, phase centre (ra, dec) radians.

    ``obs_start``: start of the observation, MJD seconds (UTC), as the MeasurementSet's TIME.
    """
    crval3, cdelt3 = _frequency_axis(frequencies, bandwidths)
    ra, dec = phase_centre
    cell_deg = float(np.degrees(cellsize))
    h = fits.Header()
    h["BUNIT"] = bunit
    h["BTYPE"] = "Intensity"
    for axis, (ctype, crpix, crval, cdelt, cunit) in enumerate(
        (
            ("RA---SIN", npixel // 2, np.degrees(ra) % 360.0, -cell_deg, "deg"),
            ("DEC--SIN", npixel // 2 + 1, np.degrees(dec), cell_deg, "deg"),
            ("FREQ", 1, crval3, cdelt3, "Hz"),
            ("STOKES", 1, 1.0, 1.0, ""),
        ),
        start=1,
    ):
        h[f"CTYPE{axis}"] = ctype
        h[f"CRPIX{axis}"] = float(crpix)
        h[f"CRVAL{axis}"] = float(crval)
        h[f"CDELT{axis}"] = float(cdelt)
        h[f"CUNIT{axis}"] = cunit
    h["RADESYS"] = "FK5"
    h["EQUINOX"] = 2000.0
    h["LONPOLE"] = 180.0
    h["SPECSYS"] = "TOPOCENT"
    h["RESTFRQ"] = float(np.mean(frequencies))
    if beam is not None:
        bmaj, bmin, bpa = _beam_degrees(beam)
        h["BMAJ"] = (bmaj, "clean beam major axis FWHM (deg)")
        h["BMIN"] = (bmin, "clean beam minor axis FWHM (deg)")
        h["BPA"] = (bpa, "clean beam PA, north through east (deg)")
    if obs_start is not None:
        start = Time(obs_start / 86400.0, format="mjd", scale="utc")
        h["TIMESYS"] = "UTC"
        h["DATE-OBS"] = (start.isot, "start of the observation (UTC)")
        h["MJD-OBS"] = (float(start.mjd), "start of the observation (MJD, UTC)")
    if telescope:
        h["TELESCOP"] = telescope
    h["ORIGIN"] = SOFTWARE
    h["SOFTWARE"] = f"{SOFTWARE} {_version()}"
    h["DATE"] = dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S")
    return h


def write_fits_image(
    path: str | Path,
    image: np.ndarray,
    *,
    phase_centre: tuple[float, float],
    cellsize: float,
    frequencies: Iterable[float] | float,
    bandwidths: Iterable[float] | None = None,
    bunit: str,
    beam: Any = None,
    obs_start: float | None = None,
    telescope: str | None = None,
    history: Iterable[str] = (),
    extra_header: Mapping[str, Any] | None = None,
) -> Path:
    """Write an image (N, N) or (nfreq, N, N) in science orientation ``[ix, iy]`` to FITS.

    Parameters
    ----------
    phase_centre : (ra, dec) radians, J2000.
    cellsize : pixel size, radians.
    frequencies : (nfreq,) Hz, one per plane (evenly spaced when nfreq > 1).
    bandwidths : (nfreq,) Hz; CDELT3 of a single plane (default 1 Hz).
    bunit : "Jy/beam" or "Jy/pixel".
    beam : clean beam (bmaj, bmin, bpa) radians, or an object with those attributes.
    obs_start : start of the observation, MJD seconds (UTC): DATE-OBS and MJD-OBS.
    telescope : TELESCOP (e.g. the MeasurementSet's OBSERVATION.TELESCOPE_NAME).
    """
    cube = np.asarray(image, dtype=np.float32)
    if cube.ndim == 2:
        cube = cube[None]
    if cube.ndim != 3 or cube.shape[1] != cube.shape[2]:
        raise ValueError(f"image must be (N, N) or (nfreq, N, N), got shape {image.shape}")
    freqs = np.atleast_1d(np.asarray(frequencies, dtype=np.float64))
    if freqs.size != cube.shape[0]:
        raise ValueError(f"{freqs.size} frequencies for {cube.shape[0]} image planes")
    widths = None if bandwidths is None else np.atleast_1d(np.asarray(bandwidths, float))
    header = fits_header(
        npixel=cube.shape[1],
        phase_centre=phase_centre,
        cellsize=cellsize,
        frequencies=freqs,
        bandwidths=widths,
        bunit=bunit,
        beam=beam,
        obs_start=obs_start,
        telescope=telescope,
    )
    for key, value in (extra_header or {}).items():
        header[key] = value
    for line in history:
        header.add_history(line)
    # [f, ix, iy] -> FITS numpy order [stokes, freq, y, x] with x reversed (RA to the left)
    data = np.ascontiguousarray(cube[:, ::-1, :].transpose(0, 2, 1)[None])
    path = Path(path)
    with atomic_path(path) as tmp:
        fits.PrimaryHDU(data=data, header=header).writeto(tmp)
    return path


def read_fits_image(path: str | Path) -> tuple[np.ndarray, fits.Header]:
    """Read a FITS image written by :func:`write_fits_image`.

    Returns the image (nfreq, N, N) in science orientation ``[ix, iy]`` (first Stokes plane)
    and the header.
    """
    with fits.open(path) as hdul:
        header = hdul[0].header.copy()
        data = np.asarray(hdul[0].data, dtype=np.float64)
    while data.ndim > 3:
        data = data[0]
    if data.ndim == 2:
        data = data[None]
    image = data.transpose(0, 2, 1)  # [f, x, y]
    if header.get("CDELT1", -1.0) < 0:
        image = image[:, ::-1, :]
    return np.ascontiguousarray(image), header
