"""System commands: up, down (the whole system in the background) and subarray (a thin
Tango client)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from sdpbatch.cli.common import UsageError, add_data_dir_option
from sdpbatch.control.system.data_root import resolve_data_dir
from sdpbatch.vocabulary import LOOPBACK


def add_system_commands(sub: argparse._SubParsersAction) -> None:
    """up / down (the whole system in the background) and subarray (a thin Tango client)."""
    p = sub.add_parser(
        "up",
        help="start etcd, the Tango database, the subarray devices, the processing controller "
        "and the deployer in the background",
    )
    add_data_dir_option(p, "data root of the system")
    _add_engine_options(p)
    p.set_defaults(handler=_cmd_up)

    p = sub.add_parser("down", help="stop everything 'sdpbatch up' started (data is kept)")
    add_data_dir_option(p, "data root of the system")
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
    add_data_dir_option(p, "data root of the system")
    p.set_defaults(handler=_cmd_subarray)


def _add_engine_options(p: argparse.ArgumentParser) -> None:
    """--engine and the SLURM engine's settings (docs/deploy.md)."""
    g = p.add_argument_group("execution engine (recorded; kept by the next 'up' unless given)")
    g.add_argument(
        "--engine",
        default=None,
        metavar="ENGINE",
        help="where the blocks' Dask engines run: 'local' (processes on this machine, the "
        "default), 'slurm' (workers as SLURM jobs) or 'scheduler=ADDRESS' (an existing Dask "
        "cluster, e.g. scheduler=tcp://10.0.0.5:8786)",
    )
    g.add_argument("--slurm-partition", default=None, help="partition (default: the default one)")
    g.add_argument("--slurm-account", default=None, help="account of the jobs (sbatch -A)")
    g.add_argument(
        "--slurm-walltime", default=None, help="time limit of a worker job (default: partition's)"
    )
    g.add_argument(
        "--dask-host",
        default=None,
        help="slurm: address the blocks' Dask schedulers listen on, reachable from the compute "
        f"nodes (default {LOOPBACK}: a single-node cluster)",
    )


def _engine_spec(args: argparse.Namespace):
    """The engine asked for on the command line, or None to keep the recorded one."""
    from sdpbatch.control.engines import EngineError, parse_engine

    options = {
        "partition": args.slurm_partition,
        "account": args.slurm_account,
        "walltime": args.slurm_walltime,
        "dask_host": args.dask_host,
    }
    if args.engine is None and all(v is None for v in options.values()):
        return None
    try:
        return parse_engine(args.engine or "local", **options)
    except EngineError as err:
        raise UsageError(str(err)) from None


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
    from sdpbatch.control.configdb import ConfigError
    from sdpbatch.control.system import lifecycle as system
    from sdpbatch.control.system.state import SystemControlError, SystemState, export_lines

    engine = _engine_spec(args)
    try:
        state = system.up(args.data_dir, engine=engine)
    except system.AlreadyUp as err:
        state = SystemState.load(resolve_data_dir(args.data_dir))
        notes = [str(err)]
        if engine is not None:
            notes.append("--engine is not applied to a running system: 'sdpbatch down' first")
        print("\n".join([*_comments(notes), *export_lines(state)]))
        return 0
    except SystemControlError as err:
        raise UsageError(str(err)) from err
    status = system.services_status(state.data_dir)
    notes = [f"sdpbatch is up; data root {state.data_dir}"]
    for proc in status["processes"]:
        notes.append(f"  {proc['name']:<16} pid {proc['pid']:<8} log {proc['log']}")
    if status.get("supervisor"):
        notes.append(
            f"  {'supervisor':<16} pid {status['supervisor']['pid']:<8} restarts a component "
            "that exits (counts in 'sdpbatch status')"
        )
    try:
        notes.append(f"engine:  {system.engine_line(state)}")
    except ConfigError as err:  # after the components' patience: the exports still count
        notes.append(f"engine:  not known ({err})")
    notes += [
        f"logs:    {status['logs']}",
        f"buffers: {state.data_dir}/<buffer name>/ (listed by 'sdpbatch status')",
        f"Tango database file: {status['tango_database']}",
        'set the environment for itango3 and other clients (or: eval "$(sdpbatch up)"):',
    ]
    print("\n".join([*_comments(notes), *export_lines(state)]))
    return 0


def _comments(notes: list[str]) -> list[str]:
    """Shell comment lines: a line break in a note (a path) cannot end the comment."""
    return ["# " + note.replace("\n", "\\n").replace("\r", "\\r") for note in notes]


def _cmd_down(args: argparse.Namespace) -> int:
    from sdpbatch.control.system.lifecycle import down
    from sdpbatch.control.system.state import SystemControlError

    data_dir = resolve_data_dir(args.data_dir)
    try:
        stopped = down(data_dir)
    except SystemControlError as err:
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

    from sdpbatch.control.system.state import SystemState

    if os.environ.get("TANGO_HOST"):
        return os.environ["TANGO_HOST"]
    state = SystemState.load(resolve_data_dir(data_dir))
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
