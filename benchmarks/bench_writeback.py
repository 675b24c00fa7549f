"""What atomic write-back costs: CORRECTED_DATA and MODEL_DATA against the alternatives.

    python benchmarks/bench_writeback.py [--stations 129] [--times 20] [--channels 64]
        [--dir DIR]

Writes a MeasurementSet with sdpbatch's writer (XX, YY; tiled storage), then times:

- ``write_corrected_data`` (new column, swap) and ``write_model_data``, each twice (first
  time: a new column; second time: replacing the existing one);
- the least any writer must do: one ``putcol`` of the corrected values into an existing
  column, in place (not atomic: a failure leaves it half written);
- the other atomic way: copy the whole MeasurementSet (``shutil.copytree``), which a
  write-then-rename of the file would need.

Prints seconds and the ratios to the in-place write, and the disk size of the MeasurementSet.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
from casacore import tables

from sdpbatch.io.ms_read import read_measurement_set_metadata
from sdpbatch.io.ms_write import write_measurement_set
from sdpbatch.io.ms_writeback import GainTerm, write_corrected_data, write_model_data
from sdpbatch.science.visibility import Visibilities


def _observation(nant: int, ntimes: int, nchan: int, rng) -> Visibilities:
    a1, a2 = np.triu_indices(nant, 1)
    nbl = a1.size
    nrow = nbl * ntimes
    return Visibilities(
        uvw=rng.normal(0, 500, (nrow, 3)),
        time=np.repeat(5.0e9 + 10.0 * np.arange(ntimes), nbl),
        antenna1=np.tile(a1, ntimes).astype(np.int32),
        antenna2=np.tile(a2, ntimes).astype(np.int32),
        frequency=1e8 + 1e5 * np.arange(nchan),
        channel_width=np.full(nchan, 1e5),
        vis=rng.normal(size=(nrow, nchan)) + 1j * rng.normal(size=(nrow, nchan)),
        weight=np.ones((nrow, nchan), np.float32),
        flag=np.zeros((nrow, nchan), bool),
        phase_centre=(0.0, -0.5),
        antenna_positions=rng.normal(0, 500, (nant, 3)) + np.array([-2.56e6, 5.09e6, -2.85e6]),
        integration_time=10.0,
    )


def _timed(label: str, fn, results: dict) -> None:
    start = time.perf_counter()
    fn()
    results[label] = time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stations", type=int, default=129)
    parser.add_argument("--times", type=int, default=20)
    parser.add_argument("--channels", type=int, default=64)
    parser.add_argument("--dir", type=Path, default=None)
    args = parser.parse_args()
    rng = np.random.default_rng(1)
    root = args.dir or Path(tempfile.mkdtemp(prefix="bench-writeback-"))
    path = root / "bench.ms"
    vis = _observation(args.stations, args.times, args.channels, rng)
    write_measurement_set(path, vis)
    size = sum(f.stat().st_size for f in path.rglob("*") if f.is_file())
    gains = np.exp(
        0.1 * rng.normal(size=(1, args.stations, 1)) + 1j * rng.normal(size=(1, args.stations, 1))
    )
    term = GainTerm(gains, np.array([-np.inf, np.inf]), np.zeros(args.channels, int))
    info = read_measurement_set_metadata(path)  # as the run checked it
    results: dict[str, float] = {}
    _timed("corrected, new column", lambda: write_corrected_data(info, [term]), results)
    _timed("corrected, replacing", lambda: write_corrected_data(info, [term]), results)
    _timed("model, new column", lambda: write_model_data(info, vis.vis), results)
    _timed("model, replacing", lambda: write_model_data(info, vis.vis), results)

    def in_place() -> None:
        with tables.table(str(path), readonly=False, ack=False) as t:
            t.putcol("CORRECTED_DATA", t.getcol("DATA") * 0.5)

    _timed("in-place putcol (not atomic)", in_place, results)
    _timed("copy of the MeasurementSet", lambda: shutil.copytree(path, root / "copy.ms"), results)
    base = results["in-place putcol (not atomic)"]
    print(f"MeasurementSet: {vis.nrow} rows x {args.channels} channels x 2 correlations, "
          f"{size / 2**20:.0f} MiB on disk")  # fmt: skip
    for label, seconds in results.items():
        print(f"  {label:32s} {seconds:7.2f} s  {seconds / base:5.2f} x in-place")
    shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
