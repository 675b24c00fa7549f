"""The supervisor of ``sdpbatch up``: starts the components, restarts one that exits.

``python -m sdpbatch.control.system.supervisor DATA_DIR --report-fd N [--engine JSON]``
(started by ``up``, stopped first by ``down``) starts every component
(:func:`~sdpbatch.control.system.components.start_all`), writes ``{"error": ""}`` (or why a
component did not come up, and exits) as one line to file descriptor N for ``up``, then
looks at the processes recorded in ``DATA_DIR/system.json`` every :data:`POLL` s.  A
component found dead is restarted by the same function that started it
(:data:`~sdpbatch.control.system.components.STARTERS`), after 1 s, then 2, 4, ... up to
:data:`MAX_BACKOFF` s while it keeps failing; its back-off is forgotten once it has run for
:data:`STABLE_AFTER` s.  Restart counts and the cause of the last exit are written to
``system.json`` for ``sdpbatch status``: the components are its children, so the cause names
the signal that killed one (``killed by SIGKILL``), else the cause its log gives, else its
exit status.  It stops when the state says the system is no longer running.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
import time
from pathlib import Path

import psutil

from sdpbatch.control.engines import EngineSpec
from sdpbatch.control.system.components import STARTERS, start_all
from sdpbatch.control.system.data_root import Layout
from sdpbatch.control.system.logcause import failure_cause
from sdpbatch.control.system.processes import ProcessRecord, exit_code
from sdpbatch.control.system.state import SystemControlError, SystemState

LOG = logging.getLogger("supervisor")
POLL = 0.5  # s
FIRST_BACKOFF = 1.0  # s
MAX_BACKOFF = 30.0  # s
STABLE_AFTER = 60.0  # s of running after which a component's back-off starts again at 1 s


class Supervisor:
    """Restart schedule of the components of one data root."""

    def __init__(self, data_dir: Path):
        self.data_dir = Path(data_dir).resolve()
        self.layout = Layout(self.data_dir)
        self.backoff: dict[str, float] = {}
        self.due: dict[str, float] = {}  # component -> monotonic time of its restart

    def step(self) -> bool:
        """One look at every component; False once the system is no longer running."""
        state = SystemState.load(self.data_dir)
        if state is None or not state.running:
            return False
        for record in list(state.processes):
            if record.alive():
                if time.time() - record.started > STABLE_AFTER:
                    self.backoff.pop(record.name, None)
                continue
            if record.name not in STARTERS:
                continue
            if record.name not in self.due:
                self._schedule(state, record)
            elif time.monotonic() >= self.due[record.name]:
                self._restart(state, record.name)
        return True

    def _schedule(self, state: SystemState, record) -> None:
        delay = self.backoff.get(record.name, FIRST_BACKOFF)
        self.backoff[record.name] = min(2 * delay, MAX_BACKOFF)
        self.due[record.name] = time.monotonic() + delay
        cause = exit_cause(record)
        state.exits[record.name] = cause
        state.save()
        LOG.warning(
            "%s (pid %d) is not running (%s); restarting it in %.0f s",
            record.name,
            record.pid,
            cause,
            delay,
        )

    def _restart(self, state: SystemState, name: str) -> None:
        del self.due[name]
        state.restarts[name] = state.restarts.get(name, 0) + 1
        try:
            record = STARTERS[name](state, self.layout)  # records the new process and saves
        except SystemControlError as err:
            LOG.error("restart of %s failed: %s", name, err)
            state.save()
            return
        LOG.warning("restarted %s: pid %d (restart %d)", name, record.pid, state.restarts[name])

    def run(self) -> None:
        LOG.info("supervising the system of %s", self.data_dir)
        while self.step():
            time.sleep(POLL)
        LOG.info("the system of %s is down: supervisor stops", self.data_dir)


def exit_cause(record: ProcessRecord) -> str:
    """How a component ended: the signal that killed it, else the cause in its log, else its
    exit status ("exited" if it was not our child)."""
    code = exit_code(record.pid)
    if code is not None and code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    cause = failure_cause(record.log_path)
    if cause:
        return cause
    return "exited" if code is None else f"exit status {code}"


def start_components(data_dir: Path, report_fd: int, engine: EngineSpec | None) -> bool:
    """Record this process as the supervisor, start every component and report to ``up``
    through ``report_fd``; True if all came up."""
    state = SystemState.load(data_dir)
    if state is None:
        error = f"no system state in {data_dir}"
    else:
        me = psutil.Process()
        state.supervisor = ProcessRecord(
            "supervisor", me.pid, me.cmdline(), Layout(data_dir).logs / "supervisor.log",
            me.create_time(),
        )  # fmt: skip
        state.save()
        try:
            start_all(state, Layout(data_dir), engine)
            error = ""
        except SystemControlError as err:
            error = str(err)
        except Exception as err:  # noqa: BLE001 - reported to up, which stops everything
            LOG.exception("starting the components failed")
            error = f"starting the components failed: {type(err).__name__}: {err}"
    with os.fdopen(report_fd, "w") as report:
        report.write(json.dumps({"error": error}) + "\n")
    return not error


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m sdpbatch.control.system.supervisor")
    parser.add_argument("data_dir", type=Path)
    parser.add_argument("--report-fd", type=int, required=True, help="where to report to up")
    parser.add_argument("--engine", default=None, help="engine spec to record (JSON)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s:%(name)s:%(message)s")
    engine = EngineSpec.from_dict(json.loads(args.engine)) if args.engine else None
    data_dir = args.data_dir.resolve()
    if not start_components(data_dir, args.report_fd, engine):
        return 1
    Supervisor(data_dir).run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
