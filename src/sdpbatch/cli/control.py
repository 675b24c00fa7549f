"""Control-plane commands: etcd, controller, deployer (foreground components); process,
status, logs, buffers, config (for people and scripts)."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from sdpbatch.cli.common import (
    UsageError,
    add_data_dir_option,
    control_errors,
    terminate_on_sigterm,
)
from sdpbatch.control.configdb.config import PORT_ENV
from sdpbatch.control.system.data_root import Layout, resolve_data_dir
from sdpbatch.vocabulary import ETCD_PORT, LOOPBACK


def add_control_commands(sub: argparse._SubParsersAction) -> None:
    """etcd, controller, deployer (foreground components); process, status, logs, buffers,
    config (for people and scripts).  Database address: $SDP_CONFIG_HOST / $SDP_CONFIG_PORT."""
    _add_component_commands(sub)
    _add_block_commands(sub)
    _add_database_commands(sub)


DATA_DIR = "data root: buffers, logs, Dask files"


def _add_component_commands(sub: argparse._SubParsersAction) -> None:
    """etcd, controller and deployer, each run in the foreground."""
    p = sub.add_parser("etcd", help="run the project's etcd server on loopback (foreground)")
    p.add_argument("--data-dir", type=Path, required=True, help="etcd data directory")
    p.add_argument(
        "--port", type=int, default=None, help=f"client port (default ${PORT_ENV} or {ETCD_PORT})"
    )
    p.add_argument(
        "--peer-port", type=int, default=None, help="peer port (default client port + 1)"
    )
    p.set_defaults(handler=_cmd_etcd)

    p = sub.add_parser("controller", help="run the processing controller (foreground)")
    p.add_argument(
        "--workers-per-core",
        type=float,
        default=None,
        help="worker thread slots per core (default $SDPBATCH_WORKERS_PER_CORE, else 2)",
    )
    p.set_defaults(handler=_cmd_controller)

    p = sub.add_parser("deployer", help="run the deployer: workflows, Dask, buffers (foreground)")
    add_data_dir_option(p, DATA_DIR)
    p.add_argument(
        "--keep-running",
        action="store_true",
        help="on exit, leave the processes running (a restarted deployer takes them over)",
    )
    p.set_defaults(handler=_cmd_deployer)


def _add_block_commands(sub: argparse._SubParsersAction) -> None:
    """process (create a block), status, resume and logs."""
    p = sub.add_parser(
        "process",
        help="create a processing block (no subarray needed)",
        description="Create a processing block, checked as AssignResources checks one: file "
        "parameters (sky_model, layout, calibration_model) must lie under the data root "
        "(relative paths are taken from it) or a directory of $SDPBATCH_ALLOWED_DIRS.",
    )
    p.add_argument("workflow", help="TYPE:ID:VERSION, e.g. batch:batch_imaging:0.1.0")
    p.add_argument("params", type=Path, nargs="?", help="parameter JSON file (default: {})")
    p.add_argument("--dependency", action="append", default=[], help="PB id it depends on")
    add_data_dir_option(p, DATA_DIR)
    p.set_defaults(handler=_cmd_process)

    p = sub.add_parser("status", help="services, processing blocks, deployments and buffers")
    p.add_argument("--watch", action="store_true", help="show again on every change")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    add_data_dir_option(p, DATA_DIR)
    p.set_defaults(handler=_cmd_status)

    p = sub.add_parser(
        "resume",
        help="run a FAILED batch block again from its checkpoint",
        description="A FAILED batch imaging block whose ICAL left a checkpoint beside its "
        "image buffer goes back to the controller and continues from its last complete major "
        "cycle, on whatever engine is up; its products are those of an uninterrupted run.",
    )
    p.add_argument("pb_id")
    add_data_dir_option(p, DATA_DIR)
    p.set_defaults(handler=_cmd_resume)

    p = sub.add_parser("logs", help="the workflow log of a processing block")
    p.add_argument("pb_id")
    p.add_argument("--follow", "-f", action="store_true", help="follow until the block ends")
    add_data_dir_option(p, DATA_DIR)
    p.set_defaults(handler=_cmd_logs)


def _add_database_commands(sub: argparse._SubParsersAction) -> None:
    """buffers (list, delete) and config (get, ls, watch)."""
    p = sub.add_parser("buffers", help="list or delete buffer reservations")
    p.add_argument("action", nargs="?", choices=("list", "delete"), default="list")
    p.add_argument("name", nargs="?", help="buffer to delete")
    p.add_argument("--force", action="store_true", help="delete even if its block is active")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(handler=_cmd_buffers)

    p = sub.add_parser("config", help="read the configuration database")
    actions = p.add_subparsers(dest="action", required=True, metavar="ACTION")
    q = actions.add_parser("get", help="the value of one key")
    q.add_argument("key")
    q = actions.add_parser("ls", help="keys and key prefixes under a prefix (default /)")
    q.add_argument("key", nargs="?", default="/", help="prefix (default /)")
    q.add_argument("-R", "--recursive", action="store_true", help="every key below, with its value")
    q = actions.add_parser("watch", help="print every change under a prefix (default /)")
    q.add_argument("key", nargs="?", default="/", help="prefix (default /)")
    p.set_defaults(handler=_cmd_config)


def _cmd_etcd(args: argparse.Namespace) -> int:
    import os
    import time

    from sdpbatch.control.system.etcd_server import start_etcd, wait_healthy
    from sdpbatch.control.system.processes import is_alive, stop_process

    port = args.port or int(os.environ.get(PORT_ENV) or ETCD_PORT)
    data_dir = args.data_dir.resolve()
    log_path = data_dir.parent / f"{data_dir.name}.log"
    record = start_etcd(
        data_dir, client_port=port, peer_port=args.peer_port or port + 1, log_path=log_path
    )
    terminate_on_sigterm()
    try:
        try:
            wait_healthy(LOOPBACK, port, timeout=30)
        except TimeoutError as err:
            raise UsageError(f"{err}; see {log_path}") from None
        print(f"etcd running on {LOOPBACK}:{port} (pid {record.pid}), log {log_path}", flush=True)
        while is_alive(record.pid):
            time.sleep(0.5)
        raise UsageError(f"etcd stopped; see {log_path}")
    finally:
        stop_process(record.pid, timeout=10)


def _cmd_controller(args: argparse.Namespace) -> int:
    from sdpbatch.control.configdb import FOREVER, Config
    from sdpbatch.control.controller import Controller
    from sdpbatch.control.resources import machine_capacity
    from sdpbatch.workflows.registry import catalog

    terminate_on_sigterm()
    with control_errors(), Config(patience=FOREVER) as config:
        capacity = machine_capacity(workers_per_core=args.workers_per_core)
        Controller(config, catalog(), capacity=capacity).run()
    return 0


def _cmd_deployer(args: argparse.Namespace) -> int:
    from sdpbatch.control.configdb import FOREVER, Config
    from sdpbatch.control.deployer import Deployer

    terminate_on_sigterm()
    with control_errors(), Config(patience=FOREVER) as config:
        deployer = Deployer(config, resolve_data_dir(args.data_dir))
        try:
            deployer.run()
        finally:
            if not args.keep_running:
                deployer.stop_all()
    return 0


def _read_params(path: Path | None) -> dict:
    import json

    if path is None:
        return {}
    try:
        params = json.loads(path.read_text())
    except OSError as err:
        raise UsageError(f"cannot read {path}: {err.strerror}") from None
    except json.JSONDecodeError as err:
        raise UsageError(f"{path} is not valid JSON: {err}") from None
    if not isinstance(params, dict):
        raise UsageError(f"{path} must hold a JSON object of parameters")
    return params


def _cmd_process(args: argparse.Namespace) -> int:
    from sdpbatch.control.admission import BlockRefused, admit_block
    from sdpbatch.control.configdb import Config
    from sdpbatch.control.workflow_catalogue import known_workflow_keys

    parts = args.workflow.split(":")
    if len(parts) != 3 or args.workflow not in known_workflow_keys():
        raise UsageError(
            f"unknown workflow {args.workflow!r}; registered: "
            f"{', '.join(sorted(known_workflow_keys()))}"
        )
    workflow = dict(zip(("type", "id", "version"), parts, strict=True))
    params = _read_params(args.params)
    data_root = resolve_data_dir(args.data_dir)
    with control_errors(), Config() as config:
        for txn in config.txn():
            pb_id = txn.new_pb_id("sdpbatch")
            try:  # refuse bad blocks up front, as AssignResources does
                admit_block(pb_id, workflow, params, data_root=data_root)
            except BlockRefused as err:
                raise UsageError(str(err)) from None
            txn.create_pb(
                {
                    "id": pb_id,
                    "sbi_id": None,
                    "workflow": workflow,
                    "parameters": params,
                    "dependencies": [{"pb_id": d, "type": ["none"]} for d in args.dependency],
                }
            )
    print(pb_id)
    return 0


def _cmd_status(args: argparse.Namespace) -> int:
    import json

    from sdpbatch.control.configdb import FOREVER, Config, ConfigError
    from sdpbatch.control.status import format_status, system_status
    from sdpbatch.control.system.lifecycle import format_services, services_status
    from sdpbatch.control.system.state import SystemState
    from sdpbatch.vocabulary import TOP_LEVEL

    data_dir = resolve_data_dir(args.data_dir)
    services = services_status(data_dir)
    state = SystemState.load(data_dir)
    system_down = services["state"] in ("down", "never started")
    if state is not None and not system_down:  # `sdpbatch up` runs: its database, unless told
        for name, value in state.env.items():
            if name.startswith("SDP_CONFIG_"):
                os.environ.setdefault(name, value)

    def snapshot_of(config: Config) -> dict:
        return {"services": services_status(data_dir), **system_status(config)}

    def text_of(snapshot: dict) -> str:
        return format_services(snapshot["services"]) + "\n\n" + format_status(snapshot)

    if system_down and PORT_ENV not in os.environ and not args.watch:
        only = {"services": services}
        print(json.dumps(only, indent=2) if args.json else format_services(services))
        return 0
    if not args.watch:
        with Config() as config:
            try:
                snapshot = snapshot_of(config)
            except ConfigError as err:  # e.g. etcd is away: still show the services
                only = {"services": services, "error": str(err)}
                print(json.dumps(only, indent=2) if args.json else format_services(services))
                raise UsageError(str(err)) from None
        print(json.dumps(snapshot, indent=2) if args.json else text_of(snapshot))
        return 0
    with control_errors(), Config(patience=FOREVER) as config:
        for watcher in config.watcher(timeout=5.0):
            for txn in watcher.txn():  # what to watch: everything the status shows
                for prefix in TOP_LEVEL:
                    txn.list_keys(prefix, recurse=True)
            snapshot = snapshot_of(config)
            if args.json:
                print(json.dumps(snapshot), flush=True)
            else:
                print("\033[2J\033[H" + text_of(snapshot), flush=True)
    return 0


def _cmd_resume(args: argparse.Namespace) -> int:
    from sdpbatch.control.configdb import Config
    from sdpbatch.control.resume import ResumeRefused, request_resume

    with control_errors(), Config() as config:
        try:
            found = request_resume(config, args.pb_id, data_root=resolve_data_dir(args.data_dir))
        except ResumeRefused as err:
            raise UsageError(str(err)) from None
    print(
        f"{found.pb_id} goes on after cycle {found.cycles_done} from {found.checkpoint} "
        f"(follow it: sdpbatch logs --follow {found.pb_id})"
    )
    return 0


def _cmd_logs(args: argparse.Namespace) -> int:
    import time

    from sdpbatch.control.configdb import Config
    from sdpbatch.vocabulary import ENDED, log_file_name, workflow_deployment_id

    with control_errors(), Config() as config:
        for txn in config.txn():
            if txn.get_pb(args.pb_id) is None:
                raise UsageError(f"no processing block {args.pb_id}")
            state = txn.get_pb_state(args.pb_id) or {}
        logs = Layout(resolve_data_dir(args.data_dir)).logs
        default = logs / log_file_name(workflow_deployment_id(args.pb_id))
        path = Path(state.get("log") or default)
        position = 0
        while True:
            if path.is_file():
                with open(path, "rb") as f:
                    f.seek(position)
                    chunk = f.read()
                    position += len(chunk)
                sys.stdout.write(chunk.decode(errors="replace"))
                sys.stdout.flush()
            elif not args.follow:
                raise UsageError(f"no log yet for {args.pb_id} ({path})")
            if not args.follow:
                return 0
            for txn in config.txn():
                state = txn.get_pb_state(args.pb_id) or {}
            if state.get("status") in ENDED:
                if path.is_file() and path.stat().st_size == position:
                    return 0
            time.sleep(0.5)


def _cmd_buffers(args: argparse.Namespace) -> int:
    import json

    from sdpbatch.control import buffers
    from sdpbatch.control.configdb import Config

    with control_errors(), Config() as config:
        if args.action == "delete":
            if not args.name:
                raise UsageError("buffers delete needs a NAME")
            record = buffers.delete_buffer(config, args.name, force=args.force)
            print(f"deleted buffer {args.name} ({record['path']})")
            return 0
        records = buffers.list_buffers(config)
    if args.json:
        print(json.dumps(records, indent=2))
        return 0
    print(f"{'NAME':<44} {'PB':<28} {'STATE':<8} {'SIZE':>10}  PATH")
    for r in records:
        size = f"{r['size_bytes'] / 2**20:.1f} MiB"
        print(
            f"{r['name']:<44} {r.get('pb_id') or '-':<28} {r['state']:<8} {size:>10}  {r['path']}"
        )
    return 0


def _cmd_config(args: argparse.Namespace) -> int:
    import json

    from sdpbatch.control.configdb import Config

    with control_errors(), Config() as config:
        if args.action == "get":
            for txn in config.txn():
                value = txn.get(args.key)
            if value is None:
                raise UsageError(f"no key {args.key}")
            print(json.dumps(value, indent=2, sort_keys=True))
        elif args.action == "ls":
            print("\n".join(_config_listing(config, args.key, recursive=args.recursive)))
        else:
            previous: dict = {}
            for watcher in config.watcher():
                for txn in watcher.txn():
                    current = {k: txn.get(k) for k in txn.list_keys(args.key, recurse=True)}
                for key in sorted(set(previous) | set(current)):
                    if previous.get(key) != current.get(key):
                        value = "(deleted)" if key not in current else json.dumps(current[key])
                        print(f"{key} = {value}", flush=True)
                previous = current
    return 0


def _config_listing(config, prefix: str, *, recursive: bool) -> list[str]:
    """``ls``: the keys directly under ``prefix`` and, marked with a trailing '/', the
    prefixes below it with how many keys each holds; ``-R``: every key with its value."""
    import json

    for txn in config.txn():
        keys = txn.list_keys(prefix, recurse=True)
        values = {k: txn.get(k) for k in keys} if recursive else {}
    if recursive:
        return [f"{k} = {json.dumps(values[k], sort_keys=True)}" for k in keys]
    direct, below = [], {}
    for key in keys:
        head, *rest = key[len(prefix) :].split("/", 1)
        if not rest:
            direct.append(key)
        else:
            below[f"{prefix}{head}/"] = below.get(f"{prefix}{head}/", 0) + 1
    lines = direct + [f"{child}  ({n} key{'s' if n != 1 else ''})" for child, n in below.items()]
    if not lines:
        return [f"(no keys under {prefix})"]
    return sorted(lines)
