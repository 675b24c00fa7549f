"""Time msmfs_clean on 1024^2 images: scales [0, 3, 10], 2 Taylor terms, niter 1000 and 10000.

The PSFs come from ducc0 (vis2dirty of ones) for a random SKA1-Low-like array over 8 channels
90-110 MHz and 5 hour angles; the sky holds a few hundred power-law point sources and some
Gaussian blobs of extended emission; the dirty images are that sky convolved with the full PSFs
(computed at twice the image size, so the far sidelobes are all there).

    python benchmarks/bench_clean.py [--npixel 1024] [--nthreads 2] [--niter 1000 10000]
        [--tiles 1024 2048] [--threshold JY] [--fractional-threshold F]

With ``--tiles``, each minor cycle is also run as ICAL's ``parallel_deconvolution`` runs it
(:mod:`sdpbatch.science.subimages`), its tasks one after the other: the plan, every tile's
clean (the "peak MiB" column is the largest tile's; "seconds" the sum of all steps, what one
worker would take), the combination; then the model's difference from the whole image's.
Peak MiB counts the allocations Python sees (numpy), not ducc0's FFT buffers.

Measured here (2 cores shared with other work: CPU seconds are the steadier figure), 4096 px,
``--nthreads 1 --niter 100000 --fractional-threshold 0.02 --tiles 1024 2048``, PSF patch
128 px: the whole image 26.0 CPU s, 2786 MiB, 534 components; tiles of 1024 (16 sub-images
of 1322 px) 33.0 CPU s one after the other, the largest tile task 305 MiB, on 2 workers
plan + the busier worker's tiles + combine 19.9 CPU s; tiles of 2048 (4 of 2346 px) 31.0
CPU s, 922 MiB, 18.5 CPU s on 2 workers.  The plan (seams) took 2.6-3.2 s of wall time
(144 MiB), the combination (one residual update of the whole image) 7.5-7.7 s (1409 MiB),
both on worker 0.  Both stop at the same level (peak
left 1.0044 and 1.0055 Jy/beam); the models differ by the clean's path (flux 547 against
557 Jy: blobs up to 28 px wide cross the seams), which the next major cycle evens out.
"""

from __future__ import annotations

import argparse
import time
import tracemalloc

import numpy as np
from ducc0.wgridder.experimental import vis2dirty
from scipy.signal import fftconvolve

from sdpbatch.science.beam import fit_clean_beam, restore
from sdpbatch.science.clean import msmfs_clean
from sdpbatch.science.subimages import clean_tile, combine, cut, plan, psf_cut

FREQUENCIES = np.linspace(90e6, 110e6, 8)
CELL = 0.0005


def array_uvw(nstation: int = 224, ntime: int = 5, seed: int = 7) -> np.ndarray:
    """UVW (metres) of a random centrally condensed array tracking at dec -30 deg."""
    rng = np.random.default_rng(seed)
    radius = 1000.0 * rng.random(nstation) ** 1.5
    angle = 2 * np.pi * rng.random(nstation)
    x, y = radius * np.cos(angle), radius * np.sin(angle)
    i, j = np.triu_indices(nstation, 1)
    bx, by = x[j] - x[i], y[j] - y[i]
    rows = []
    for hour_angle in np.radians(np.linspace(-30, 30, ntime)):
        u = bx * np.cos(hour_angle) - by * np.sin(hour_angle)
        v = (bx * np.sin(hour_angle) + by * np.cos(hour_angle)) * np.sin(np.radians(-30.0))
        rows.append(np.stack([u, v, np.zeros_like(u)], axis=1))
    return np.concatenate(rows)


def channel_psf(npixel: int, frequency: float, nthreads: int) -> np.ndarray:
    """The PSF (npixel, npixel) of one channel, peak 1 at the centre."""
    uvw = array_uvw()
    psf = vis2dirty(
        uvw=uvw,
        freq=np.array([frequency]),
        vis=np.ones((len(uvw), 1), complex),
        npix_x=npixel,
        npix_y=npixel,
        pixsize_x=CELL,
        pixsize_y=CELL,
        epsilon=1e-5,
        do_wgridding=False,
        nthreads=nthreads,
    )
    return psf / psf.max()


