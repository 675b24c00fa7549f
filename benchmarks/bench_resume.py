"""Kill anywhere, resume, and get the same products: the seed's run stopped by SIGKILL at
points of its cycle timeline, resumed with ``sdpbatch run --resume`` each time.

Usage::

    python3 benchmarks/bench_resume.py --out /tmp/bench-resume [--params examples/seed-params.json]
        [--workers 0] [--points "ICAL image" "ICAL cycle 1: peak" ...]

1. ``sdpbatch run`` without interruption (its simulation is then reused by every resume);
2. for each point: ``sdpbatch ical`` on the simulation, SIGKILLed when its log shows the
   point, then ``sdpbatch ical --resume``; the products (every FITS image, the gains) are
   compared with the uninterrupted run's, and the killed and resumed times are added up.

Printed: the uninterrupted ICAL time and its cycle time, per point the killed and the resumed
time and their sum against "uninterrupted + one cycle", and the largest difference of any
product over the restored image's peak (0 when bit for bit).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from astropy.io import fits

POINTS = [
    "ICAL image",  # reading done, cycle 0 under way
    "ICAL cycle 1: peak",  # right after cycle 1's clean: its checkpoint being written
    "ICAL cycle 2: T solved",  # in the middle of cycle 2
    "ICAL cycle 4: peak",
    "ICAL final",  # the finish done, products being written
]


def _ical(ms: list[Path], out: Path, params: Path, workers: int, *extra: str) -> list[str]:
    chosen = ["--n-workers", str(workers)] if workers else []  # 0: in this process, every core
    return [sys.executable, "-m", "sdpbatch.cli", "ical", *map(str, ms), "--out", str(out),
            "--params", str(params), *chosen, "--no-progress", *extra]  # fmt: skip


def _timed(command: list[str], kill_at: str | None = None) -> tuple[float, str]:
    """(wall seconds, log) of ``command``, SIGKILLed when a log line contains ``kill_at``."""
    start = time.perf_counter()
    proc = subprocess.Popen(command, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True)
    lines = []
    for line in proc.stderr:
        lines.append(line)
        if kill_at and kill_at in line:
            os.kill(proc.pid, signal.SIGKILL)
            break
    proc.wait()
    if not kill_at and proc.returncode:
        raise SystemExit("".join(lines[-20:]))
    return time.perf_counter() - start, "".join(lines)


def _products(out: Path) -> dict[str, np.ndarray]:
    import h5py

    found = {p.name: fits.getdata(p) for p in sorted(out.glob("*.fits"))}
    with h5py.File(next(out.glob("*_gains.h5"))) as h5:
        for name, soltab in h5["sol000"].items():
            if isinstance(soltab, h5py.Group):  # a solution table (not the antenna table)
                found[name] = soltab["val"][()]
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--params", type=Path, default=Path("examples/seed-params.json"))
    parser.add_argument("--workers", type=int, default=0, help="0: in this process")
    parser.add_argument("--points", nargs="+", default=POINTS)
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    params = json.loads(args.params.read_text())
    vis = args.out / params["buffer_vis"]
    if not (vis / "provenance.json").exists():
        subprocess.run([sys.executable, "-m", "sdpbatch.cli", "simulate", str(args.params),
                        "--out", str(vis), "--no-progress"], check=True)  # fmt: skip
    ms = sorted(vis.glob("*.ms"))
    if not args.workers:  # in this process: the seed's n_workers would start a cluster
        params.pop("n_workers", None)
    args.params = args.out / "ical-params.json"
    args.params.write_text(json.dumps(params))
    whole = args.out / "whole"
    seconds, _ = _timed(_ical(ms, whole, args.params, args.workers))
    qa = json.loads((whole / "qa.json").read_text())
    cycle = max(c["seconds"] for c in qa["cycles"])
    expected = _products(whole)
    peak = float(np.abs(expected[next(n for n in expected if n.endswith("restored.fits"))]).max())
    print(f"uninterrupted ICAL {seconds:.1f} s (longest cycle {cycle:.1f} s), {len(ms)} MS")
    print(f"{'killed at':28s} {'killed s':>9s} {'resumed s':>9s} {'sum/(whole+cycle)':>18s} "
          f"{'max diff/peak':>14s}")  # fmt: skip
    for point in args.points:
        out = args.out / f"killed-{args.points.index(point)}"
        killed, _ = _timed(_ical(ms, out, args.params, args.workers), kill_at=point)
        resumed, log = _timed(_ical(ms, out, args.params, args.workers, "--resume"))
        got = _products(out)
        diff = max(float(np.abs(got[k] - v).max()) for k, v in expected.items()) / peak
        ratio = (killed + resumed) / (seconds + cycle)
        taken = "resumed" if "ICAL resumed after" in log else "from the start"
        print(f"{point:28s} {killed:9.1f} {resumed:9.1f} {ratio:18.2f} {diff:14.2e}  ({taken})")


if __name__ == "__main__":
    main()
