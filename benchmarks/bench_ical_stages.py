"""ICAL stage timings, memory and accuracy on the seed's example (or any parameters).

    python benchmarks/bench_ical_stages.py [--data DIR] [--workers 0|N] [--threads T]
        [--params PARAMS.json] [--set key=value ...]

Simulates the observation into ``--data`` once (reused when the truth is there), then runs
``run_ical`` in this process (``--workers 0``, ducc0 with ``--threads``) or on a LocalCluster of
``--workers`` processes, and prints: wall time and stage timings, CPU seconds of this process,
peak resident memory summed over this process and its children (sampled every 20 ms), the
peak of each process (this one and each Dask worker: ``ru_maxrss`` asked of the workers before
the cluster closes, so it is exact), the
solved-vs-true phase error (referenced to station 0, linear gradient removed) and the flux and
position of the 10 brightest true sources in the restored image.

Fluxes are compared with the true flux at the reference frequency and with the mean over the
channels (what a 2-term Taylor fit of a curved spectrum returns at the reference frequency);
positions raw and after removing the common shift (self-calibration alone cannot fix a global
phase gradient, i.e. a common shift of the image; ``--set calibration_model='"none"'`` shows it).
"""

from __future__ import annotations

import argparse
import json
import logging
import resource
import threading
import time
from pathlib import Path

import numpy as np
import psutil

from sdpbatch.offline import configure_astropy_offline

configure_astropy_offline()

from sdpbatch.execution.cluster import dask_client  # noqa: E402
from sdpbatch.execution.ical import run_ical  # noqa: E402
from sdpbatch.execution.pipeline import calibration_model  # noqa: E402
from sdpbatch.execution.runner import OnDask  # noqa: E402
from sdpbatch.execution.simulate import simulate  # noqa: E402
from sdpbatch.io.truth import read_truth  # noqa: E402
from sdpbatch.parameters import load_parameters, parse_parameters  # noqa: E402
from sdpbatch.science.assess import gain_phase_error, measure_source, sky_to_pixel  # noqa: E402
from sdpbatch.vocabulary import CATALOGUE_FILE, TRUTH_GAINS_FILE  # noqa: E402

MIB = 2**20


