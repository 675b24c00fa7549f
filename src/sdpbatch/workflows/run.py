"""Entry of a workflow process: ``python -m sdpbatch.workflows.run <pb_id>``.

The deployer starts it for each processing block; it looks the block's workflow up in the
catalogue, finds its code in the registry and runs it under the runtime (claim, states,
cleanup on error).
"""

from __future__ import annotations

import argparse
import logging
import sys

from sdpbatch.control.configdb import FOREVER, Config, ConfigError
from sdpbatch.control.workflow_catalogue import find_workflow, known_workflow_keys
from sdpbatch.offline import configure_astropy_offline
from sdpbatch.workflows.registry import workflow_function
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
            spec = find_workflow(pb["workflow"])
            if spec is None:
                known = ", ".join(known_workflow_keys())
                logging.error("workflow %s is not registered; known: %s", pb["workflow"], known)
                return 1
            function = workflow_function(spec)
            return run_workflow(args.pb_id, function, config=config, logger_name=spec.id)
    except ConfigError as err:
        logging.error("%s", err)
        return 1


if __name__ == "__main__":
    sys.exit(main())
