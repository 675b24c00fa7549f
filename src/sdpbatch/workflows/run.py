"""Entry of a workflow process: ``python -m sdpbatch.workflows.run <pb_id>``.

The deployer starts it for each processing block; it looks the block's workflow up in the
registry and runs it under the runtime (claim, states, cleanup on error).
"""

from __future__ import annotations

import argparse
import logging
import sys

from sdpbatch.control.configdb import FOREVER, Config, ConfigError
from sdpbatch.offline import configure_astropy_offline
from sdpbatch.workflows.registry import WORKFLOWS, lookup
from sdpbatch.workflows.runtime import run_workflow


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m sdpbatch.workflows.run")
    parser.add_argument("pb_id", help="processing block to run")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s:%(name)s:%(message)s")
    for noisy in ("distributed", "tornado", "asyncio", "bokeh"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    configure_astropy_offline()
    try:
        with Config(patience=FOREVER) as config:
            for txn in config.txn():
                pb = txn.get_pb(args.pb_id)
            if pb is None:
                logging.error("processing block %s does not exist", args.pb_id)
                return 1
            spec = lookup(pb["workflow"])
            if spec is None:
                logging.error(
                    "workflow %s is not registered; known: %s", pb["workflow"], ", ".join(WORKFLOWS)
                )
                return 1
            return run_workflow(args.pb_id, spec.function(), config=config, logger_name=spec.id)
    except ConfigError as err:
        logging.error("%s", err)
        return 1


if __name__ == "__main__":
    sys.exit(main())
