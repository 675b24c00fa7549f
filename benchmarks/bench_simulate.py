"""Wall time and peak memory of the simulation: the seed's example and a large case.

Usage: ``python benchmarks/bench_simulate.py --out /tmp/bench [--cases seed large]
[--workers 1 2]``.  Each run is a fresh subprocess; wall time includes the Dask LocalCluster
start when n_workers > 1 (n_workers 1 runs in-process).  Memory: the largest resident set
of any one process of the run (psutil, sampled every 50 ms) and the sum over its processes.
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


class MemorySampler(threading.Thread):
    """Peak RSS of this process and its descendants (per process and summed)."""

    def __init__(self, interval: float = 0.05):
        super().__init__(daemon=True)
        import psutil

        self._root = psutil.Process()
        self._interval = interval
        self._done = threading.Event()
        self.peak_process = 0
        self.peak_total = 0

    def run(self) -> None:
        import psutil

        while not self._done.is_set():
            total = 0
            for proc in [self._root, *self._root.children(recursive=True)]:
                try:
                    rss = proc.memory_info().rss
                except psutil.Error:
                    continue
                total += rss
                self.peak_process = max(self.peak_process, rss)
            self.peak_total = max(self.peak_total, total)
            self._done.wait(self._interval)

    def stop(self) -> None:
        self._done.set()
        self.join()


def run_one(case: str, workers: int, out: Path) -> dict:
    sampler = MemorySampler()
    sampler.start()
    start = time.perf_counter()
    from sdpbatch.execution.cluster import dask_client
    from sdpbatch.execution.runner import OnDask
    from sdpbatch.execution.simulate import simulate
    from sdpbatch.parameters import Parameters

    params = Parameters(**{**CASES[case], "n_workers": workers})
    if workers == 1:
        products = simulate(params, out)
    else:
        with dask_client(workers) as client:
            products = simulate(params, out, runner=OnDask(client))
    wall = time.perf_counter() - start
    sampler.stop()
    return {
        "case": case,
        "workers": workers,
        "wall_s": wall,
        "simulate_s": products.seconds,
        "nvis": products.nvis,
        "nstations": products.nstations,
        "nsources": products.nsources,
        "peak_process_mib": sampler.peak_process / 2**20,
        "peak_total_mib": sampler.peak_total / 2**20,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, required=True, help="scratch directory")
    parser.add_argument("--cases", nargs="+", default=list(CASES), choices=list(CASES))
    parser.add_argument("--workers", nargs="+", type=int, default=[1, 2])
    parser.add_argument("--child", nargs=2, metavar=("CASE", "WORKERS"), help=argparse.SUPPRESS)
    parser.add_argument("--keep", action="store_true", help="keep the products")
    args = parser.parse_args()
    if args.child:
        result = run_one(args.child[0], int(args.child[1]), args.out)
        print(json.dumps(result))
        return 0
    rows = []
    for case in args.cases:
        for workers in args.workers:
            out = args.out / f"{case}-w{workers}"
            shutil.rmtree(out, ignore_errors=True)
            proc = subprocess.run(
                [sys.executable, __file__, "--out", str(out), "--child", case, str(workers)],
                check=True,
                capture_output=True,
                text=True,
            )
            rows.append(json.loads(proc.stdout.strip().splitlines()[-1]))
            if not args.keep:
                shutil.rmtree(out, ignore_errors=True)
            r = rows[-1]
            print(
                f"{r['case']:6s} workers={r['workers']}  wall {r['wall_s']:6.2f} s  "
                f"(simulate {r['simulate_s']:6.2f} s)  {r['nvis']:>10,d} vis  "
                f"{r['nstations']} stations {r['nsources']} sources  "
                f"peak/process {r['peak_process_mib']:6.0f} MiB  "
                f"total {r['peak_total_mib']:6.0f} MiB",
                flush=True,
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