def sky_cube(npixel: int, nsource: int = 300, seed: int = 11) -> np.ndarray:
    """(nchan, N, N) Jy/pixel: power-law point sources plus Gaussian blobs."""
    rng = np.random.default_rng(seed)
    nu0 = FREQUENCIES.mean()
    cube = np.zeros((len(FREQUENCIES), npixel, npixel))
    margin = npixel // 8
    ix, iy = rng.integers(margin, npixel - margin, (2, nsource))
    flux = 0.2 * (1 - rng.random(nsource)) ** (-1 / 0.8)  # N(>S) ~ S^-0.8 above 0.2 Jy
    flux = np.minimum(flux, 50.0)
    alpha = rng.normal(-0.7, 0.2, nsource)
    for c, frequency in enumerate(FREQUENCIES):
        np.add.at(cube[c], (ix, iy), flux * (frequency / nu0) ** alpha)
    gx, gy = np.indices((npixel, npixel))
    for _ in range(6):
        cx, cy = rng.integers(margin, npixel - margin, 2)
        sigma, total = rng.uniform(3, 12), rng.uniform(5, 30)
        blob = np.exp(-0.5 * ((gx - cx) ** 2 + (gy - cy) ** 2) / sigma**2)
        for c, frequency in enumerate(FREQUENCIES):
            cube[c] += total * blob / blob.sum() * (frequency / nu0) ** -0.5
    return cube


