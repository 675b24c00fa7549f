"""The one command line: ``sdpbatch <command> ...``.

Each command is a thin handler: parse arguments, call the layer that does the work, print
what was done.  The commands live by theme in :mod:`sdpbatch.cli.science`,
:mod:`sdpbatch.cli.products`, :mod:`sdpbatch.cli.control` and :mod:`sdpbatch.cli.system`.

Exit status: 0 done; 2 an error the user can fix (bad parameters or flags, missing or unreadable
input, an output path that cannot be used), reported in one line naming what was typed, with
nothing written; 1 an internal error (a bug: one line, the traceback with ``-v`` or in the
``--log-file``); 130 interrupted.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence

from sdpbatch.cli.common import FILE_ONLY, UsageError, add_logging_options, setup_logging
from sdpbatch.cli.control import add_control_commands
from sdpbatch.cli.products import add_product_commands
from sdpbatch.cli.science import add_science_commands
from sdpbatch.cli.system import add_system_commands
from sdpbatch.cli.web import add_web_command
from sdpbatch.io.ms_read import MeasurementSetError
from sdpbatch.parameters import ParameterError

__all__ = ["UsageError", "build_parser", "main", "version"]

EXIT_OK, EXIT_INTERNAL, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130
EPILOG = (
    "exit status: 0 done; 2 user error (one line naming the flag or parameter, nothing "
    "written); 1 internal error (traceback with -v or in --log-file); 130 interrupted. "
    "Every command takes -v, -q and --log-file, before or after its name."
)
LOG = logging.getLogger("sdpbatch")


def version() -> str:
    """The installed sdpbatch version."""
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as installed

    try:
        return installed("sdpbatch")
    except PackageNotFoundError:
        return "unknown (not installed)"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sdpbatch",
        description="SKA SDP batch imaging: simulation, ICAL, Dask execution and the SDP "
        "control plane on one machine.",
        epilog=EPILOG,
        allow_abbrev=False,
    )
    parser.add_argument(
        "--version",
        action="version",
        version=f"sdpbatch {version()} (Python {sys.version.split()[0]})",
    )
    add_logging_options(parser, top=True)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    add_science_commands(sub)
    add_product_commands(sub)
    add_control_commands(sub)
    add_system_commands(sub)
    add_web_command(sub)
    for command in sub.choices.values():
        command.allow_abbrev = False  # -scale must never be read as an abbreviation
        command.epilog = command.epilog or EPILOG
        add_logging_options(command, top=False)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    name = f"sdpbatch {args.command}"
    try:
        setup_logging(verbose=args.verbose, quiet=args.quiet, log_file=args.log_file)
        return int(args.handler(args) or 0)
    except (ParameterError, MeasurementSetError, UsageError) as err:
        LOG.debug("user error", exc_info=True, extra=FILE_ONLY)
        print(f"{name}: error: {err}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print(f"{name}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:  # e.g. `sdpbatch params | head`: the reader has what it wanted
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_OK
    except Exception as err:  # noqa: BLE001 - a bug: one line, the traceback on request
        LOG.error("internal error", exc_info=True, extra=FILE_ONLY)
        if args.verbose:
            import traceback

            traceback.print_exc()
        hint = (
            ""
            if args.verbose
            else " (traceback in the log file)"
            if args.log_file
            else " (run again with -v for the traceback)"
        )
        print(f"{name}: internal error: {type(err).__name__}: {err}{hint}", file=sys.stderr)
        return EXIT_INTERNAL
