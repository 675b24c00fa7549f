"""What ``sdpbatch down`` does while the database is still up, before it stops processes.

- Every block still going (STARTING, WAITING, RUNNING) is marked FAILED with the reason
  :data:`DOWN_REASON`, so whoever looks later reads why, not the error its workflow met when
  its engine vanished.
- Controllers and deployers connected to the database (``/component/<name>-<pid>``) on this
  host that ``up`` did not start (restarted by hand) are stopped too.
"""

from __future__ import annotations

import logging
import socket

from sdpbatch.control.configdb import Config, ConfigError
from sdpbatch.control.system.processes import stop_process
from sdpbatch.vocabulary import ENDED, BlockStatus

LOG = logging.getLogger(__name__)
DOWN_REASON = "stopped by sdpbatch down"


def end_active_blocks(config: Config, reason: str = DOWN_REASON) -> list[str]:
    """Mark every block that has not ended FAILED with ``reason``; the blocks."""
    ended = []
    for txn in config.txn():
        ended = []
        for pb_id in txn.list_pbs():
            state = txn.get_pb_state(pb_id)
            if state is not None and state.get("status") not in ENDED:
                txn.update_pb_state(
                    pb_id, {**state, "status": BlockStatus.FAILED, "reason": reason}
                )
                ended.append(pb_id)
    return ended


def end_blocks_and_stop_strays(
    *, host: str, port: int, ours: set[int], timeout: float
) -> list[str]:
    """End the blocks still going and stop the registered components that are not ``ours``
    (pids ``up`` started); what was stopped, for the user."""
    try:
        with Config("etcd3", host=host, port=port, patience=2.0) as config:
            ended = end_active_blocks(config)
            for txn in config.txn():
                components = txn.list_components()
    except ConfigError as err:
        LOG.warning("cannot end the blocks still going: %s", err)
        return []
    if ended:
        LOG.info("marked FAILED (%s): %s", DOWN_REASON, ", ".join(ended))
    stopped = []
    for info in components.values():
        name = (info or {}).get("name", "component")
        pid = int((info or {}).get("pid", 0))
        if not pid or pid in ours or info.get("hostname") != socket.gethostname():
            continue
        if stop_process(pid, started=info.get("started"), timeout=timeout):
            stopped.append(f"{name} pid {pid} (started by hand)")
    return stopped
