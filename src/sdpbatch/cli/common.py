"""What the command modules share: the user-error type and small helpers."""

from __future__ import annotations

import argparse
import contextlib
from collections.abc import Callable
from pathlib import Path

Handler = Callable[[argparse.Namespace], int]


class UsageError(Exception):
    """An error in what the user asked for; printed without a traceback."""


@contextlib.contextmanager
def control_errors():
    """Configuration database errors the user can act on become one-line usage errors."""
    from sdpbatch.control.configdb import ConfigError

    try:
        yield
    except ConfigError as err:
        raise UsageError(str(err)) from None


def resolve_data_dir(value: Path | None) -> Path:
    from sdpbatch.control.system import default_data_dir

    return Path(value or default_data_dir()).resolve()


def terminate_on_sigterm() -> None:
    import signal

    def handler(signum, frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, handler)
