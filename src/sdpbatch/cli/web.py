"""The ``web`` command: the operator's read-only web page of one data root."""

from __future__ import annotations

import argparse

from sdpbatch.cli.common import UsageError, add_data_dir_option
from sdpbatch.control.system.data_root import resolve_data_dir
from sdpbatch.vocabulary import LOOPBACK

DEFAULT_PORT = 8080


def add_web_command(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "web",
        help="serve the read-only web page of a data root (blocks, logs, buffers, images)",
        description="A read-only web server: the system, the scheduling block instances and "
        "processing blocks (live), one block's log, deployments and buffers, one product's "
        "images, gains and per-cycle figures, and a JSON API under /api/.  The configuration "
        "database comes from SDP_CONFIG_HOST/SDP_CONFIG_PORT, else from the system "
        "'sdpbatch up' runs for --data-dir.",
    )
    add_data_dir_option(p, "data root to show")
    p.add_argument(
        "--host", default=LOOPBACK, help=f"address to listen on (default: {LOOPBACK}, loopback)"
    )
    p.add_argument(
        "--port",
        type=int,
        default=DEFAULT_PORT,
        help=f"port to listen on (default: {DEFAULT_PORT}; 0: any free port)",
    )
    p.set_defaults(handler=_cmd_web)


def _cmd_web(args: argparse.Namespace) -> int:
    from sdpbatch.web.server import AddressInUse, serve

    if not 0 <= args.port <= 65535:
        raise UsageError(f"--port {args.port}: allowed are 0 (any free port) to 65535")
    data_dir = resolve_data_dir(args.data_dir)
    if not data_dir.is_dir():
        raise UsageError(f"--data-dir {data_dir}: no such directory")
    try:
        serve(data_dir, host=args.host, port=args.port)
    except AddressInUse as err:
        raise UsageError(f"--host/--port: {err}; choose another (--port 0: any free)") from err
    return 0
