"""Wall time and peak memory of ICAL per stage, beside WSClean 3.1 on the same data.

Usage::

    python benchmarks/bench_ical.py --out /tmp/bench-ical [--cases seed large] [--workers 1]
        [--threads 2] [--deep] [--no-wsclean]

For each case the data are simulated once (``sdpbatch.execution.simulate``, the seed's example
or the large case of the simulation issue: rmax 2000 m, 60 times, 16 windows), then ICAL runs
in a fresh subprocess through :func:`sdpbatch.execution.pipeline.ical_pipeline` with the
seed's settings (``--deep``: also with niter 10000).  Stage times (read, grid, degrid, clean,
solve) come from ``IcalResult.timings`` (summed over the major cycles), ``write`` from the
pipeline.  Memory: psutil samples (every 20 ms) of the resident set of the run's processes
(the pipeline process and any Dask workers) summed, reported per stage (the largest sample
while that stage ran, over all its intervals: read, grid, solve, clean, degrid, restore,
write), over the whole ICAL, and for a separate read of all MeasurementSets.

WSClean (if installed) images the same MeasurementSets with deep settings: ``-niter 10000
-multiscale -multiscale-scales 0,3,10 -channels-out <nwin> -join-channels -fit-spectral-pol 2``,
the same size and scale, natural weighting, ``-mgain 0.9 -threshold 0.1`` (the analogue of our
fractional threshold 0.1 and absolute threshold 0.1 Jy), 2 threads.  WSClean does not
self-calibrate: it only grids and cleans, so it is the yardstick for the imaging work.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

CASES = {
    "seed": {},
    "large": {"rmax": 2000.0, "ntimes": 60, "nfreqwin": 16},
}
GIB = 1024**3


class MemorySampler(threading.Thread):
    """Timeline of the summed RSS of a process and its descendants."""

    def __init__(self, pid: int | None = None, interval: float = 0.02):
        super().__init__(daemon=True)
        import psutil

        self._root = psutil.Process(pid)
        self._interval = interval
        self._done = threading.Event()
        self.samples: list[tuple[float, int]] = []

    def run(self) -> None:
        import psutil

        while not self._done.is_set():
            total = 0
            try:
                procs = [self._root, *self._root.children(recursive=True)]
            except psutil.Error:
                break
            for proc in procs:
                try:
                    total += proc.memory_info().rss
                except psutil.Error:
                    continue
            self.samples.append((time.perf_counter(), total))
            self._done.wait(self._interval)

    def stop(self) -> None:
        self._done.set()
        self.join()

    def peak(self, start: float = -1e300, end: float = 1e300) -> int:
        values = [rss for t, rss in self.samples if start <= t <= end]
        return max(values) if values else 0


def _params(case: str, workers: int, threads: int, deep: bool) -> dict:
    params = {**CASES[case], "n_workers": workers, "threads_per_worker": threads}
    if deep:
        params["niter"] = 10000
    return params


def simulate_case(case: str, vis_dir: Path) -> list[Path]:
    """Simulate the case once (kept between runs of the benchmark)."""
    from sdpbatch.io.truth import CATALOGUE_FILE

    if (vis_dir / "simulation.json").is_file() and (vis_dir / CATALOGUE_FILE).is_file():
        return sorted(vis_dir.glob("*.ms"), key=lambda p: int(p.stem.rsplit("_", 1)[1]))
    from sdpbatch.execution.simulate import simulate
    from sdpbatch.parameters import parse_parameters

    params = parse_parameters({**CASES[case], "n_workers": 1})
    start = time.perf_counter()
    products = simulate(params, vis_dir)
    print(
        f"  simulated {case}: {products.nvis} visibilities in {time.perf_counter() - start:.1f} s"
    )
    return products.ms_paths


def child(args: argparse.Namespace) -> None:
    """One measured ICAL run (in its own process): prints a JSON line."""
    from sdpbatch.execution.cluster import dask_client
    from sdpbatch.execution.pipeline import ical_pipeline
    from sdpbatch.execution.runner import OnDask
    from sdpbatch.io.ms_read import read_measurement_set
    from sdpbatch.parameters import parse_parameters

    params = parse_parameters(json.loads(args.params))
    ms_paths = [Path(p) for p in args.ms]
    sampler = MemorySampler()
    sampler.start()
    t0 = time.perf_counter()
    for path in ms_paths:  # the read stage alone, for its memory
        read_measurement_set(path)
    t1 = time.perf_counter()
    if params.n_workers == 1:
        products = ical_pipeline(ms_paths, Path(args.img), params, truth_dir=Path(args.truth))
        cluster_start = 0.0
    else:
        tc = time.perf_counter()
        with dask_client(params.n_workers, threads_per_worker=params.threads_per_worker) as cl:
            cluster_start = time.perf_counter() - tc
            t1 = time.perf_counter()
            products = ical_pipeline(
                ms_paths, Path(args.img), params, runner=OnDask(cl), truth_dir=Path(args.truth)
            )
    t2 = time.perf_counter()
    sampler.stop()
    timings = products.qa["timings_s"]
    write_start = t2 - timings["write"]
    truth = products.qa.get("truth", {})
    print(
        json.dumps(
            {
                "timings": timings,
                "wall": t2 - t1,
                "cluster_start": cluster_start,
                "read_alone": t1 - t0 if params.n_workers == 1 else None,
                "peak_read": sampler.peak(t0, t1),
                "peak_ical": sampler.peak(t1, write_start),
                "peak_write": sampler.peak(write_start, t2),
                "peak_per_stage": {
                    stage: max(
                        sampler.peak(a, b)
                        for name, a, b in products.stage_intervals
                        if name == stage
                    )
                    for stage in dict.fromkeys(name for name, _, _ in products.stage_intervals)
                },
                "dynamic_range": products.qa["restored"]["dynamic_range"],
                "phase_error": truth.get("gain_phase_rms_error_rad"),
                "max_flux_error": truth.get("max_flux_error"),
                "max_offset": truth.get("max_offset_pixels"),
                "cycles": len(products.qa["cycles"]),
            }
        )
    )


def run_ical(
    case: str, workers: int, threads: int, deep: bool, ms_paths: list[Path], out: Path
) -> dict:
    img = out / case / ("img-deep" if deep else "img")
    cmd = [sys.executable, __file__, "--child", "--params",
           json.dumps(_params(case, workers, threads, deep)), "--img", str(img),
           "--truth", str(ms_paths[0].parent), "--ms", *map(str, ms_paths)]  # fmt: skip
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"ICAL run failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def run_wsclean(case: str, ms_paths: list[Path], out: Path, nwin: int) -> dict | None:
    exe = shutil.which("wsclean")
    if exe is None:
        return None
    from sdpbatch.parameters import Parameters

    p = Parameters()
    work = out / case / "wsclean"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    cmd = [exe, "-quiet", "-j", "2", "-size", str(p.npixel), str(p.npixel),
           "-scale", f"{p.cellsize * 180 / 3.141592653589793}deg",
           "-weight", "natural", "-niter", "10000", "-gain", str(p.clean_gain),
           "-mgain", "0.9", "-threshold", str(p.threshold),
           "-multiscale", "-multiscale-scales", "0,3,10",
           "-channels-out", str(nwin), "-join-channels", "-fit-spectral-pol", "2",
           "-name", str(work / "ws"), *map(str, ms_paths)]  # fmt: skip
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    sampler = MemorySampler(proc.pid)
    sampler.start()
    output, _ = proc.communicate()
    wall = time.perf_counter() - start
    sampler.stop()
    if proc.returncode != 0:
        print(output[-2000:])
        return None
    iterations = [line for line in output.splitlines() if "iterations" in line.lower()]
    return {"wall": wall, "peak": sampler.peak(), "last": iterations[-1] if iterations else ""}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("/tmp/bench-ical"))
    parser.add_argument("--cases", nargs="+", default=list(CASES), choices=list(CASES))
    parser.add_argument("--workers", type=int, default=1, help="1: in-process, no Dask")
    parser.add_argument("--threads", type=int, default=2, help="threads per worker (ducc0)")
    parser.add_argument("--deep", action="store_true", help="also run ICAL with niter 10000")
    parser.add_argument("--no-wsclean", action="store_true")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--params", help=argparse.SUPPRESS)
    parser.add_argument("--img", help=argparse.SUPPRESS)
    parser.add_argument("--truth", help=argparse.SUPPRESS)
    parser.add_argument("--ms", nargs="*", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args)
        return
    from sdpbatch.offline import configure_astropy_offline

    configure_astropy_offline()
    rows = []
    for case in args.cases:
        print(f"case {case}:")
        ms_paths = simulate_case(case, args.out / case / "vis")
        nwin = len(ms_paths)
        runs = [("ICAL seed settings", False)] + ([("ICAL niter 10000", True)] if args.deep else [])
        for label, deep in runs:
            r = run_ical(case, args.workers, args.threads, deep, ms_paths, args.out)
            t = r["timings"]
            rows.append((case, label, r))
            print(
                f"  {label}: wall {r['wall']:.1f} s (cluster start {r['cluster_start']:.1f} s) | "
                + " ".join(
                    f"{k} {t.get(k, 0.0):.2f}"
                    for k in ("read", "grid", "degrid", "clean", "solve", "write")
                )  # fmt: skip
                + " s | peak "
                + " ".join(
                    f"{k} {v / GIB:.2f}" for k, v in r["peak_per_stage"].items()
                )  # fmt: skip
                + f" GiB (read alone {r['peak_read'] / GIB:.2f}, all ICAL "
                f"{r['peak_ical'] / GIB:.2f}) | "
                f"DR {r['dynamic_range']:.0f}, phase err {r['phase_error'] or float('nan'):.4f} "
                f"rad, flux err {100 * (r['max_flux_error'] or float('nan')):.2f} %, "
                f"offset {r['max_offset'] or float('nan'):.3f} px, {r['cycles']} cycles",
                flush=True,
            )
        if not args.no_wsclean:
            ws = run_wsclean(case, ms_paths, args.out, nwin)
            if ws is None:
                print("  WSClean: not available or failed")
            else:
                print(
                    f"  WSClean 3.1 deep: wall {ws['wall']:.1f} s, peak {ws['peak'] / GIB:.2f} "
                    f"GiB ({ws['last'].strip()})",
                    flush=True,
                )
    print(json.dumps([{"case": c, "run": label, **r} for c, label, r in rows], indent=1))


if __name__ == "__main__":
    main()
