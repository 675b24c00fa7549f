"""Device server: ``python -m sdpbatch.control.subarray.server [INSTANCE] [tango args]``.

Server name ``SDPSubarray``, instance ``1`` by default; the devices it serves are those
registered for ``SDPSubarray/<instance>`` in the Tango database (``sdpbatch up`` registers
``mid_sdp/elt/subarray_1`` and ``_2``).  The CORBA endpoint is pinned to loopback.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Sequence

from tango.server import run

from sdpbatch.control.subarray.device import SDPSubarray
from sdpbatch.vocabulary import LOOPBACK

SERVER_NAME = "SDPSubarray"
LOOPBACK_ENDPOINT = ["-ORBendPoint", f"giop:tcp:{LOOPBACK}:"]


def main(argv: Sequence[str] | None = None) -> int:
    """Run the device server until SIGTERM/SIGINT."""
    args = list(sys.argv[1:] if argv is None else argv)
    instance = args.pop(0) if args and not args[0].startswith("-") else "1"
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s:%(name)s:%(message)s")
    if "-ORBendPoint" not in args:
        args += LOOPBACK_ENDPOINT
    run((SDPSubarray,), args=[SERVER_NAME, instance, *args])
    return 0


if __name__ == "__main__":
    sys.exit(main())
