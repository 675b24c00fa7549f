"""Commands on product sets: ``sdpbatch verify DIR``."""

from __future__ import annotations

import argparse
from pathlib import Path

from sdpbatch.cli.common import UsageError
from sdpbatch.vocabulary import PROVENANCE

EXIT_MISMATCH = 1


def add_product_commands(sub: argparse._SubParsersAction) -> None:
    """verify."""
    p = sub.add_parser(
        "verify",
        help=f"check a product set against its {PROVENANCE}: every file present and unchanged",
        description=f"Check each file {PROVENANCE} lists: present, same size, same SHA-256. "
        "Exit 0 when all are, 1 when a file is missing or changed (each named), 2 when DIR "
        "has no readable manifest. Files the manifest does not list are named, not counted.",
    )
    p.add_argument("directory", type=Path, metavar="DIR", help="a folder of products")
    p.set_defaults(handler=_cmd_verify)


def _cmd_verify(args: argparse.Namespace) -> int:
    from sdpbatch.io.provenance import ProvenanceError, verify

    if not args.directory.is_dir():
        raise UsageError(f"DIR {args.directory}: not a directory")
    try:
        found = verify(args.directory)
    except ProvenanceError as err:
        raise UsageError(str(err)) from None
    for name in found.missing:
        print(f"missing: {name}")
    for name in found.changed:
        print(f"changed: {name}")
    for name in found.unlisted:
        print(f"not in the manifest: {name}")
    verdict = "OK" if found.ok else "MISMATCH"
    print(
        f"{verdict}: {len(found.good)} file(s) as written, {len(found.missing)} missing, "
        f"{len(found.changed)} changed ({args.directory / PROVENANCE})"
    )
    return 0 if found.ok else EXIT_MISMATCH
