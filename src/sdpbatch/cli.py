"""The one command line: ``sdpbatch <command> ...``.

Each command is a thin handler: parse arguments, call the layer that does the work, print
what was done.  Errors the user can fix (bad parameters, missing files) print one clear line
and exit with status 2; nothing is written in that case.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

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
    _add_cluster_options(p)
    p.set_defaults(handler=_cmd_ical)

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


def _cmd_simulate(args: argparse.Namespace) -> int:
    raise UsageError("simulate is not available yet")


def _cmd_ical(args: argparse.Namespace) -> int:
    raise UsageError("ical is not available yet")


def _cmd_run(args: argparse.Namespace) -> int:
    raise UsageError("run is not available yet")


# ----------------------------------------------------------------------------------------------
# control plane: etcd, controller, deployer, process, status, logs, buffers, config
# ----------------------------------------------------------------------------------------------


def _add_control_commands(sub: argparse._SubParsersAction) -> None:
    """Registered by the control-plane work."""


# ----------------------------------------------------------------------------------------------
# the whole system: up, down, subarray
# ----------------------------------------------------------------------------------------------


def _add_system_commands(sub: argparse._SubParsersAction) -> None:
    """Registered by the Tango / system work."""


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
    except (ParameterError, UsageError) as err:
        print(f"sdpbatch {args.command}: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"sdpbatch {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
