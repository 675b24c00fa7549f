"""Read-only views of the configuration database and the system for the pages and the JSON API.

Every function only reads (transactions without writes); what it returns is plain JSON data.
"""

from __future__ import annotations

import time
from pathlib import Path
from urllib.parse import urlsplit

from sdpbatch.control.buffers import BufferError, check_buffer_name
from sdpbatch.control.configdb import Config, ConfigError
from sdpbatch.control.configdb.ids import check_pb_id
from sdpbatch.control.status import system_status
from sdpbatch.control.system.lifecycle import services_status
from sdpbatch.control.system.processes import is_alive
from sdpbatch.vocabulary import (
    LOGS_DIR,
    LOOPBACK,
    NEW,
    TOP_LEVEL,
    DeploymentStatus,
    block_deployment_prefix,
    deployment_display_status,
    log_file_name,
    workflow_deployment_id,
)
from sdpbatch.web.files import DataRoot, OutsideDataRoot, disk_usage, list_directory
from sdpbatch.web.products import has_product


class NotFound(Exception):
    """The block, buffer or product asked for does not exist."""


def overview(config: Config, root: DataRoot) -> dict:
    """SBIs, processing blocks (states, reasons, dependencies), deployments, buffers, resources
    and subarrays: :func:`sdpbatch.control.status.system_status` plus SBIs and subarrays."""
    snapshot = system_status(config)
    for txn in config.txn():
        sbis = [txn.get_sbi(sbi_id) for sbi_id in txn.list_sbis()]
        subarrays = {name: txn.get_subarray(name) for name in txn.list_subarrays()}
    snapshot["sbis"] = [
        {
            "id": sbi["id"],
            "status": sbi.get("status"),
            "subarray_id": sbi.get("subarray_id"),
            "processing_blocks": [*sbi.get("pb_realtime", []), *sbi.get("pb_batch", [])],
            "scan_types": [s.get("id") for s in sbi.get("scan_types", [])],
            "current_scan_type": sbi.get("current_scan_type"),
            "scan_id": sbi.get("scan_id"),
        }
        for sbi in sbis
        if sbi is not None
    ]
    snapshot["subarrays"] = [
        {"id": name, **record} for name, record in subarrays.items() if record is not None
    ]
    for buffer in snapshot["buffers"]:
        buffer["product"] = has_product(root, buffer["name"])
    return snapshot


def touch_overview_keys(txn) -> None:
    """Read every prefix the overview depends on (a watcher then wakes on any change)."""
    for prefix in TOP_LEVEL:
        txn.list_keys(prefix, recurse=True)


def database_health(config: Config) -> dict:
    """Whether the configuration database answers, and how fast (ms)."""
    start = time.perf_counter()
    try:
        for txn in config.txn(max_retries=3):
            txn.list_sbis()
    except Exception as err:  # noqa: BLE001 - a probe: any failure means not answering
        return {"ok": False, "error": str(err) or type(err).__name__}
    return {"ok": True, "backend": config.backend_name, "ms": 1e3 * (time.perf_counter() - start)}


def system_view(config: Config, root: DataRoot) -> dict:
    """The components of ``sdpbatch up`` (processes, alive, restarts where recorded), the
    database's health, the subarrays and the space left under the data root."""
    services = services_status(root.path)
    health = database_health(config)
    subarrays: list[dict] = []
    if health["ok"]:
        for txn in config.txn():
            subarrays = [
                {"id": name, **(txn.get_subarray(name) or {})} for name in txn.list_subarrays()
            ]
    return {
        "time": time.time(),
        "data_dir": str(root.path),
        "services": services,
        "database": health,
        "subarrays": subarrays,
        "disk": disk_usage(root),
    }


# ---------------------------------------------------------------------------------------------
# one processing block
# ---------------------------------------------------------------------------------------------


def block_view(config: Config, root: DataRoot, pb_id: str) -> dict:
    """One block: definition, state, its deployments (with a running Dask engine's dashboard),
    its buffers with their files and sizes, and its logs."""
    try:
        check_pb_id(pb_id)
    except ConfigError as err:
        raise NotFound(str(err)) from err
    for txn in config.txn():
        pb = txn.get_pb(pb_id)
        state = txn.get_pb_state(pb_id) or {}
        owner = txn.get_pb_owner(pb_id)
        buffers = [txn.get_buffer(name) for name in txn.list_buffers()]
        buffers = [b for b in buffers if b is not None and b.get("pb_id") == pb_id]
        names = set(txn.list_deployments()) | set(txn.list_deployment_states())
        ours = sorted(
            d
            for d in names
            if d.startswith(block_deployment_prefix(pb_id)) or d in {b["name"] for b in buffers}
        )
        deployments = {d: (txn.get_deployment(d), txn.get_deployment_state(d)) for d in ours}
        dependents = [other for other in txn.list_pbs() if _depends_on(txn.get_pb(other), pb_id)]
    if pb is None:
        raise NotFound(f"no processing block {pb_id}")
    return {
        "id": pb_id,
        "sbi_id": pb.get("sbi_id"),
        "workflow": pb.get("workflow"),
        "parameters": pb.get("parameters", {}),
        "dependencies": pb.get("dependencies", []),
        "dependents": dependents,
        "status": state.get("status", NEW),
        "reason": state.get("reason"),
        "resources_available": bool(state.get("resources_available")),
        "owner": owner,
        "deployments": [_deployment(root, d, *deployments[d]) for d in ours],
        "buffers": [_buffer(root, b) for b in buffers],
        "logs": _block_logs(root, pb_id),
        "workflow_log": _workflow_log(root, pb_id, state),
    }


