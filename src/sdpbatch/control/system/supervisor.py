"""The supervisor of ``sdpbatch up``: restarts a component that exits, with back-off.

``python -m sdpbatch.control.system.supervisor DATA_DIR`` (started by ``up``, stopped first by
``down``) looks at the processes recorded in ``DATA_DIR/system.json`` every
:data:`POLL` s.  A component found dead is restarted by the same function that started it
(:data:`~sdpbatch.control.system.components.STARTERS`), after 1 s, then 2, 4, ... up to
:data:`MAX_BACKOFF` s while it keeps failing; its back-off is forgotten once it has run for
:data:`STABLE_AFTER` s.  Restart counts and the cause of the last exit (from its log) are
written to ``system.json`` for ``sdpbatch status``.  It stops when the state says the system
is no longer running.
"""

from __future__ import annotations

import logging
import sys
import time
from pathlib import Path

from sdpbatch.control.system.components import STARTERS
from sdpbatch.control.system.data_root import Layout
from sdpbatch.control.system.logcause import failure_cause
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
        cause = failure_cause(record.log_path) or "exited"
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


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m sdpbatch.control.system.supervisor DATA_DIR", file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s:%(name)s:%(message)s")
    Supervisor(Path(args[0])).run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
