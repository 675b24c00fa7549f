"""Live updates: one database watcher thread, its latest overview sent to every open page.

A thread runs :meth:`Config.watcher` over the overview's prefixes: it wakes on any change (an
etcd watch, not a polling loop) and every ``period`` seconds for what the database does not
hold (process liveness, buffer sizes), reads the overview and, if it differs from the last
one, hands the JSON text to the event loop, which gives it to each subscriber's queue (one
place per subscriber: a slow page skips to the newest overview, memory stays bounded).
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import time

from sdpbatch.control.configdb import Config
from sdpbatch.web.files import DataRoot
from sdpbatch.web.state import overview, touch_overview_keys

LOG = logging.getLogger(__name__)
RETRY = 2.0  # s between attempts while the database is unreachable


class Overviews:
    """The latest overview as JSON text, and its subscribers."""

    def __init__(self, config: Config, root: DataRoot, *, period: float):
        self.config = config
        self.root = root
        self.period = period
        self.latest: str | None = None
        self._subscribers: set[asyncio.Queue] = set()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # --- the event loop's side ------------------------------------------------------------------

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._thread = threading.Thread(target=self._run, name="web-overview", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    def subscribe(self) -> asyncio.Queue:
        queue: asyncio.Queue = asyncio.Queue(maxsize=1)
        if self.latest is not None:
            queue.put_nowait(self.latest)
        self._subscribers.add(queue)
        return queue

    def unsubscribe(self, queue: asyncio.Queue) -> None:
        self._subscribers.discard(queue)

    def _deliver(self, text: str) -> None:
        self.latest = text
        for queue in self._subscribers:
            if queue.full():
                queue.get_nowait()
            queue.put_nowait(text)

    # --- the watcher thread ---------------------------------------------------------------------

    def _publish(self, snapshot: dict) -> None:
        if self._loop is not None and not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self._deliver, json.dumps(snapshot, sort_keys=True))

    def _run(self) -> None:
        last = None
        while not self._stop.is_set():
            try:
                for watcher in self.config.watcher(timeout=self.period):
                    if self._stop.is_set():
                        return
                    for txn in watcher.txn():
                        touch_overview_keys(txn)
                    snapshot = _read_overview(self.config, self.root)
                    key = json.dumps({k: v for k, v in snapshot.items() if k != "time"})
                    if key != last:
                        last = key
                        self._publish(snapshot)
            except Exception as err:  # noqa: BLE001 - shown on the pages, retried
                LOG.warning("overview not read: %s", err)
                last = None
                self._publish({"time": time.time(), "error": str(err)})
                self._stop.wait(RETRY)


def _read_overview(config: Config, root: DataRoot) -> dict:
    """The overview, read again if a file vanished under a buffer while it was measured."""
    try:
        return overview(config, root)
    except OSError:  # an atomic rename in a buffer during the walk
        time.sleep(0.05)
        return overview(config, root)
