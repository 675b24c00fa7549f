"""Image sizes that fit: the memory estimate against what the kernels really allocate, the
refusal of an image too large, and advice from the data capped by the memory available."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import tracemalloc

import numpy as np
import pytest

from sdpbatch.io.ms_read import read_measurement_set, read_measurement_set_metadata
from sdpbatch.parameters import ParameterError
from sdpbatch.science.clean import msmfs_clean
from sdpbatch.science.constants import C
from sdpbatch.science.image_size import (
    GRID_OVERSAMPLING,
    MEMORY_HEADROOM,
    VISIBILITY_BYTES,
    check_image_fits,
    fast_even_size,
    image_memory_breakdown,
    image_memory_bytes,
    largest_fitting_npixel,
)
from sdpbatch.science.imaging import MAX_FIELD_OF_VIEW, advise_image

SIZES = dict(nmoment=2, nscales=3, nwindows=8)
GIB = 2**30


def test_estimate_scales_with_the_image_and_its_terms():
    small, large = image_memory_bytes(1024, **SIZES), image_memory_bytes(4096, **SIZES)
    assert large == pytest.approx(16 * small, rel=1e-6)
    assert image_memory_bytes(1024, nmoment=3, nscales=3, nwindows=8) > small
    assert image_memory_bytes(1024, nmoment=2, nscales=5, nwindows=30) > small
    # the advised 14,850^2 image: tens of GiB, more than this machine has
    assert image_memory_bytes(14850, **SIZES) > 40 * GIB


def _psf(n: int, nterm: int) -> np.ndarray:
    """Taylor-weighted PSFs whose spectral terms differ (a non-singular MSMFS Hessian)."""
    x = np.arange(n) - n // 2
    r2 = x[:, None] ** 2 + x[None, :] ** 2
    return np.stack([np.exp(-r2 / (8.0 + 2 * t)) * (1.0, 0.05, 0.03)[t] for t in range(nterm)])


def test_clean_stays_within_its_share():
    """The minor cycle's allocations (tracemalloc sees numpy's) against the ``clean`` share."""
    n, nmoment, scales = 512, 2, [0, 3, 10]
    rng = np.random.default_rng(1)
    residual = rng.normal(0, 0.01, (nmoment, n, n))
    residual[0, 200, 300] = 5.0
    psf = _psf(n, 2 * nmoment - 1)
    tracemalloc.start()
    base = tracemalloc.get_traced_memory()[0]
    msmfs_clean(
        residual, psf, scales=scales, gain=0.2, niter=50, threshold=0.0,
        fractional_threshold=0.0, psf_support=64,
    )  # fmt: skip
    peak = tracemalloc.get_traced_memory()[1] - base
    tracemalloc.stop()
    share = image_memory_breakdown(n, nmoment=nmoment, nscales=len(scales), nwindows=1)["clean"]
    assert peak < MEMORY_HEADROOM * share
    assert peak > 0.5 * share  # and the share is not a wild overestimate


GRID_CHILD = """
import json, sys
import numpy as np
from sdpbatch.science.imaging import grid_dirty
def status(key):  # bytes, from the kernel's accounting of this process
    with open("/proc/self/status") as f:
        return int(next(line for line in f if line.startswith(key)).split()[1]) * 1024
n, cell = int(sys.argv[1]), float(sys.argv[2])
rng = np.random.default_rng(1)
uvw = rng.normal(0, 300, (2000, 3))
freq = np.array([1e8, 1.1e8])
vis = np.ones((2000, 2), complex)
with open("/proc/self/clear_refs", "w") as f:
    f.write("5")  # reset the peak (VmHWM) to the current resident size
