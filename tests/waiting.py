"""The one way the tests wait for something: poll a condition until it holds or time is up
(never a fixed sleep before an assert)."""

from __future__ import annotations

import time
from collections.abc import Callable


def wait_until(what: str, check: Callable[[], object], timeout: float, poll: float = 0.1) -> float:
    """Seconds until ``check()`` is true; AssertionError naming ``what`` after ``timeout`` s."""
    t0 = time.monotonic()
    while True:
        if check():
            return time.monotonic() - t0
        if time.monotonic() - t0 > timeout:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(poll)