def _depends_on(pb: dict | None, pb_id: str) -> bool:
    return pb is not None and any(d.get("pb_id") == pb_id for d in pb.get("dependencies", []))


def _deployment(root: DataRoot, deploy_id: str, entry: dict | None, state: dict | None) -> dict:
    state = state or {}
    processes = [
        {"name": p["name"], "pid": p["pid"], "alive": is_alive(p["pid"], started=p["started"])}
        for p in state.get("processes", [])
    ]
    return {
        "id": deploy_id,
        "type": (entry or {}).get("type") or state.get("type"),
        "status": deployment_display_status(entry, state),
        "error": state.get("error"),
        "processes": processes,
        "scheduler_address": state.get("scheduler_address"),
        "dashboard_url": _dashboard_url(state),
        "log": _log_relative(root, state.get("log")),
    }


def _dashboard_url(state: dict) -> str | None:
    """The Dask dashboard of a running engine: the scheduler's host, the dashboard's port."""
    port, address = state.get("dashboard"), state.get("scheduler_address")
    if state.get("status") != DeploymentStatus.RUNNING or not isinstance(port, int) or not address:
        return None
    host = urlsplit(address).hostname or LOOPBACK
    return f"http://{host}:{port}/status"


def _buffer(root: DataRoot, record: dict) -> dict:
    name = record["name"]
    try:
        files = list_directory(root, name)
    except OutsideDataRoot:
        files = []  # a record pointing elsewhere is shown, never read
    return {
        "name": name,
        "state": record.get("state"),
        "created": record.get("created"),
        "files": files,
        "size_bytes": sum(f["size_bytes"] for f in files),
        "product": has_product(root, name),
    }


def _log_relative(root: DataRoot, path: str | None) -> str | None:
    """A log path of the database as ``logs/<name>``, if it lies in the data root's logs."""
    if not path:
        return None
    relative = f"{LOGS_DIR}/{Path(path).name}"
    try:
        return relative if root.resolve(relative) == Path(path).resolve() else None
    except OutsideDataRoot:
        return None


def _block_logs(root: DataRoot, pb_id: str) -> list[dict]:
    """The logs of the block's deployments (``logs/proc-<pb_id>-*.log``)."""
    logs = root.path / LOGS_DIR
    if not logs.is_dir():
        return []
    return [
        {"name": p.name, "path": f"{LOGS_DIR}/{p.name}", "size_bytes": p.stat().st_size}
        for p in sorted(logs.glob(log_file_name(f"{block_deployment_prefix(pb_id)}*")))
        if p.is_file()
    ]


def workflow_log(config: Config, root: DataRoot, pb_id: str) -> str | None:
    """The block's workflow log as ``logs/<name>`` (None until the workflow has started)."""
    try:
        check_pb_id(pb_id)
    except ConfigError as err:
        raise NotFound(str(err)) from err
    for txn in config.txn():
        pb, state = txn.get_pb(pb_id), txn.get_pb_state(pb_id)
    if pb is None:
        raise NotFound(f"no processing block {pb_id}")
    return _workflow_log(root, pb_id, state or {})


def _workflow_log(root: DataRoot, pb_id: str, state: dict) -> str | None:
    """The workflow's log as recorded in the block's state, else its usual name."""
    recorded = _log_relative(root, state.get("log"))
    if recorded:
        return recorded
    default = f"{LOGS_DIR}/{log_file_name(workflow_deployment_id(pb_id))}"
    return default if root.resolve(default).is_file() else None


def buffer_view(config: Config, root: DataRoot, name: str) -> dict:
    """One buffer's record and its files (:class:`NotFound` if the database does not know it)."""
    try:
        check_buffer_name(name)
    except BufferError as err:
        raise NotFound(str(err)) from err
    for txn in config.txn():
        record = txn.get_buffer(name)
    if record is None:
        raise NotFound(f"no buffer {name}")
    return {**_buffer(root, record), "pb_id": record.get("pb_id")}
