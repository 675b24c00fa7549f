"""The one command line: ``sdpbatch <command> ...``.

Each command is a thin handler: parse arguments, call the layer that does the work, print
what was done.  Errors the user can fix (bad parameters, missing files) print one clear line
and exit with status 2; nothing is written in that case.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from sdpbatch.io.ms_read import MeasurementSetError
from sdpbatch.parameters import ParameterError

Handler = Callable[[argparse.Namespace], int]


class UsageError(Exception):
    """An error in what the user asked for; printed without a traceback."""


def _setup_logging(verbose: bool) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(levelname)s:%(name)s:%(message)s",
    )
    for noisy in ("distributed", "tornado", "asyncio", "bokeh", "matplotlib", "h5py", "PIL"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


# ----------------------------------------------------------------------------------------------
# science: simulate, ical, run  (issues: simulation, ICAL, Dask)
# ----------------------------------------------------------------------------------------------


def _add_science_commands(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("simulate", help="simulate SKA1-Low MeasurementSets and their truth")
    p.add_argument("params", type=Path, help="parameter JSON file (the seed's format)")
    p.add_argument("--out", type=Path, required=True, help="directory for the products")
    _add_cluster_options(p)
    p.set_defaults(handler=_cmd_simulate)

    p = sub.add_parser("ical", help="self-calibrate and image MeasurementSets")
    p.add_argument("ms", type=Path, nargs="+", help="MeasurementSets (one or more)")
    p.add_argument("--out", type=Path, required=True, help="directory for the images")
    p.add_argument("--params", type=Path, help="parameter JSON file (ICAL settings)")
    p.add_argument(
        "--truth",
        type=Path,
        help="folder with the simulation's truth files to compare with (default: the "
        "MeasurementSets' folder, when it holds them)",
    )
    p.add_argument(
        "--sky-model",
        type=Path,
        help="component list (WSClean format, apparent fluxes) to calibrate against before "
        "the first image; sets calibration_model (default: the simulation's "
        "catalogue_skymodel.txt beside the MeasurementSets, else self-calibration alone)",
    )
    _add_cluster_options(p)
    p.set_defaults(handler=_cmd_ical)

    p = sub.add_parser("params", help="list the workflow parameters, defaults and allowed values")
    p.add_argument("--json", action="store_true", help="the defaults as a parameter JSON file")
    p.set_defaults(handler=_cmd_params)

    p = sub.add_parser("run", help="run the whole batch imaging workflow: simulate, then ICAL")
    p.add_argument("params", type=Path, help="parameter JSON file (the seed's format)")
    p.add_argument("--data-dir", type=Path, required=True, help="data root holding the buffers")
    _add_cluster_options(p)
    p.set_defaults(handler=_cmd_run)


def _add_cluster_options(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--scheduler",
        default=None,
        help="address of an existing Dask scheduler (default: $SDPBATCH_SCHEDULER, else a "
        "LocalCluster of n_workers processes)",
    )
    p.add_argument("--no-progress", action="store_true", help="do not show progress bars")


def _cmd_params(args: argparse.Namespace) -> int:
    import json

    from sdpbatch.parameters import Parameters, describe_parameters

    print(json.dumps(Parameters().to_dict(), indent=2) if args.json else describe_parameters())
    return 0


def _cmd_simulate(args: argparse.Namespace) -> int:
    from sdpbatch.execution.cluster import dask_client
    from sdpbatch.execution.simulate import prepare_simulation, simulate
    from sdpbatch.parameters import load_parameters

    params = load_parameters(args.params)
    prepare_simulation(params)  # validate layout, rmax, sky model before starting workers
    progress = not args.no_progress
    if params.n_workers == 1 and not args.scheduler:
        products = simulate(params, args.out, progress=progress)  # in-process: no cluster start
    else:
        with dask_client(
            params.n_workers,
            threads_per_worker=params.threads_per_worker,
            scheduler=args.scheduler,
        ) as client:
            products = simulate(params, args.out, client=client, progress=progress)
    for path in [*products.ms_paths, *products.truth_paths]:
        print(path)
    print(
        f"simulated {products.nfreqwin} windows x {products.ntimes} times x "
        f"{products.nbaselines} baselines ({products.nstations} stations, "
        f"{products.nsources} sources): {products.nvis} visibilities in {products.seconds:.1f} s"
    )
    return 0


@contextlib.contextmanager
def _science_client(params, scheduler: str | None):
    """A Dask client for a science run, or None (in-process) for one worker and no scheduler."""
    from sdpbatch.execution.cluster import dask_client

    if params.n_workers == 1 and not scheduler:
        yield None
        return
    with dask_client(
        params.n_workers, threads_per_worker=params.threads_per_worker, scheduler=scheduler
    ) as client:
        yield client


def _print_ical_products(products) -> None:
    for path in products.paths.values():
        print(path)
    qa = products.qa
    print(
        f"restored peak {qa['restored']['peak']:.4g} Jy/beam, residual rms "
        f"{qa['restored']['rms']:.3g} Jy/beam, dynamic range "
        f"{qa['restored']['dynamic_range']:.0f}, {products.seconds:.1f} s"
    )
    truth = qa.get("truth", {})
    if "gain_phase_rms_error_rad" in truth:
        print(f"gain phase error vs truth {truth['gain_phase_rms_error_rad']:.4f} rad rms")
    if "max_flux_error" in truth:
        print(
            f"{len(truth['brightest_sources'])} brightest true sources: flux within "
            f"{100 * truth['max_flux_error']:.2f} %, position within "
            f"{truth['max_offset_pixels']:.3f} px ("
            f"{truth['max_offset_after_common_shift_pixels']:.3f} px after the common shift)"
        )
    if "gradient_shift_pixels" in truth and "common_shift_pixels" in truth:
        measured, predicted = truth["common_shift_pixels"], truth["gradient_shift_pixels"]
        print(
            f"common image shift ({measured[0]:+.3f}, {measured[1]:+.3f}) px; the phase gradient "
            f"self-calibration cannot determine predicts ({predicted[0]:+.3f}, "
            f"{predicted[1]:+.3f}) px"
        )


def _cmd_ical(args: argparse.Namespace) -> int:
    from sdpbatch.execution.pipeline import (
        calibration_model,
        check_measurement_sets,
        ical_pipeline,
        truth_present,
    )
    from sdpbatch.parameters import Parameters, load_parameters

    params = load_parameters(args.params) if args.params else Parameters()
    if args.sky_model is not None:
        params = params.replace(calibration_model=str(args.sky_model.resolve()))
    missing = [str(p) for p in args.ms if not p.exists()]
    if missing:
        raise UsageError(f"no such MeasurementSet: {', '.join(missing)}")
    check_measurement_sets(args.ms)  # before starting any worker
    if args.truth and not truth_present(args.truth):
        raise UsageError(f"--truth {args.truth}: no truth_skymodel.txt and truth_gains.h5 there")
    folders = {p.resolve().parent for p in args.ms}
    truth_dir = args.truth or (folders.pop() if len(folders) == 1 else None)  # sdpbatch's own
    calibration_model(params, truth_dir)  # before starting any worker
    with _science_client(params, args.scheduler) as client:
        products = ical_pipeline(
            args.ms,
            args.out,
            params,
            client=client,
            truth_dir=truth_dir,
            progress=not args.no_progress,
        )
    _print_ical_products(products)
    return 0


def _cmd_run(args: argparse.Namespace) -> int:
    from sdpbatch.execution.pipeline import batch_imaging_pipeline
    from sdpbatch.execution.simulate import prepare_simulation
    from sdpbatch.parameters import load_parameters

    params = load_parameters(args.params)
    prepare_simulation(params)  # validate layout, rmax, sky model before starting workers
    vis_dir = args.data_dir / params.buffer_vis
    img_dir = args.data_dir / params.buffer_img
    with _science_client(params, args.scheduler) as client:
        products = batch_imaging_pipeline(
            params, vis_dir, img_dir, client=client, progress=not args.no_progress
        )
    for path in products.simulation.ms_paths:
        print(path)
    _print_ical_products(products.ical)
    return 0


# ----------------------------------------------------------------------------------------------
# control plane: etcd, controller, deployer, process, status, logs, buffers, config
# ----------------------------------------------------------------------------------------------


def _add_control_commands(sub: argparse._SubParsersAction) -> None:
    """etcd, controller, deployer (foreground components); process, status, logs, buffers,
    config (for people and scripts).  Database address: $SDP_CONFIG_HOST / $SDP_CONFIG_PORT."""
    data_help = (
        "data root: buffers, logs, Dask files (default: $SDPBATCH_DATA_DIR, else ./sdp-data)"
    )
    p = sub.add_parser("etcd", help="run the project's etcd server on loopback (foreground)")
    p.add_argument("--data-dir", type=Path, required=True, help="etcd data directory")
    p.add_argument(
        "--port", type=int, default=None, help="client port (default $SDP_CONFIG_PORT or 2379)"
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
    p.add_argument("--data-dir", type=Path, default=None, help=data_help)
    p.add_argument(
        "--keep-running",
        action="store_true",
        help="on exit, leave the processes running (a restarted deployer takes them over)",
    )
    p.set_defaults(handler=_cmd_deployer)

    p = sub.add_parser("process", help="create a processing block (no subarray needed)")
    p.add_argument("workflow", help="TYPE:ID:VERSION, e.g. batch:batch_imaging:0.1.0")
    p.add_argument("params", type=Path, nargs="?", help="parameter JSON file (default: {})")
    p.add_argument("--dependency", action="append", default=[], help="PB id it depends on")
    p.set_defaults(handler=_cmd_process)

    p = sub.add_parser("status", help="services, processing blocks, deployments and buffers")
    p.add_argument("--watch", action="store_true", help="show again on every change")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.add_argument("--data-dir", type=Path, default=None, help=data_help)
    p.set_defaults(handler=_cmd_status)

    p = sub.add_parser("logs", help="the workflow log of a processing block")
    p.add_argument("pb_id")
    p.add_argument("--follow", "-f", action="store_true", help="follow until the block ends")
    p.add_argument("--data-dir", type=Path, default=None, help=data_help)
    p.set_defaults(handler=_cmd_logs)

    p = sub.add_parser("buffers", help="list or delete buffer reservations")
    p.add_argument("action", nargs="?", choices=("list", "delete"), default="list")
    p.add_argument("name", nargs="?", help="buffer to delete")
    p.add_argument("--force", action="store_true", help="delete even if its block is active")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(handler=_cmd_buffers)

    p = sub.add_parser("config", help="read the configuration database")
    p.add_argument("action", choices=("get", "ls", "watch"))
    p.add_argument("key", nargs="?", default="/", help="key (get) or prefix (ls, watch)")
    p.add_argument("-R", "--recursive", action="store_true", help="ls: all keys below")
    p.set_defaults(handler=_cmd_config)


@contextlib.contextmanager
def _control_errors():
    """Configuration database errors the user can act on become one-line usage errors."""
    from sdpbatch.control.configdb import ConfigError

    try:
        yield
    except ConfigError as err:
        raise UsageError(str(err)) from None


def _data_dir(value: Path | None) -> Path:
    from sdpbatch.control.system import default_data_dir

    return Path(value or default_data_dir()).resolve()


def _terminate_on_sigterm() -> None:
    import signal

    def handler(signum, frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, handler)


def _cmd_etcd(args: argparse.Namespace) -> int:
    import os
    import time

    from sdpbatch.control.etcd_server import start_etcd, wait_healthy
    from sdpbatch.control.processes import is_alive, stop_process

    port = args.port or int(os.environ.get("SDP_CONFIG_PORT") or 2379)
    data_dir = args.data_dir.resolve()
    log_path = data_dir.parent / f"{data_dir.name}.log"
    record = start_etcd(
        data_dir, client_port=port, peer_port=args.peer_port or port + 1, log_path=log_path
    )
    _terminate_on_sigterm()
    try:
        try:
            wait_healthy("127.0.0.1", port, timeout=30)
        except TimeoutError as err:
            raise UsageError(f"{err}; see {log_path}") from None
        print(f"etcd running on 127.0.0.1:{port} (pid {record.pid}), log {log_path}", flush=True)
        while is_alive(record.pid):
            time.sleep(0.5)
        raise UsageError(f"etcd stopped; see {log_path}")
    finally:
        stop_process(record.pid, timeout=10)


def _cmd_controller(args: argparse.Namespace) -> int:
    from sdpbatch.control.configdb import Config
    from sdpbatch.control.controller import Controller
    from sdpbatch.control.resources import machine_capacity
    from sdpbatch.workflows.registry import catalog

    _terminate_on_sigterm()
    with _control_errors(), Config() as config:
        capacity = machine_capacity(workers_per_core=args.workers_per_core)
        Controller(config, catalog(), capacity=capacity).run()
    return 0


def _cmd_deployer(args: argparse.Namespace) -> int:
    from sdpbatch.control.configdb import Config
    from sdpbatch.control.deployer import Deployer

    _terminate_on_sigterm()
    with _control_errors(), Config() as config:
        deployer = Deployer(config, _data_dir(args.data_dir))
        try:
            deployer.run()
        finally:
            if not args.keep_running:
                deployer.stop_all()
    return 0


def _cmd_process(args: argparse.Namespace) -> int:
    import json

    from sdpbatch.control.buffers import check_buffer_name
    from sdpbatch.control.configdb import Config
    from sdpbatch.workflows.batch_imaging import block_parameters
    from sdpbatch.workflows.registry import WORKFLOWS

    parts = args.workflow.split(":")
    if len(parts) != 3 or args.workflow not in WORKFLOWS:
        raise UsageError(
            f"unknown workflow {args.workflow!r}; registered: {', '.join(sorted(WORKFLOWS))}"
        )
    params: dict = {}
    if args.params is not None:
        try:
            params = json.loads(args.params.read_text())
        except OSError as err:
            raise UsageError(f"cannot read {args.params}: {err.strerror}") from None
        except json.JSONDecodeError as err:
            raise UsageError(f"{args.params} is not valid JSON: {err}") from None
        if not isinstance(params, dict):
            raise UsageError(f"{args.params} must hold a JSON object of parameters")
    with _control_errors(), Config() as config:
        for txn in config.txn():
            pb_id = txn.new_pb_id("sdpbatch")
            if args.workflow == "batch:batch_imaging:0.1.0":
                checked = block_parameters(pb_id, params)  # refuse bad parameters up front
                check_buffer_name(checked.buffer_vis)
                check_buffer_name(checked.buffer_img)
            wtype, wid, version = parts
            txn.create_pb(
                {
                    "id": pb_id,
                    "sbi_id": None,
                    "workflow": {"type": wtype, "id": wid, "version": version},
                    "parameters": params,
                    "dependencies": [{"pb_id": d, "type": ["none"]} for d in args.dependency],
                }
            )
    print(pb_id)
    return 0


def _cmd_status(args: argparse.Namespace) -> int:
    import json

    from sdpbatch.control.configdb import Config
    from sdpbatch.control.status import format_status, system_status
    from sdpbatch.control.system import SystemState, format_services, services_status

    data_dir = _data_dir(args.data_dir)
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

    if system_down and "SDP_CONFIG_PORT" not in os.environ and not args.watch:
        only = {"services": services}
        print(json.dumps(only, indent=2) if args.json else format_services(services))
        return 0
    with _control_errors(), Config() as config:
        if not args.watch:
            snapshot = snapshot_of(config)
            print(json.dumps(snapshot, indent=2) if args.json else text_of(snapshot))
            return 0
        for watcher in config.watcher(timeout=5.0):
            for txn in watcher.txn():  # what to watch: everything the status shows
                for prefix in ("/pb/", "/deploy/", "/buffer/", "/resources/"):
                    txn.list_keys(prefix, recurse=True)
            snapshot = snapshot_of(config)
            if args.json:
                print(json.dumps(snapshot), flush=True)
            else:
                print("\033[2J\033[H" + text_of(snapshot), flush=True)
    return 0


def _cmd_logs(args: argparse.Namespace) -> int:
    import time

    from sdpbatch.control.configdb import Config

    with _control_errors(), Config() as config:
        for txn in config.txn():
            if txn.get_pb(args.pb_id) is None:
                raise UsageError(f"no processing block {args.pb_id}")
            state = txn.get_pb_state(args.pb_id) or {}
        default = _data_dir(args.data_dir) / "logs" / f"proc-{args.pb_id}-workflow.log"
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
            if state.get("status") in ("FINISHED", "FAILED", "CANCELLED"):
                if path.is_file() and path.stat().st_size == position:
                    return 0
            time.sleep(0.5)


def _cmd_buffers(args: argparse.Namespace) -> int:
    import json

    from sdpbatch.control import buffers
    from sdpbatch.control.configdb import Config

    with _control_errors(), Config() as config:
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

    with _control_errors(), Config() as config:
        if args.action == "get":
            for txn in config.txn():
                value = txn.get(args.key)
            if value is None:
                raise UsageError(f"no key {args.key}")
            print(json.dumps(value, indent=2, sort_keys=True))
        elif args.action == "ls":
            for txn in config.txn():
                keys = txn.list_keys(args.key, recurse=args.recursive)
            print("\n".join(keys))
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


# ----------------------------------------------------------------------------------------------
# the whole system: up, down, subarray
# ----------------------------------------------------------------------------------------------


def _add_system_commands(sub: argparse._SubParsersAction) -> None:
    """up / down (the whole system in the background) and subarray (a thin Tango client)."""
    data_help = "data root of the system (default: $SDPBATCH_DATA_DIR, else ./sdp-data)"
    p = sub.add_parser(
        "up",
        help="start etcd, the Tango database, the subarray devices, the processing controller "
        "and the deployer in the background",
    )
    p.add_argument("--data-dir", type=Path, default=None, help=data_help)
    p.set_defaults(handler=_cmd_up)

    p = sub.add_parser("down", help="stop everything 'sdpbatch up' started (data is kept)")
    p.add_argument("--data-dir", type=Path, default=None, help=data_help)
    p.set_defaults(handler=_cmd_down)

    p = sub.add_parser(
        "subarray",
        help="command an SDP subarray device (mid_sdp/elt/subarray_N) without iTango",
        description="Thin client of the Tango device mid_sdp/elt/subarray_N; prints obsState "
        "after the command.  TANGO_HOST comes from the environment, else from the system "
        "started by 'sdpbatch up' in --data-dir.",
    )
    p.add_argument("number", type=int, help="subarray number (1 or 2)")
    p.add_argument("action", choices=sorted(_SUBARRAY_ACTIONS), help="what to do")
    p.add_argument(
        "argument",
        nargs="?",
        help="assign: SBI JSON file ('-': stdin); configure/scan: JSON text or a JSON file",
    )
    p.add_argument("--data-dir", type=Path, default=None, help=data_help)
    p.set_defaults(handler=_cmd_subarray)


# action -> (Tango command, whether it takes a JSON argument)
_SUBARRAY_ACTIONS: dict[str, tuple[str | None, bool]] = {
    "on": ("On", False),
    "off": ("Off", False),
    "assign": ("AssignResources", True),
    "release": ("ReleaseResources", False),
    "configure": ("Configure", True),
    "scan": ("Scan", True),
    "end-scan": ("EndScan", False),
    "end": ("End", False),
    "abort": ("Abort", False),
    "obsreset": ("ObsReset", False),
    "restart": ("Restart", False),
    "show": (None, False),
}


_NOT_UP_REASONS = ("API_DeviceNotExported", "API_CantConnectToDevice")


def _cmd_up(args: argparse.Namespace) -> int:
    from sdpbatch.control import system

    try:
        state = system.up(args.data_dir)
    except system.AlreadyUp as err:
        print(f"# {err}")
        state = system.SystemState.load(Path(args.data_dir or system.default_data_dir()).resolve())
        print("\n".join(system.export_lines(state)))
        return 0
    except system.SystemControlError as err:
        raise UsageError(str(err)) from err
    status = system.services_status(state.data_dir)
    print(f"# sdpbatch is up; data root {state.data_dir}")
    for proc in status["processes"]:
        print(f"#   {proc['name']:<16} pid {proc['pid']:<8} log {proc['log']}")
    print(f"# logs:    {status['logs']}")
    print(f"# buffers: {state.data_dir}/<buffer name>/ (listed by 'sdpbatch status')")
    print(f"# Tango database file: {status['tango_database']}")
    print('# set the environment for itango3 and other clients (or: eval "$(sdpbatch up)"):')
    print("\n".join(system.export_lines(state)))
    return 0


def _cmd_down(args: argparse.Namespace) -> int:
    from sdpbatch.control import system

    data_dir = Path(args.data_dir or system.default_data_dir()).resolve()
    try:
        stopped = system.down(data_dir)
    except system.SystemControlError as err:
        raise UsageError(str(err)) from err
    if stopped:
        print(f"stopped {', '.join(stopped)}; data kept in {data_dir}")
    else:
        print(f"nothing was running for {data_dir}")
    return 0


def _subarray_argument(action: str, argument: str | None) -> str:
    """The JSON text for a command: from a file ('-': stdin) or given inline."""
    if argument is None:
        raise UsageError(f"subarray {action} needs a JSON argument (text or file)")
    if argument == "-":
        return sys.stdin.read()
    path = Path(argument)
    if not argument.lstrip().startswith(("{", "[")) or path.is_file():
        try:
            return path.read_text()
        except OSError as err:
            raise UsageError(f"cannot read {path}: {err.strerror}") from err
    return argument


def _tango_host(data_dir: Path | None) -> str:
    import os

    from sdpbatch.control import system

    if os.environ.get("TANGO_HOST"):
        return os.environ["TANGO_HOST"]
    state = system.SystemState.load(Path(data_dir or system.default_data_dir()).resolve())
    if state is None or not state.running:
        raise UsageError("TANGO_HOST is not set and no system is up here: run 'sdpbatch up'")
    return state.env["TANGO_HOST"]


def _cmd_subarray(args: argparse.Namespace) -> int:
    import tango

    command, takes_json = _SUBARRAY_ACTIONS[args.action]
    if not takes_json and args.argument is not None:
        raise UsageError(f"subarray {args.action} takes no argument")
    argument = _subarray_argument(args.action, args.argument) if takes_json else None
    name = f"mid_sdp/elt/subarray_{args.number}"
    try:
        device = tango.DeviceProxy(f"tango://{_tango_host(args.data_dir)}/{name}")
        if command is not None:
            if argument is None:
                device.command_inout(command)
            else:
                device.command_inout(command, argument)
        obs_state = device.read_attribute("obsState").value
        label = device.get_attribute_config("obsState").enum_labels[int(obs_state)]
        if args.action != "show":
            print(f"{name}: obsState {label}")
            return 0
        print(f"{name}: state {device.state()}, obsState {label}")
        for attr in ("adminMode", "healthState"):
            value = int(device.read_attribute(attr).value)
            print(f"  {attr}: {device.get_attribute_config(attr).enum_labels[value]}")
        for attr in ("scanType", "scanID", "receiveAddresses"):
            print(f"  {attr}: {device.read_attribute(attr).value}")
        return 0
    except tango.DevFailed as err:
        first = err.args[0]
        text = " ".join(first.desc.split())
        if first.reason == "DB_DeviceNotDefined":
            text += " (the subarrays are 1 and 2)"
        elif first.reason in _NOT_UP_REASONS or "CantConnectToDatabase" in first.reason:
            text += " (is the system up? 'sdpbatch up' starts it)"
        raise UsageError(f"{name}: {first.reason}: {text}") from None


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sdpbatch",
        description="SKA SDP batch imaging: simulation, ICAL, Dask execution and the SDP "
        "control plane on one machine.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_science_commands(sub)
    _add_control_commands(sub)
    _add_system_commands(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    _setup_logging(args.verbose)
    try:
        return int(args.handler(args) or 0)
    except (ParameterError, MeasurementSetError, UsageError) as err:
        print(f"sdpbatch {args.command}: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"sdpbatch {args.command}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # e.g. `sdpbatch params | head`: the reader has what it wanted
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


if __name__ == "__main__":
    sys.exit(main())
