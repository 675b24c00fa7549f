"""Time msmfs_clean on 1024^2 images: scales [0, 3, 10], 2 Taylor terms, niter 1000 and 10000.

The PSFs come from ducc0 (vis2dirty of ones) for a random SKA1-Low-like array over 8 channels
90-110 MHz and 5 hour angles; the sky holds a few hundred power-law point sources and some
Gaussian blobs of extended emission; the dirty images are that sky convolved with the full PSFs
(computed at twice the image size, so the far sidelobes are all there).

    python benchmarks/bench_clean.py [--npixel 1024] [--nthreads 2] [--niter 1000 10000]
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


def channel_psfs(npixel: int, nthreads: int) -> np.ndarray:
    uvw = array_uvw()
    out = []
    for frequency in FREQUENCIES:
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
        out.append(psf / psf.max())
    return np.array(out)


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


def taylor(images: np.ndarray, nterm: int) -> np.ndarray:
    t = (FREQUENCIES - FREQUENCIES.mean()) / FREQUENCIES.mean()
    return np.array([np.tensordot(t**k, images, axes=1) / len(t) for k in range(nterm)])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--npixel", type=int, default=1024)
    parser.add_argument("--nthreads", type=int, default=2)
    parser.add_argument("--niter", type=int, nargs="+", default=[1000, 10000])
    parser.add_argument("--scales", type=int, nargs="+", default=[0, 3, 10])
    parser.add_argument("--psf-support", type=int, default=128)
    args = parser.parse_args()

    n = args.npixel
    start = time.perf_counter()
    psfs_big = channel_psfs(2 * n, args.nthreads)
    cube = sky_cube(n)
    dirty = np.array([fftconvolve(s, p, mode="same") for s, p in zip(cube, psfs_big, strict=True)])
    psfs = psfs_big[:, n // 2 : n // 2 + n, n // 2 : n // 2 + n]
    residual_taylor, psf_taylor = taylor(dirty, 2), taylor(psfs, 3)
    print(f"set-up (PSFs, sky, dirty images): {time.perf_counter() - start:.1f} s")

    print(
        f"{'niter':>6} {'scales':>10} {'seconds':>8} {'CPU s':>6} {'peak MiB':>8} "
        f"{'components':>10} "
        f"{'peak start':>10} {'peak end':>9} stop"
    )
    for niter in args.niter:
        tracemalloc.start()
        start, cpu = time.perf_counter(), time.process_time()
        result = msmfs_clean(
            residual_taylor,
            psf_taylor,
            scales=args.scales,
            gain=0.25,
            niter=niter,
            threshold=1e-4,
            fractional_threshold=0.0,
            psf_support=args.psf_support,
            nthreads=args.nthreads,
        )
        seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
        peak_mib = tracemalloc.get_traced_memory()[1] / 2**20
        tracemalloc.stop()
        print(
            f"{niter:>6} {str(args.scales):>10} {seconds:>8.2f} {cpu:>6.2f} {peak_mib:>8.0f} "
            f"{result.components:>10} {result.peak_start:>10.3f} {result.peak_end:>9.4f} "
            f"{result.stop_reason}"
        )

    start = time.perf_counter()
    beam = fit_clean_beam(psf_taylor[0], CELL)
    restore(result.model_taylor[0], beam, CELL)
    print(
        f"fit_clean_beam + restore: {time.perf_counter() - start:.2f} s "
        f"(bmaj {np.degrees(beam.bmaj) * 60:.2f}', bmin {np.degrees(beam.bmin) * 60:.2f}')"
    )


if __name__ == "__main__":
    main()
