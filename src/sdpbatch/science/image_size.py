"""The memory an image size needs in ICAL, and the largest size that fits.

Pure arithmetic: the memory available is passed in (e.g. ``psutil.virtual_memory().available``
by the pipeline), so the check that refuses an image too large for the machine runs before any
gridding, and image advice (:func:`sdpbatch.science.imaging.advise_image`) can stay within a
fraction of it.
"""

from __future__ import annotations

import math

import ducc0

from sdpbatch.parameters import ParameterError

ADVICE_MEMORY_FRACTION = 0.5
"""An advised image never needs more than this fraction of the memory available."""

GRID_OVERSAMPLING = 2.0
"""The largest uv-grid oversampling ducc0 may choose (``sigma_max`` of every gridder call,
:data:`sdpbatch.science.imaging.SIGMA_RANGE`): the grid is at most this squared times the
image's pixels."""


VISIBILITY_BYTES = 45
"""Bytes a worker holds per visibility (rows x channels) of its group: the data, flags, imaging
weights and model visibilities (``IcalSettings.chunk_visibilities``)."""

MEMORY_HEADROOM = 1.2
"""Factor on the counted arrays for what is not counted (allocator, small temporaries, the
interpreter): the measured peaks of whole ICAL runs (benchmarks/bench_image_memory.py, 2048^2
and 3072^2, 3 and 8 windows) came within -10 %..+5 % of the counted arrays."""


def image_memory_breakdown(
    npixel: int,
    *,
    nmoment: int,
    nscales: int,
    nwindows: int,
    gridder_passes: int = 2,
    double_precision: bool = True,
    visibilities: int = 0,
) -> dict[str, int]:
    """Bytes of a worker's ICAL arrays for an ``npixel`` image, by stage (see below).

    Counted per pixel (``N^2``), as the driver and its kernels allocate them:

    - ``held`` through the run (float64): PSF Taylor terms ``2 nmoment - 1``, residual, model
      and model increment Taylor terms ``3 nmoment``, and the weight density (1);
    - ``visibilities`` held through the run: :data:`VISIBILITY_BYTES` each (the worker's group,
      at most ``chunk_visibilities`` of it);
    - ``gridding``, ``gridder_passes`` side by side: ducc0's uv grid and the image it returns,
      at most 80 bytes per pass in double precision (``GRID_OVERSAMPLING^2`` complex128 values,
      the bound of ``sigma_max``, and 16 bytes of images), 40 in single.  ducc0 w-stacks one
      w-plane at a time on that one grid, and its threads share it: the count does not grow
      with the w-planes or the threads.  Measured (ducc0 0.42, 2048^2, sigma 1.1-2.0, peak RSS
      of one call): single precision 23 bytes/pixel at 0.2 and 0.6 rad, 33 at 1 rad, the same
      with 1 and 2 threads; double 33 at 0.6 rad, 66 at 1 rad (66 with sigma_max 2.6 too);
    - ``clean`` (the minor cycle): the residual copy, the spectra of the residual and PSF Taylor
      terms on the padded grid (complex64, padding ~1.3x in area) and of the scale kernels, the
      model per scale (float64), smoothed residuals and values per scale (float32), their
      per-term temporaries, increment, new model and residual (float64) and FFT scratch;
    - ``products``: the cubes and Taylor images written at the end.
    """
    nm, ns, pixels = int(nmoment), int(nscales), int(npixel) ** 2
    cell = 16 if double_precision else 8
    p = 1.3  # padded grid area / image area; a half spectrum of complex64 is 4 bytes per cell
    spectra = 4 * p * (nm + 2 * nm - 1) + 2 * p * ns
    per_pixel = {
        "held": 8 * (2 * nm - 1 + 3 * nm + 1),
        "gridding": gridder_passes * (GRID_OVERSAMPLING**2 * cell + 16),
        "clean": 8 * nm + spectra + 12 * ns * nm + 4 * ns + 16 * nm + 24 * nm + 8 * p,
        "products": 8 * (4 * nwindows + 3 * nm + 2),
    }
    parts = {stage: int(math.ceil(pixels * b)) for stage, b in per_pixel.items()}
    parts["visibilities"] = int(visibilities) * VISIBILITY_BYTES
    return parts


def image_memory_bytes(
    npixel: int,
    *,
    nmoment: int,
    nscales: int,
    nwindows: int,
    gridder_passes: int = 2,
    double_precision: bool = True,
    visibilities: int = 0,
) -> int:
    """Estimated peak (bytes) of a worker's ICAL memory for an ``npixel`` image:
    :data:`MEMORY_HEADROOM` x (``held`` + ``visibilities`` + the largest other stage) of
    :func:`image_memory_breakdown` (same arguments)."""
    parts = image_memory_breakdown(
        npixel,
        nmoment=nmoment,
        nscales=nscales,
        nwindows=nwindows,
        gridder_passes=gridder_passes,
        double_precision=double_precision,
        visibilities=visibilities,
    )
    stage = max(parts["gridding"], parts["clean"], parts["products"])
    peak = parts["held"] + parts["visibilities"] + stage
    return int(math.ceil(MEMORY_HEADROOM * peak))


def check_image_fits(
    npixel: int,
    *,
    available_bytes: int,
    nmoment: int,
    nscales: int,
    nwindows: int,
    double_precision: bool = True,
    visibilities: int = 0,
) -> int:
    """Raise ``ParameterError('npixel', ...)`` if the image needs more than ``available_bytes``.

    For the pipeline to call before any gridding, with the memory available to it (e.g.
    ``psutil.virtual_memory().available``).  Returns the estimate (bytes) when it fits.
    """
    sizes = dict(
        nmoment=nmoment,
        nscales=nscales,
        nwindows=nwindows,
        double_precision=double_precision,
        visibilities=visibilities,
    )
    need = image_memory_bytes(npixel, **sizes)
    if need > available_bytes:
        fits = largest_fitting_npixel(available_bytes, **sizes)
        raise ParameterError(
            "npixel",
            f"{npixel} pixels need about {need / 2**30:.1f} GiB, "
            f"{available_bytes / 2**30:.1f} GiB available; use npixel <= {fits} "
            "(or a larger cellsize for the same field)",
        )
    return need


def largest_fitting_npixel(
    max_bytes: float,
    *,
    nmoment: int,
    nscales: int,
    nwindows: int,
    double_precision: bool = True,
    visibilities: int = 0,
) -> int:
    """The largest fast even image size whose :func:`image_memory_bytes` (same arguments) is
    <= ``max_bytes`` (32 at least)."""
    sizes = dict(
        nmoment=nmoment,
        nscales=nscales,
        nwindows=nwindows,
        double_precision=double_precision,
        visibilities=visibilities,
    )
    fixed = image_memory_bytes(0, **sizes)  # the visibilities
    per_pixel = (image_memory_bytes(1024, **sizes) - fixed) / 1024**2
    n = int(math.sqrt(max(max_bytes - fixed, 0.0) / per_pixel))
    n -= n % 2
    while n > 32 and (fast_even_size(n) != n or image_memory_bytes(n, **sizes) > max_bytes):
        n -= 2
    return max(n, 32)


def fast_even_size(n: int) -> int:
    """The smallest even size >= n that ducc0's FFT handles fast (factors 2, 3, 5, 7, 11)."""
    size = ducc0.fft.good_size(max(int(n), 32))
    while size % 2:
        size = ducc0.fft.good_size(size + 1)
    return size
