"""Peak memory of ICAL against the image size, next to ``image_memory_bytes``'s estimate.

    python benchmarks/bench_image_memory.py [--data DIR] [--sizes 512 1024 2048]
        [--nmoment 2] [--scales 0 3 10] [--nfreqwin 3]

Simulates a small observation once (few visibilities: the image side dominates), then runs
``run_ical`` in a fresh process per image size (in-process runner, one major cycle) and prints
its peak resident memory (``ru_maxrss``), the increase over the smallest size, and the estimate
of :func:`sdpbatch.science.imaging.image_memory_bytes` for the same settings.  The estimate must
stay above the measured increase (it is used to refuse images that cannot fit), without being
far above it.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

CHILD = """
import json, resource, sys
from sdpbatch.offline import configure_astropy_offline
configure_astropy_offline()
from sdpbatch.execution.ical import run_ical
from sdpbatch.parameters import Parameters
args = json.loads(sys.argv[1])
run_ical(args["paths"], Parameters(**args["params"]))
print(json.dumps({"peak": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024}))
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=None)
    parser.add_argument("--sizes", type=int, nargs="+", default=[512, 1024, 2048])
    parser.add_argument("--nmoment", type=int, default=2)
    parser.add_argument("--scales", type=int, nargs="+", default=[0, 3, 10])
    parser.add_argument("--nfreqwin", type=int, default=3)
    args = parser.parse_args()

    from sdpbatch.offline import configure_astropy_offline

    configure_astropy_offline()
    from sdpbatch.execution.simulate import simulate
    from sdpbatch.parameters import Parameters
    from sdpbatch.science.imaging import image_memory_bytes

    common = dict(rmax=300.0, ntimes=2, nfreqwin=args.nfreqwin, n_workers=1)
    data = args.data or Path(tempfile.mkdtemp(prefix="bench-image-memory-"))
    paths = sorted(str(p) for p in data.glob("*.ms")) or [
        str(p) for p in simulate(Parameters(**common), data).ms_paths
    ]
    rows = []
    for npixel in args.sizes:
        params = dict(
            common,
            npixel=npixel,
            cellsize=0.058 / npixel,
            nmoment=args.nmoment,
            scales=args.scales,
            nmajor=1,
            niter=200,
            threads_per_worker=2,
        )
        out = subprocess.run(
            [sys.executable, "-c", CHILD, json.dumps({"paths": paths, "params": params})],
            capture_output=True,
            text=True,
            check=True,
        )
        peak = json.loads(out.stdout.strip().splitlines()[-1])["peak"]
        estimate = image_memory_bytes(
            npixel, nmoment=args.nmoment, nscales=len(args.scales), nwindows=args.nfreqwin
        )
        rows.append((npixel, peak, estimate))
    base_n, base_peak, base_estimate = rows[0]
    print(f"{'npixel':>7} {'peak MiB':>9} {'increase MiB':>13} {'estimate MiB':>13} "
          f"{'est. increase':>14} {'ratio':>6}")  # fmt: skip
    for npixel, peak, estimate in rows:
        increase, est_increase = peak - base_peak, estimate - base_estimate
        ratio = est_increase / increase if increase > 0 else float("nan")
        print(
            f"{npixel:7d} {peak / 2**20:9.0f} {increase / 2**20:13.0f} {estimate / 2**20:13.0f} "
            f"{est_increase / 2**20:14.0f} {ratio:6.2f}"
        )


if __name__ == "__main__":
    main()
