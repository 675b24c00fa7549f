"""What the command modules share: the user-error type and small helpers."""

from __future__ import annotations

import argparse
import contextlib
import sys
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


@contextlib.contextmanager
def guarded_output(needs: list[tuple[Path, int]]):
    """Around a command that writes products: first check each directory's disk can take
    about the bytes given for it; on any failure remove what was half written; a full disk is
    one line (``no space left on device under DIR: needed about N MB``), exit status 2."""
    from sdpbatch.io.space import DiskFull, check_space, writing_into

    try:
        check_space(needs)
        with writing_into([d for d, _ in needs], needed=sum(n for _, n in needs)):
            yield
    except DiskFull as err:
        raise UsageError(str(err)) from None


def resolve_data_dir(value: Path | None) -> Path:
    from sdpbatch.control.system import default_data_dir

    return Path(value or default_data_dir()).resolve()


def terminate_on_sigterm() -> None:
    import signal

    def handler(signum, frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, handler)


class TextBar:
    """A text progress bar on stderr (the :class:`sdpbatch.execution.progress.Progress`
    protocol)."""

    def __init__(self) -> None:
        self.label, self.total, self.done = "", 1, 0

    def begin(self, label: str, total: int) -> None:
        self.label, self.total, self.done = label, max(1, total), 0

    def step(self, message: str) -> None:
        self.done = min(self.total, self.done + 1)
        self._draw(message)

    def end(self) -> None:
        self.done = self.total
        self._draw("done")
        sys.stderr.write("\n")
        sys.stderr.flush()

    def _draw(self, message: str) -> None:
        width = 30
        filled = round(width * self.done / self.total)
        sys.stderr.write(
            f"\r{self.label} [{'#' * filled}{'.' * (width - filled)}] {self.done}/{self.total} "
            f"{message[:60]:<60}"
        )
        sys.stderr.flush()


def progress_display(disabled: bool):
    """The progress display of a command: a text bar, or none with ``--no-progress``."""
    from sdpbatch.execution.progress import NoProgress

    return NoProgress() if disabled else TextBar()
