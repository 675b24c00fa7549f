"""Wall time of the batch imaging workflow through the control plane (deployer's Dask engine).

Usage: ``python benchmarks/bench_deployer_batch.py --out /tmp/bench [--runs 3]
[--src A --src B] [--params examples/seed-params.json]``.

Each run starts a fresh etcd, ``sdpbatch controller`` and ``sdpbatch deployer`` on loopback,
creates one ``batch:batch_imaging:0.1.0`` block with ``sdpbatch process`` and times it from
creation to FINISHED (the workflow process, its Dask scheduler and workers are started by the
deployer, as under ``sdpbatch up``).  With several ``--src`` trees (``PYTHONPATH`` of the
control plane), the runs alternate between them (A B A B ...), so a before/after comparison
on a shared, noisy machine sees the same load.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

import pyetcd

ROOT = Path(__file__).resolve().parents[1]


def one_run(src: Path, params: dict, out: Path) -> float:
    """Seconds from the block's creation to FINISHED, with the control plane of ``src``."""
    sys.path.insert(0, str(src))
    from sdpbatch.control.system.etcd_server import free_port, start_etcd, wait_healthy
    from sdpbatch.control.system.processes import start_process, stop_process

    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    port = free_port()
    env = {
        **os.environ,
        "PYTHONPATH": str(src),
        "SDP_CONFIG_BACKEND": "etcd3",
        "SDP_CONFIG_HOST": "127.0.0.1",
        "SDP_CONFIG_PORT": str(port),
        "SDPBATCH_DATA_DIR": str(out / "data"),
    }
    etcd = start_etcd(
        out / "etcd", client_port=port, peer_port=free_port(), log_path=out / "etcd.log"
    )
    cli = [sys.executable, "-m", "sdpbatch.cli"]
    procs = [etcd]
    try:
        wait_healthy("127.0.0.1", port)
        for name in ("controller", "deployer"):
            procs.append(start_process(name, [*cli, name], log_path=out / f"{name}.log", env=env))
        params_file = out / "params.json"
        params_file.write_text(json.dumps(params))
        start = time.perf_counter()
        pb_id = subprocess.run(
            [*cli, "process", "batch:batch_imaging:0.1.0", str(params_file)],
            env=env,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        client = pyetcd.client(host="127.0.0.1", port=port)
        status = None
        while status not in ("FINISHED", "FAILED", "CANCELLED"):
            time.sleep(0.25)
            value, _ = client.get(f"/pb/{pb_id}/state")
            status = json.loads(value).get("status") if value else None
        client.close()
        seconds = time.perf_counter() - start
        if status != "FINISHED":
            raise RuntimeError(f"{pb_id} ended {status}; see {out}")
        return seconds
    finally:
        for record in reversed(procs):
            stop_process(record.pid, timeout=20)
        sys.path.remove(str(src))
        for name in [m for m in sys.modules if m.startswith("sdpbatch")]:
            del sys.modules[name]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--src", type=Path, action="append", help="control plane source tree")
    parser.add_argument("--params", type=Path, default=ROOT / "examples" / "seed-params.json")
    args = parser.parse_args()
    params = json.loads(args.params.read_text())
    for name in ("buffer_vis", "buffer_img"):  # each run's block gets its own buffers
        params.pop(name, None)
    sources = args.src or [ROOT / "src"]
    times: dict[str, list[float]] = {str(s): [] for s in sources}
    for run in range(args.runs):
        for src in sources:
            seconds = one_run(src.resolve(), params, args.out / f"run-{run}")
            times[str(src)].append(seconds)
            print(f"{src}: run {run}: {seconds:.1f} s", flush=True)
    for src, values in times.items():
        print(
            f"{src}: median {statistics.median(values):.1f} s, "
            f"min {min(values):.1f} s, max {max(values):.1f} s over {len(values)} runs"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
