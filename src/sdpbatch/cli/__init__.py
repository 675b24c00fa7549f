"""The one command line: ``sdpbatch <command> ...``.

Each command is a thin handler: parse arguments, call the layer that does the work, print
what was done.  Errors the user can fix (bad parameters, missing files) print one clear line
and exit with status 2; nothing is written in that case.  The commands live by theme in
:mod:`sdpbatch.cli.science`, :mod:`sdpbatch.cli.control` and :mod:`sdpbatch.cli.system`.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence

from sdpbatch.cli.common import UsageError
from sdpbatch.cli.control import add_control_commands
from sdpbatch.cli.science import add_science_commands
from sdpbatch.cli.system import add_system_commands
from sdpbatch.cli.web import add_web_command
from sdpbatch.io.ms_read import MeasurementSetError
from sdpbatch.parameters import ParameterError

__all__ = ["UsageError", "build_parser", "main"]


def _setup_logging(verbose: bool) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(levelname)s:%(name)s:%(message)s",
    )
    for noisy in ("distributed", "tornado", "asyncio", "bokeh", "matplotlib", "h5py", "PIL"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sdpbatch",
        description="SKA SDP batch imaging: simulation, ICAL, Dask execution and the SDP "
        "control plane on one machine.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    add_science_commands(sub)
    add_control_commands(sub)
    add_system_commands(sub)
    add_web_command(sub)
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
