"""What ``sdpbatch down`` does while the database is still up, before it stops processes.

- The workflow processes of the blocks still going (STARTING, WAITING, RUNNING) get SIGTERM
  while the deployer still runs: each removes its Dask engine, marks its block FAILED and
  exits within seconds (:func:`sdpbatch.workflows.runtime.run_workflow`).
- Those blocks, and any still going, are then FAILED with the reason :data:`DOWN_REASON`, so
  whoever looks later reads why.
- Controllers and deployers connected to the database (``/component/<name>-<pid>``) on this
  host that ``up`` did not start (restarted by hand) are stopped too.
"""

from __future__ import annotations

import logging
import socket

from sdpbatch.control.configdb import Config, ConfigError
from sdpbatch.control.system.processes import ProcessRecord, stop_process, stop_together
from sdpbatch.vocabulary import ENDED, BlockStatus, DeploymentStatus, workflow_deployment_id

LOG = logging.getLogger(__name__)
DOWN_REASON = "stopped by sdpbatch down"
WORKFLOW_STOP = 8.0  # s a workflow has to end after SIGTERM (it removes its engine: ~1-2 s)


def active_blocks(config: Config) -> list[str]:
    """The blocks that have not ended."""
    for txn in config.txn():
        states = {pb_id: txn.get_pb_state(pb_id) for pb_id in txn.list_pbs()}
    return [pb_id for pb_id, s in states.items() if s is not None and s.get("status") not in ENDED]


def stop_workflows(config: Config, blocks: list[str], *, timeout: float) -> list[str]:
    """SIGTERM the workflow processes of ``blocks`` at once, wait for them to end (SIGKILL
    after ``timeout`` s); their names."""
    for txn in config.txn():
        states = [txn.get_deployment_state(workflow_deployment_id(pb_id)) for pb_id in blocks]
    records = [
        ProcessRecord.from_dict(raw)
        for state in states
        if state and state.get("status") == DeploymentStatus.RUNNING
        for raw in state.get("processes", [])
    ]
    return stop_together(records, timeout=timeout)


def end_active_blocks(
    config: Config, reason: str = DOWN_REASON, *, stopped: list[str] = ()
) -> list[str]:
    """Mark FAILED with ``reason`` every block that has not ended, and the blocks ``stopped``
    that their workflow marked FAILED on its way out; the blocks."""
    ended = []
    for txn in config.txn():
        ended = []
        for pb_id in txn.list_pbs():
            state = txn.get_pb_state(pb_id)
            if state is None:
                continue
            going = state.get("status") not in ENDED
            failed_on_stop = pb_id in stopped and state.get("status") == BlockStatus.FAILED
            if going or (failed_on_stop and state.get("reason") != reason):
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
            going = active_blocks(config)
            workflows = stop_workflows(config, going, timeout=WORKFLOW_STOP)
            ended = end_active_blocks(config, stopped=going)
            for txn in config.txn():
                components = txn.list_components()
    except ConfigError as err:
        LOG.warning("cannot end the blocks still going: %s", err)
        return []
    if workflows:
        LOG.info("stopped the workflows of the blocks still going: %s", ", ".join(workflows))
    if ended:
        LOG.info("marked FAILED (%s): %s", DOWN_REASON, ", ".join(ended))
    stopped = list(workflows)
    for info in components.values():
        name = (info or {}).get("name", "component")
        pid = int((info or {}).get("pid", 0))
        if not pid or pid in ours or info.get("hostname") != socket.gethostname():
            continue
        if stop_process(pid, started=info.get("started"), timeout=timeout):
            stopped.append(f"{name} pid {pid} (started by hand)")
    return stopped