before = status("VmRSS:")
grid_dirty(uvw, freq, vis, np.ones((2000, 2)), npixel=n, cellsize=cell, epsilon=1e-5, nthreads=1)
print(json.dumps(status("VmHWM:") - before))
"""


def test_one_gridding_pass_stays_within_its_share():
    """ducc0's own allocations (not seen by tracemalloc): the peak resident memory of a fresh
    process during one pass, for a 0.5 rad field."""
    n = 1024
    out = subprocess.run(
        [sys.executable, "-c", GRID_CHILD, str(n), str(0.5 / n)],
        capture_output=True,
        text=True,
        check=True,
    )
    grown = json.loads(out.stdout.strip().splitlines()[-1])
    one_pass = image_memory_breakdown(n, gridder_passes=1, **SIZES)["gridding"]
    assert 0.3 * one_pass < grown < MEMORY_HEADROOM * one_pass


def test_too_large_an_image_is_refused_naming_npixel():
    available = 4 * GIB
    with pytest.raises(ParameterError, match=r"parameter 'npixel': 14850 pixels need about") as err:
        check_image_fits(14850, available_bytes=available, **SIZES)
    message = str(err.value)
    assert "GiB, 4.0 GiB available; use npixel <= " in message
    fits = int(message.split("npixel <= ")[1].split()[0])
    assert image_memory_bytes(fits, **SIZES) <= available
    assert image_memory_bytes(fits + 64, **SIZES) > 0.9 * available  # close to the limit
    assert check_image_fits(fits, available_bytes=available, **SIZES) <= available


def test_largest_fitting_size_is_fast_and_fits():
    for budget in (0.3 * GIB, 2 * GIB, 11 * GIB):
        n = largest_fitting_npixel(budget, **SIZES)
        assert n % 2 == 0 and fast_even_size(n) == n
        assert image_memory_bytes(n, **SIZES) <= budget
    assert largest_fitting_npixel(1.0, **SIZES) == 32


def test_advice_for_small_dishes_is_capped_by_the_horizon_and_the_memory():
    """A wide-field array (4.4 m tiles, 3 km baselines): the guard band would exceed the sky."""
    advice = advise_image(3000.0, 1.4e8, 1.6e8, 4.4)
    npixel, cell = advice.npixel, advice.cellsize
    assert npixel * cell == pytest.approx(MAX_FIELD_OF_VIEW, rel=0.03)
    assert "capped at 1 rad" in advice.reasons[1]
    budget = 2 * GIB
    capped = advise_image(3000.0, 1.4e8, 1.6e8, 4.4, max_bytes=budget, **SIZES)
    assert capped.cellsize == cell and capped.npixel < npixel
    assert image_memory_bytes(capped.npixel, **SIZES) <= budget
    assert f"{npixel} pixels would need" in capped.reasons[2]
    # a worker's visibilities take their share: a smaller image fits beside them
    held = advise_image(3000.0, 1.4e8, 1.6e8, 4.4, max_bytes=budget, **SIZES,
                        visibilities=20_000_000)  # fmt: skip
    assert held.npixel < capped.npixel
    assert image_memory_bytes(held.npixel, **SIZES, visibilities=20_000_000) <= budget


def test_memory_per_worker_of_large_images():
    """The figures docs/architecture.md states (two Taylor terms, scales 0/3/10, 4 blocks, a
    worker holding 4 M visibilities), and the parts that make them."""
    sizes = dict(nmoment=2, nscales=3, nwindows=4, visibilities=4_000_000)
    parts = image_memory_breakdown(8192, **sizes)
    assert parts["visibilities"] == 4_000_000 * VISIBILITY_BYTES
    assert parts["gridding"] == 2 * 8192**2 * (GRID_OVERSAMPLING**2 * 16 + 16)
    gib = {n: image_memory_bytes(n, **sizes) / GIB for n in (8192, 16384)}
    assert gib[8192] == pytest.approx(23.0, abs=0.05)
    assert gib[16384] == pytest.approx(91.5, abs=0.05)


def test_advice_from_the_measurement_set(raw_like):
    """Station diameter from the ANTENNA table and the longest baseline of the data."""
    path, truth = raw_like
    info = read_measurement_set_metadata(path)
    vis = read_measurement_set(path)
    uvw_max = float(np.abs(vis.uvw).max())
    advice = advise_image(
        uvw_max, info.frequency.min(), info.frequency.max(), info.antenna_diameter
    )
    npixel, cell = advice.npixel, advice.cellsize
    assert info.antenna_diameter == 38.0
    assert cell == pytest.approx(C / info.frequency.max() / (3 * uvw_max))
    field = 2.44 * C / info.frequency.min() / 38.0  # the primary beam to its first null
    assert npixel * cell >= field and npixel * cell < field * 1.1 + 2 * cell


def test_ical_logs_its_advice_and_honours_a_larger_request_that_fits(raw_like, caplog):
    """ICAL with the size left to it: the cell, the field and the memory per worker, each with
    its reason, in the log; a request for twice the advised pixels (the cell advised) is kept."""
    from sdpbatch.execution.ical import run_ical
    from sdpbatch.parameters import Parameters

    path, _ = raw_like
    quick = dict(nmajor=0, niter=10, selfcal=False, calibration_model="none", n_workers=1,
                 threads_per_worker=1, scales=[0], nmoment=1)  # fmt: skip
    with caplog.at_level(logging.INFO, logger="sdpbatch.execution.ical"):
        advised = run_ical([path], Parameters(**quick, npixel=None, cellsize=None))
    text = caplog.text
    assert "Image advice: cell" in text and "of the synthesized beam" in text
    assert "Image advice: field" in text and "the primary beam to its first null" in text
    assert "pixels (a fast FFT size)" in text and "GiB per worker" in text
    assert "Image: " in text and "(advised)" in text and "GiB available" in text
    n = advised.restored.shape[-1]
    with caplog.at_level(logging.INFO, logger="sdpbatch.execution.ical"):
        larger = run_ical([path], Parameters(**quick, npixel=2 * n, cellsize=None))
    assert larger.restored.shape[-1] == 2 * n
    assert "npixel as asked, the other advised" in caplog.text
