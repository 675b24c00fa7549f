"""A snapshot of the system for people (``sdpbatch status``) and scripts (``--json``):
the execution engine, processing blocks with their states, deployments with their processes
(and SLURM jobs), buffers with paths."""

from __future__ import annotations

import time
from pathlib import Path

from sdpbatch.control.buffers import directory_size
from sdpbatch.control.configdb import Config, Transaction
from sdpbatch.control.engines import engine_status
from sdpbatch.control.system.processes import is_alive
from sdpbatch.control.workflow_catalogue import workflow_key
from sdpbatch.vocabulary import ACTIVE_OWNED, NEW, deployment_display_status


def system_status(config: Config) -> dict:
    """``{"engine": {}, "processing_blocks": [...], "deployments": [...], "buffers": [...],
    "resources": {}, "components": {name: {pid, hostname, started, ...}}}`` (components: the
    controllers and deployers connected now, however they were started)."""
    for txn in config.txn():
        pbs = [_block(txn, pb_id) for pb_id in txn.list_pbs()]
        deploy_ids = sorted(set(txn.list_deployments()) | set(txn.list_deployment_states()))
        deployments = [_deployment(txn, deploy_id) for deploy_id in deploy_ids]
        buffers = [txn.get_buffer(name) for name in txn.list_buffers()]
        allocations = txn.list_allocations()
        components = txn.list_components()
    for dep in deployments:  # outside the transaction: its body stays free of side effects
        dep["processes"] = [_process(p) for p in dep["processes"]]
    buffers = [b for b in buffers if b is not None]
    for b in buffers:
        b["size_bytes"] = directory_size(Path(b["path"]))
    return {
        "time": time.time(),
        "engine": engine_status(config),
        "processing_blocks": pbs,
        "deployments": deployments,
        "buffers": buffers,
        "resources": allocations,
        "components": components,
    }


def _block(txn: Transaction, pb_id: str) -> dict:
    pb = txn.get_pb(pb_id) or {}
    state = txn.get_pb_state(pb_id) or {}
    status = state.get("status", NEW)
    return {
        "id": pb_id,
        "sbi_id": pb.get("sbi_id"),
        "workflow": workflow_key(pb.get("workflow", {})),
        "status": status,
        "resources_available": bool(state.get("resources_available")),
        "resources_held": bool(state.get("resources_available")) and status in ACTIVE_OWNED,
        "reason": state.get("reason"),
        "owner": txn.get_pb_owner(pb_id),
        "dependencies": [d["pb_id"] for d in pb.get("dependencies", [])],
    }


def _deployment(txn: Transaction, deploy_id: str) -> dict:
    dep = txn.get_deployment(deploy_id) or {}
    state = txn.get_deployment_state(deploy_id) or {}
    return {
        "id": deploy_id,
        "type": dep.get("type") or state.get("type"),
        "status": deployment_display_status(dep, state),
        "scheduler_address": state.get("scheduler_address"),
        "processes": state.get("processes", []),
        "jobs": state.get("jobs", []),
    }


def _process(recorded: dict) -> dict:
    """A deployment's recorded process, with whether it still runs."""
    return {
        "name": recorded["name"],
        "pid": recorded["pid"],
        "alive": is_alive(recorded["pid"], started=recorded["started"]),
        "log": recorded["log_path"],
    }


def format_status(snapshot: dict) -> str:
    """The engine, then three small tables (like ``kubectl get pod,pvc``)."""
    lines = [*_engine_lines(snapshot.get("engine")), ""]
    lines += ["PROCESSING BLOCKS", f"  {'ID':<30} {'WORKFLOW':<30} {'STATUS':<10} NOTE"]
    for pb in snapshot["processing_blocks"]:
        note = pb["reason"] or ("resources held" if pb["resources_held"] else "")
        lines.append(f"  {pb['id']:<30} {pb['workflow']:<30} {pb['status']:<10} {note}")
    lines += ["", "DEPLOYMENTS", f"  {'ID':<44} {'TYPE':<8} {'STATUS':<9} PROCESSES"]
    for dep in snapshot["deployments"]:
        procs = ", ".join(f"{p['pid']}{'' if p['alive'] else ' (ended)'}" for p in dep["processes"])
        if dep.get("jobs"):
            procs += f" SLURM jobs {', '.join(dep['jobs'])}"
        extra = f" {dep['scheduler_address']}" if dep.get("scheduler_address") else ""
        lines.append(f"  {dep['id']:<44} {dep['type'] or '-':<8} {dep['status']:<9} {procs}{extra}")
    lines += ["", "CONNECTED COMPONENTS", f"  {'NAME':<18} {'PID':>8}  HOST"]
    for key, info in sorted(snapshot.get("components", {}).items()):
        info = info or {}
        name = info.get("name", key)
        lines.append(f"  {name:<18} {info.get('pid', '-'):>8}  {info.get('hostname', '-')}")
    lines += ["", "BUFFERS", f"  {'NAME':<44} {'PB':<30} {'SIZE':>10}  PATH"]
    for b in snapshot["buffers"]:
        size = f"{b['size_bytes'] / 2**20:.1f} MiB"
        lines.append(f"  {b['name']:<44} {b.get('pb_id') or '-':<30} {size:>10}  {b['path']}")
    return "\n".join(lines)


def _engine_lines(engine: dict | None) -> list[str]:
    if not engine:
        return ["ENGINE", "  local (Dask processes on this machine)"]
    capacity = engine.get("capacity")
    if capacity is None:
        size = f"does not answer: {engine.get('error')}"
    else:
        size = (
            f"{capacity['where']}: {capacity['threads']} worker threads, "
            f"{capacity['memory_bytes'] / 2**30:.1f} GiB"
        )
        if capacity.get("workers") is not None:
            size += f", {capacity['workers']} workers"
    return ["ENGINE", f"  {engine['description']}", f"  {size}"]
