"""Time from AssignResources to FINISHED for the small SBI, per execution engine.

Usage::

    python benchmarks/bench_engines.py [--engines local slurm] [--repeats 3] [--out DIR]
        [--slurm scratch|existing]

For each engine the whole system is started (``sdpbatch up --engine ENGINE`` in a fresh data
directory); then, ``--repeats`` times, the small SBI (``examples/sbi-small.json``, with fresh
ids) is assigned to ``mid_sdp/elt/subarray_1`` and released at once (its real-time block ends,
the batch block is released) and the clock stops when the batch block is ``FINISHED``.  Also
recorded: when the block's Dask deployment was ``RUNNING`` (scheduler up, jobs submitted).
``--slurm scratch`` (default) starts a single-node SLURM cluster in the output directory the
way the tests do (root, Debian packages slurm-wlm and munge); ``existing`` uses the cluster
``sbatch`` reaches.  Prints one line per run and the medians; the SLURM overhead is the
difference of the medians.  Runs are sequential; the machine may be shared, so repeat.

Then, to see the engine's own share without the science around it, the Dask engine alone
(``--engine-repeats`` times): from the deployer's ``start`` of a 2-worker engine to both workers
connected to its scheduler, and its ``stop`` (jobs cancelled and gone from the queue).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SBI = json.loads((ROOT / "examples" / "sbi-small.json").read_text())
CLIENT_ENV = ("TANGO_HOST", "SDP_CONFIG_HOST", "SDP_CONFIG_PORT", "SDP_CONFIG_BACKEND")


def sdpbatch(*args: str, env: dict[str, str]) -> str:
    result = subprocess.run(
        [sys.executable, "-m", "sdpbatch.cli", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    if result.returncode != 0:
        raise SystemExit(f"sdpbatch {' '.join(args)} failed:\n{result.stdout}{result.stderr}")
    return result.stdout


def fresh_sbi(tag: str, run: int) -> tuple[dict, str]:
    """The small SBI with ids (and buffer names) of its own; (SBI, batch PB id)."""
    sbi = json.loads(json.dumps(SBI))
    stamp = time.strftime("%Y%m%d")
    sbi["id"] = f"sbi-{tag}-{stamp}-{run:05d}"
    rt, batch = sbi["processing_blocks"]
    rt["id"] = f"pb-{tag}rt-{stamp}-{run:05d}"
    batch["id"] = f"pb-{tag}-{stamp}-{run:05d}"
    batch["dependencies"] = [{"pb_id": rt["id"], "type": ["none"]}]
    batch["parameters"]["buffer_vis"] = f"buff-{batch['id']}-vis"
    batch["parameters"]["buffer_img"] = f"buff-{batch['id']}-img"
    return sbi, batch["id"]


def time_one(device, config, sbi: dict, pb_id: str) -> dict:
    """AssignResources + ReleaseResources, then wait (on database watches) for FINISHED."""
    dask_id = f"proc-{pb_id}-dask"
    start = time.perf_counter()
    device.AssignResources(json.dumps(sbi))
    device.ReleaseResources()
    engine_up = None
    for txn in config.txn():
        state = txn.get_pb_state(pb_id) or {}
        dep = txn.get_deployment_state(dask_id) or {}
        if engine_up is None and dep.get("status") == "RUNNING":
            engine_up = time.perf_counter() - start
        if state.get("status") not in ("FINISHED", "FAILED", "CANCELLED"):
            txn.loop(wait=True, timeout=600)
    total = time.perf_counter() - start
    if state["status"] != "FINISHED":
        raise SystemExit(f"{pb_id} ended {state['status']}: {state.get('reason')}")
    return {"pb_id": pb_id, "seconds": total, "engine_running_after": engine_up}


def bench_engine(engine: str, repeats: int, out: Path, env: dict[str, str]) -> list[dict]:
    import tango

    from sdpbatch.control.configdb import Config

    data_dir = out / f"data-{engine}"
    env = {**env, "SDPBATCH_DATA_DIR": str(data_dir)}
    printed = sdpbatch("up", "--data-dir", str(data_dir), "--engine", engine, env=env)
    exports = dict(
        line.removeprefix("export ").split("=", 1)
        for line in printed.splitlines()
        if line.startswith("export ")
    )
    runs = []
    try:
        device = tango.DeviceProxy(f"tango://{exports['TANGO_HOST']}/mid_sdp/elt/subarray_1")
        if device.state() == tango.DevState.OFF:
            device.On()
        with Config("etcd3", host="127.0.0.1", port=int(exports["SDP_CONFIG_PORT"])) as config:
            for run in range(repeats):
                sbi, pb_id = fresh_sbi(engine, run)
                result = time_one(device, config, sbi, pb_id)
                runs.append(result)
                up = result["engine_running_after"]
                print(
                    f"{engine:<6} run {run}: AssignResources -> FINISHED {result['seconds']:6.1f} s"
                    f" (Dask engine RUNNING after {up:.1f} s)",
                    flush=True,
                )
    finally:
        sdpbatch("down", "--data-dir", str(data_dir), env=env)
    return runs


def bench_engine_alone(engine: str, repeats: int, out: Path) -> list[dict]:
    """Start -> 2 workers connected, and stop, of the engine alone (deployer's side)."""
    from distributed import Client

    from sdpbatch.control import engines
    from sdpbatch.control.configdb import Config
    from sdpbatch.control.configdb.backend_memory import MemoryStore

    runs = []
    with Config("memory", store=MemoryStore()) as config:
        engines.record_engine(config, engines.parse_engine(engine))
        side = engines.Engines(config, out / f"alone-{engine}")
        for run in range(repeats):
            deploy_id = f"proc-alone{run}-dask"
            start = time.perf_counter()
            state = side.start(deploy_id, {"n_workers": 2}, log_path=out / f"{deploy_id}.log")
            try:
                with Client(state["scheduler_address"], timeout="60s") as client:
                    client.wait_for_workers(2, timeout=120)
                ready = time.perf_counter() - start
            finally:
                start = time.perf_counter()
                side.stop(deploy_id, state)
                stopped = time.perf_counter() - start
            runs.append({"ready": ready, "stopped": stopped})
            print(
                f"{engine:<6} engine alone {run}: 2 workers connected after {ready:.2f} s, "
                f"stopped in {stopped:.2f} s",
                flush=True,
            )
    return runs


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--engines", nargs="+", default=["local", "slurm"])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, default=None, help="work directory (default: temp)")
    parser.add_argument("--slurm", choices=("scratch", "existing"), default="scratch")
    parser.add_argument("--engine-repeats", type=int, default=5)
    args = parser.parse_args()
    out = (args.out or Path(tempfile.mkdtemp(prefix="bench-engines-"))).resolve()
    out.mkdir(parents=True, exist_ok=True)
    env = {k: v for k, v in os.environ.items() if k not in CLIENT_ENV}
    cluster = None
    if "slurm" in args.engines and args.slurm == "scratch":
        sys.path.insert(0, str(ROOT / "tests"))
        from slurm_fixture import SlurmCluster  # the tests' single-node cluster

        cluster = SlurmCluster(out / "slurm")
        cluster.start()
        env.update(cluster.env)
    results: dict[str, list[dict]] = {}
    try:
        for engine in args.engines:
            results[engine] = bench_engine(engine, args.repeats, out, env)
        os.environ.update(env)  # the engine alone runs in this process
        alone = {e: bench_engine_alone(e, args.engine_repeats, out) for e in args.engines}
    finally:
        if cluster is not None:
            cluster.stop()
    print(f"\nload average at the end: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    medians = {e: statistics.median(r["seconds"] for r in runs) for e, runs in results.items()}
    for engine, median in medians.items():
        print(f"{engine:<6} median of {len(results[engine])}: {median:.1f} s")
    if {"local", "slurm"} <= set(medians):
        overhead = medians["slurm"] - medians["local"]
        print(f"SLURM overhead (difference of medians): {overhead:.1f} s")
    for engine, runs in alone.items():
        ready = statistics.median(r["ready"] for r in runs)
        stopped = statistics.median(r["stopped"] for r in runs)
        print(f"{engine:<6} engine alone, median: ready {ready:.2f} s, stopped {stopped:.2f} s")
    (out / "bench-engines.json").write_text(json.dumps({"runs": results, "alone": alone}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
