"""`sdpbatch ical` beside WSClean's clean of the same observation without errors, in one run.

Usage::

    python3 benchmarks/bench_ical.py --out /tmp/bench-ical [--cases seed large-1ms large-16ms]
        [--modes inprocess workers1 workers2] [--repeat 1] [--no-wsclean]

For each case the observation is simulated twice, once with the seed's 1 rad station phase
errors (what ICAL calibrates and images) and once without (the "uncorrupted twin" WSClean only
images); both are kept in ``--out`` between runs.  Cases:

- ``seed``: the seed's example (242 stations, 5 times, 8 files of one channel);
- ``large-1ms``: all 296 stations (rmax 2000 m), 60 times, 16 channels in ONE MeasurementSet;
- ``large-16ms``: the same observation as 16 MeasurementSets of one channel;
- ``large-1ms-120t``: ``large-1ms`` with twice the times (memory per worker should not grow);
- ``wide-8k``: the wide field: the central stations and spiral arms out to 10 km, the
  gleam-like sky out to the Airy beam's 5 % level, 8 channels in one MeasurementSet, imaged on
  8192 pixels of 2e-5 rad (0.16 rad, twice the half-power width at 110 MHz), deconvolved in
  sub-images of 2048 pixels by both; ``wide-4k``: the same on 4096 pixels of 4e-5 rad.

Modes: ``inprocess`` (n_workers 1, 2 threads: what ``sdpbatch ical`` chooses on 2 cores),
``workersN`` (a LocalCluster of N single-thread workers).  Each run is a separate
``sdpbatch ical`` process with the seed's imaging settings; its wall time, the peak resident
memory of every process of its tree (the client and each Dask worker, sampled every 20 ms)
and the stage breakdown from ``qa.json`` are printed.

WSClean (when ``wsclean`` is on the PATH; Debian's 3.1: ``apt-get install wsclean``) cleans
the twin with ``-use-wgridder`` (ducc0's gridder, as ours), the same image size and scale,
natural weighting, ``-channels-out`` = the channel blocks ICAL chooses (``channel_blocks``)
``-join-channels -fit-spectral-pol`` = ``nmoment``, ``-multiscale -multiscale-scales 0,3,10``,
``-niter 10000 -mgain 0.9``, the schema's ``threshold`` and ``clean_gain``, ``-j 2``, and
``-parallel-deconvolution`` when the case sets ``parallel_deconvolution``.  The ratio printed
is ours / WSClean's.
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

import numpy as np
import psutil

CASES = {
    "seed": {},
    "large-1ms": {"rmax": 2000.0, "ntimes": 60, "nfreqwin": 16, "channels_per_window": 16},
    "large-16ms": {"rmax": 2000.0, "ntimes": 60, "nfreqwin": 16, "channels_per_window": 1},
    "large-1ms-120t": {"rmax": 2000.0, "ntimes": 120, "nfreqwin": 16, "channels_per_window": 16},
    "wide-8k": {"rmax": 10000.0, "nfreqwin": 8, "channels_per_window": 8, "layout": "arms"},
    "wide-4k": {"rmax": 10000.0, "nfreqwin": 8, "channels_per_window": 8, "layout": "arms"},
}
ARMS = "arms"  # a case's layout: the central stations and spiral arms out to 10 km
IMAGING = {  # the image of a case when not the schema's
    "wide-8k": {"npixel": 8192, "cellsize": 2e-5, "parallel_deconvolution": 2048},
    "wide-4k": {"npixel": 4096, "cellsize": 4e-5, "parallel_deconvolution": 2048},
}
MODES = {
    "inprocess": {"n_workers": 1, "threads_per_worker": 2},
    "workers1": {"n_workers": 1, "threads_per_worker": 1, "one_worker_cluster": True},
    "workers2": {"n_workers": 2, "threads_per_worker": 1},
}
GIB = 1024**3


class MemorySampler(threading.Thread):
    """Peak resident memory of each process of a tree (by pid), sampled every 20 ms."""

    def __init__(self, pid: int, interval: float = 0.02):
        super().__init__(daemon=True)
        self.root = psutil.Process(pid)
        self.interval = interval
        self.done = threading.Event()
        self.peaks: dict[int, tuple[str, int]] = {}

    def run(self) -> None:
        while not self.done.is_set():
            try:
                procs = [self.root, *self.root.children(recursive=True)]
            except psutil.Error:
                break
            for proc in procs:
                try:
                    rss = proc.memory_info().rss
                    name = " ".join(proc.cmdline()[1:3])[:40] or proc.name()
                except psutil.Error:
                    continue
                if rss > self.peaks.get(proc.pid, ("", 0))[1]:
                    self.peaks[proc.pid] = (name, rss)
            self.done.wait(self.interval)

    def stop(self) -> dict[int, tuple[str, int]]:
        self.done.set()
        self.join()
        return self.peaks


def measured(cmd: list[str], env: dict | None = None) -> dict:
    """Run a command; its wall time, exit code, output tail and peak memory per process."""
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    sampler = MemorySampler(proc.pid)
    sampler.start()
    output, _ = proc.communicate()
    wall = time.perf_counter() - start
    peaks = sampler.stop()
    big = sorted((rss for _, rss in peaks.values()), reverse=True)
    return {"wall": wall, "code": proc.returncode, "output": output[-3000:], "peaks": big}


def arms_layout(path: Path) -> Path:
    """The SKA1-Low central stations and three logarithmic spiral arms of 6-station clusters
    (as the SKA-Low design places its outer stations) from 2.5 to 10 km, written to ``path``."""
    from sdpbatch.io.layout_file import SKA1_LOW_CENTRAL, load_layout

    central, _ = load_layout(SKA1_LOW_CENTRAL)
    rng = np.random.default_rng(10)
    stations = [central]
    for arm in range(3):
        for radius in np.geomspace(2500.0, 10000.0, 6):
            angle = 2 * np.pi * arm / 3 + 0.9 * np.log(radius / 2500.0)
            centre = radius * np.array([np.cos(angle), np.sin(angle), 0.0])
            spread = rng.normal(0.0, 60.0, (6, 3)) * [1, 1, 0]
            stations.append(central.mean(axis=0) + centre + spread)
    np.savetxt(path, np.concatenate(stations), delimiter=",", fmt="%.3f")
    return path


def simulate(case: str, out: Path) -> tuple[list[Path], list[Path]]:
    """(corrupted, twin) MeasurementSets of a case, simulated once."""
    dirs = {}
    for kind, phase_error in (("vis", 1.0), ("twin", 0.0)):
        target = out / case / kind
        if not (target / "simulation.json").is_file():
            params = {**CASES[case], "n_workers": 1, "phase_error": phase_error}
            (out / case).mkdir(parents=True, exist_ok=True)
            if params.get("layout") == ARMS:
                params["layout"] = str(arms_layout(out / case / "layout.csv"))
            spec = out / case / f"{kind}.json"
            spec.write_text(json.dumps(params))
            done = measured(["sdpbatch", "simulate", str(spec), "--out", str(target),
                             "--no-progress"])  # fmt: skip
            if done["code"]:
                raise RuntimeError(f"simulation of {case} failed:\n{done['output']}")
            print(f"  simulated {case} {kind} in {done['wall']:.1f} s", flush=True)
        dirs[kind] = sorted(target.glob("*.ms"), key=lambda p: int(p.stem.rsplit("_", 1)[1]))
    return dirs["vis"], dirs["twin"]


def run_ical(case: str, mode: str, paths: list[Path], out: Path) -> dict:
    settings = dict(MODES[mode])
    cluster_of_one = settings.pop("one_worker_cluster", False)
    params = out / case / f"params-{mode}.json"
    params.write_text(json.dumps({**CASES[case], **IMAGING.get(case, {}), **settings}))
    img = out / case / f"img-{mode}"
    cmd = ["sdpbatch", "ical", *map(str, paths), "--out", str(img), "--params", str(params),
           "--no-progress"]  # fmt: skip
    if cluster_of_one:  # n_workers 1 alone runs in-process: a real one-worker cluster instead
        cmd = [sys.executable, __file__, "--one-worker", *cmd[1:]]
    done = measured(cmd)
    if done["code"]:
        raise RuntimeError(f"ICAL {case} {mode} failed:\n{done['output']}")
    qa = json.loads((img / "qa.json").read_text())
    return {**done, "qa": qa}


def channel_blocks_of(paths: list[Path], p) -> int:
    """The channel blocks ICAL images these MeasurementSets with (WSClean's -channels-out)."""
    from sdpbatch.execution.ical.plan import resolve_channel_blocks
    from sdpbatch.io.ms_set import check_measurement_sets

    infos = check_measurement_sets(paths, data_column=p.data_column, field=p.field, spw=p.spw)
    return resolve_channel_blocks(infos, p.channel_blocks, p.nmoment)[0]


def run_wsclean(case: str, twin: list[Path], out: Path) -> dict | None:
    exe = shutil.which("wsclean")
    if exe is None:
        return None
    from sdpbatch.parameters import Parameters

    p = Parameters(**IMAGING.get(case, {}))
    nblocks = channel_blocks_of(twin, p)
    work = out / case / "wsclean"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    cmd = [exe, "-quiet", "-use-wgridder", "-j", "2", "-size", str(p.npixel), str(p.npixel),
           "-scale", f"{p.cellsize * 180 / 3.141592653589793}deg", "-weight", "natural",
           "-niter", "10000", "-gain", str(p.clean_gain), "-mgain", "0.9",
           "-threshold", str(p.threshold), "-multiscale", "-multiscale-scales", "0,3,10",
           "-channels-out", str(nblocks), "-join-channels", "-fit-spectral-pol", str(p.nmoment),
           *parallel_deconvolution(p), "-name", str(work / "ws"), *map(str, twin)]  # fmt: skip
    done = measured(cmd)
    return None if done["code"] else done


def parallel_deconvolution(p) -> list[str]:
    """WSClean's option for ICAL's ``parallel_deconvolution`` (the same sub-image size)."""
    size = p.parallel_deconvolution
    return ["-parallel-deconvolution", str(size)] if size else []


def report(case: str, mode: str, ours: dict, wsclean: dict | None) -> str:
    qa, t = ours["qa"], ours["qa"]["timings_s"]
    stages = " ".join(f"{k} {t.get(k, 0.0):.1f}" for k in
                      ("read", "grid", "degrid", "clean", "solve", "restore", "write"))  # fmt: skip
    truth = qa.get("truth", {})
    line = (
        f"  {mode:<9} ICAL {ours['wall']:6.1f} s | {stages} s | peak per process "
        + ", ".join(f"{b / GIB:.2f}" for b in ours["peaks"][:4])
        + f" GiB | DR {qa['restored']['dynamic_range']:.0f}, phase err "
        f"{truth.get('gain_phase_rms_error_rad', float('nan')):.4f} rad, flux err "
        f"{100 * truth.get('max_flux_error', float('nan')):.2f} %, offset "
        f"{truth.get('max_offset_pixels', float('nan')):.3f} px"
    )
    if wsclean is not None:
        line += f" | WSClean {wsclean['wall']:.1f} s, ratio {ours['wall'] / wsclean['wall']:.2f}"
    return line


def one_worker(argv: list[str]) -> None:
    """``sdpbatch ical`` on a LocalCluster of 1 single-thread worker (the scaling baseline)."""
    from distributed import Client, LocalCluster

    from sdpbatch.cli import main

    with LocalCluster(n_workers=1, threads_per_worker=1, host="127.0.0.1",
                      dashboard_address=":0") as cluster, Client(cluster):  # fmt: skip
        sys.exit(main([*argv, "--scheduler", cluster.scheduler_address]))


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--one-worker":
        one_worker(sys.argv[2:])
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("/tmp/bench-ical"))
    parser.add_argument("--cases", nargs="+", default=list(CASES), choices=list(CASES))
    parser.add_argument("--modes", nargs="+", default=["inprocess"], choices=list(MODES))
    parser.add_argument("--repeat", type=int, default=1, help="runs of each (the fastest kept)")
    parser.add_argument("--no-wsclean", action="store_true")
    args = parser.parse_args()
    for case in args.cases:
        print(f"case {case}:", flush=True)
        vis, twin = simulate(case, args.out)
        ws = None
        if not args.no_wsclean:
            runs = [run_wsclean(case, twin, args.out) for _ in range(args.repeat)]
            runs = [r for r in runs if r is not None]
            ws = min(runs, key=lambda r: r["wall"]) if runs else None
            print("  WSClean: " + (f"{ws['wall']:.1f} s, peak {ws['peaks'][0] / GIB:.2f} GiB"
                                  if ws else "not installed or failed"), flush=True)  # fmt: skip
        for mode in args.modes:
            runs = [run_ical(case, mode, vis, args.out) for _ in range(args.repeat)]
            print(report(case, mode, min(runs, key=lambda r: r["wall"]), ws), flush=True)


if __name__ == "__main__":
    main()