def max_rss_mib() -> float:
    """Peak resident memory of the calling process (MiB; Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


class MemorySampler:
    """Peak of the summed RSS of this process and all its children."""

    def __init__(self, interval: float = 0.02):
        self.interval, self.peak, self._stop = interval, 0, threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        me = psutil.Process()
        while not self._stop.is_set():
            total = 0
            for p in [me, *me.children(recursive=True)]:
                try:
                    total += p.memory_info().rss
                except psutil.Error:
                    pass
            self.peak = max(self.peak, total)
            time.sleep(self.interval)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()


def accuracy(result, truth, freqs) -> dict:
    out = {}
    if "T" in result.solutions:
        out["phase_error_rms_rad"] = gain_phase_error(
            result.solutions["T"].gains[:, :, 0],
            truth.gains.gains[:, :, 0],
            truth.gains.antenna_positions,
        )
    sky = truth.sky
    s0 = sky.flux_at(result.reference_frequency)[:, 0]
    smean = sky.flux_at(freqs).mean(axis=1)
    ix, iy = sky_to_pixel(sky.ra, sky.dec, result.phase_centre, result.cellsize, result.npixel)
    n, margin = result.npixel, 4
    inside = (ix > margin) & (ix < n - margin) & (iy > margin) & (iy < n - margin)
    rows = []
    for k in [k for k in np.argsort(-s0) if inside[k]][:10]:
        flux, x, y = measure_source(result.restored, ix[k], iy[k])
        rows.append((s0[k], smean[k], flux, x - ix[k], y - iy[k]))
    rows = np.array(rows)
    shift = np.median(rows[:, 3:5], axis=0)
    out["sources"] = [
        {
            "flux_nu0": r[0],
            "flux_channel_mean": r[1],
            "measured": r[2],
            "ratio_nu0": r[2] / r[0],
            "ratio_mean": r[2] / r[1],
            "dx": r[3],
            "dy": r[4],
        }
        for r in rows
    ]
    out["max_flux_error_nu0"] = float(np.max(np.abs(rows[:, 2] / rows[:, 0] - 1)))
    out["max_flux_error_channel_mean"] = float(np.max(np.abs(rows[:, 2] / rows[:, 1] - 1)))
    out["max_offset_px"] = float(np.max(np.hypot(rows[:, 3], rows[:, 4])))
    out["common_shift_px"] = shift.tolist()
    out["max_offset_after_shift_px"] = float(
        np.max(np.hypot(rows[:, 3] - shift[0], rows[:, 4] - shift[1]))
    )
    out["dynamic_range"] = float(result.restored.max() / result.residual_taylor[0].std())
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path("/tmp/sdpbatch-bench-seed"))
    parser.add_argument("--params", type=Path, help="parameter JSON (default: the seed's)")
    parser.add_argument("--set", nargs="*", default=[], help="overrides key=JSON-value")
    parser.add_argument("--workers", type=int, default=0, help="0: in-process")
    parser.add_argument("--threads", type=int, default=2, help="ducc0 threads (per worker)")
    parser.add_argument("--verbose", action="store_true")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING)

    overrides = {}
    for item in args.set:
        key, value = item.split("=", 1)
        overrides[key] = json.loads(value)
    params = load_parameters(args.params) if args.params else parse_parameters({})
    params = params.replace(**overrides)
    params = params.replace(threads_per_worker=args.threads)

    if not all((args.data / name).exists() for name in (TRUTH_GAINS_FILE, CATALOGUE_FILE)):
        t0 = time.perf_counter()
        simulate(params, args.data)
        print(f"simulated into {args.data} in {time.perf_counter() - t0:.1f} s")
    truth = read_truth(args.data)
    ms_paths = sorted(args.data.glob("*.ms"), key=lambda p: (len(p.name), p.name))  # _2 < _10
    model = calibration_model(params, args.data)  # as `sdpbatch ical` resolves it
    model_file, sky_model = model if model is not None else (None, None)

    with MemorySampler() as memory:
        cpu0, t0 = time.process_time(), time.perf_counter()
        if args.workers:
            with dask_client(args.workers, threads_per_worker=args.threads) as client:
                t1 = time.perf_counter()
                result = run_ical(ms_paths, params, runner=OnDask(client), sky_model=sky_model)
                wall = time.perf_counter() - t1
                workers = client.run(max_rss_mib)
            startup = t1 - t0
        else:
            result = run_ical(ms_paths, params, sky_model=sky_model)
            wall, startup = time.perf_counter() - t0, 0.0
            workers = {}
        cpu = time.process_time() - cpu0

    freqs = np.array([f for f in result.frequencies])
    report = {
        "mode": f"LocalCluster({args.workers}x{args.threads})"
        if args.workers
        else f"in-process ({args.threads} threads)",
        "calibration_model": None if model_file is None else str(model_file),
        "wall_s": round(wall, 2),
        "cluster_startup_s": round(startup, 2),
        "client_cpu_s": round(cpu, 2),
        "peak_rss_all_processes_mib": round(memory.peak / MIB),
        "peak_rss_this_process_mib": round(max_rss_mib()),
        "peak_rss_per_worker_mib": sorted(round(v) for v in workers.values()),
        "timings_s": {k: round(v, 2) for k, v in result.timings.items()},
        "cycles": [
            {k: (round(v, 4) if isinstance(v, float) else v) for k, v in c.to_dict().items()}
            for c in result.cycles
        ],
        **accuracy(result, truth, freqs),
    }
    print(json.dumps(report, indent=1, default=float))


if __name__ == "__main__":
    main()