def field(n: int, nthreads: int) -> tuple[np.ndarray, np.ndarray]:
    """(Taylor residual (2, n, n), Taylor PSFs (3, n, n)): the sky convolved with each
    channel's PSF made at 2n (its far sidelobes all there), one channel at a time."""
    t = (FREQUENCIES - FREQUENCIES.mean()) / FREQUENCIES.mean()
    cube = sky_cube(n)
    residual_taylor, psf_taylor = np.zeros((2, n, n)), np.zeros((3, n, n))
    for c, frequency in enumerate(FREQUENCIES):
        psf = channel_psf(2 * n, frequency, nthreads)
        dirty = fftconvolve(cube[c], psf, mode="same")
        for k in range(3):
            weight = t[c] ** k / len(t)
            psf_taylor[k] += weight * psf[n // 2 : n // 2 + n, n // 2 : n // 2 + n]
            if k < 2:
                residual_taylor[k] += weight * dirty
    return residual_taylor, psf_taylor


def measured(fn, *args, **kwargs):
    """(result, wall s, CPU s, peak MiB of the Python-side allocations) of ``fn``."""
    tracemalloc.start()
    start, cpu = time.perf_counter(), time.process_time()
    result = fn(*args, **kwargs)
    seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
    peak_mib = tracemalloc.get_traced_memory()[1] / 2**20
    tracemalloc.stop()
    return result, seconds, cpu, peak_mib


def tiled(residual_taylor, psf_taylor, size: int, clean: dict, limits: dict, nthreads: int):
    """The tiled minor cycle step by step as ICAL's tasks run it, one after the other: the
    result, and per step (plan, each tile, combine) its wall s and peak MiB."""
    scales, support = clean["scales"], clean["psf_support"]
    planned, *plan_cost = measured(
        plan, residual_taylor, psf_taylor, size=size, scales=scales, psf_support=support,
        **limits,
    )  # fmt: skip
    if planned is None:
        return None, {}
    psf = psf_cut(psf_taylor, planned.tiles[0].size)
    parts, tile_costs = [], []
    for tile in planned.tiles:
        residual, core = cut(residual_taylor, planned, tile)
        part, *cost = measured(
            clean_tile, residual, core, psf, tile, level=planned.level, nthreads=nthreads,
            **clean,
        )  # fmt: skip
        parts.append(part)
        tile_costs.append(cost)
    result, *combine_cost = measured(
        combine, residual_taylor, psf_taylor, parts, support=planned.support, nthreads=nthreads
    )
    costs = {"plan": plan_cost, "tiles": tile_costs, "combine": combine_cost}
    return result, costs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--npixel", type=int, default=1024)
    parser.add_argument("--nthreads", type=int, default=2)
    parser.add_argument("--niter", type=int, nargs="+", default=[1000, 10000])
    parser.add_argument("--scales", type=int, nargs="+", default=[0, 3, 10])
    parser.add_argument("--psf-support", type=int, default=128)
    parser.add_argument("--threshold", type=float, default=1e-4, help="Jy/beam")
    parser.add_argument("--fractional-threshold", type=float, default=0.0)
    parser.add_argument(
        "--tiles", type=int, nargs="*", default=[],
        help="also clean as tiles of these sizes (px), one after the other",
    )  # fmt: skip
    args = parser.parse_args()

    n = args.npixel
    start = time.perf_counter()
    residual_taylor, psf_taylor = field(n, args.nthreads)
    print(f"set-up (PSFs, sky, dirty images): {time.perf_counter() - start:.1f} s")

    limits = dict(threshold=args.threshold, fractional_threshold=args.fractional_threshold)
    print(
        f"{'niter':>6} {'tiles':>6} {'seconds':>8} {'CPU s':>6} {'peak MiB':>8} "
        f"{'components':>10} {'peak start':>10} {'peak end':>9} stop"
    )
    for niter in args.niter:
        clean = dict(scales=args.scales, gain=0.25, niter=niter, psf_support=args.psf_support)
        result, seconds, cpu, peak_mib = measured(
            msmfs_clean, residual_taylor, psf_taylor, nthreads=args.nthreads, **clean, **limits
        )
        print(
            f"{niter:>6} {'-':>6} {seconds:>8.2f} {cpu:>6.2f} {peak_mib:>8.0f} "
            f"{result.components:>10} {result.peak_start:>10.3f} {result.peak_end:>9.4f} "
            f"{result.stop_reason}"
        )
        for size in args.tiles:
            report_tiles(result, size, residual_taylor, psf_taylor, clean, limits, args)

    start = time.perf_counter()
    beam = fit_clean_beam(psf_taylor[0], CELL)
    restore(result.model_taylor[0], beam, CELL)
    print(
        f"fit_clean_beam + restore: {time.perf_counter() - start:.2f} s "
        f"(bmaj {np.degrees(beam.bmaj) * 60:.2f}', bmin {np.degrees(beam.bmin) * 60:.2f}')"
    )


def report_tiles(whole, size, residual_taylor, psf_taylor, clean, limits, args) -> None:
    """One row for the tiled minor cycle of tile ``size``, then its steps and its model's
    difference from the whole image's (``whole``)."""
    niter = clean["niter"]
    tiled_result, costs = tiled(residual_taylor, psf_taylor, size, clean, limits, args.nthreads)
    if tiled_result is None:
        print(f"{niter:>6} {size:>6} not tiled: a sub-image would be the whole image")
        return
    tiles = costs["tiles"]
    seconds = costs["plan"][0] + sum(c[0] for c in tiles) + costs["combine"][0]
    cpu = costs["plan"][1] + sum(c[1] for c in tiles) + costs["combine"][1]
    print(
        f"{niter:>6} {size:>6} {seconds:>8.2f} {cpu:>6.2f} {max(c[2] for c in tiles):>8.0f} "
        f"{tiled_result.components:>10} {tiled_result.peak_start:>10.3f} "
        f"{tiled_result.peak_end:>9.4f} {tiled_result.stop_reason}"
    )
    difference = np.abs(tiled_result.model_taylor[0] - whole.model_taylor[0]).max()
    # tile i on worker i % 2, as ICAL's tasks: the CPU seconds of the busier worker
    two = max(sum(c[1] for c in tiles[w::2]) for w in (0, 1))
    print(
        f"{'':>13} on 2 workers: plan + busier worker's tiles + combine "
        f"{costs['plan'][1] + two + costs['combine'][1]:.2f} CPU s"
    )
    print(
        f"{'':>13} {len(tiles)} tile(s): slowest {max(c[0] for c in tiles):.2f} s, "
        f"plan {costs['plan'][0]:.2f} s ({costs['plan'][2]:.0f} MiB), combine "
        f"{costs['combine'][0]:.2f} s ({costs['combine'][2]:.0f} MiB); model flux "
        f"{tiled_result.model_taylor[0].sum():.3f} Jy (whole {whole.model_taylor[0].sum():.3f}),"
        f" largest pixel difference {difference:.2g} Jy"
    )


if __name__ == "__main__":
    main()
