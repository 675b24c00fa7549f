"""What the command modules share: the user-error type, logging, progress displays and small
helpers."""

from __future__ import annotations

import argparse
import contextlib
import logging
import sys
from collections.abc import Callable
from pathlib import Path

Handler = Callable[[argparse.Namespace], int]


class UsageError(Exception):
    """An error in what the user asked for; printed without a traceback."""


def add_data_dir_option(parser: argparse.ArgumentParser, what: str) -> None:
    """``--data-dir DIR``, ``what`` it is, defaulting to ``$SDPBATCH_DATA_DIR``, else
    ``./sdp-data`` (see :func:`sdpbatch.control.system.data_root.resolve_data_dir`)."""
    help = f"{what} (default: $SDPBATCH_DATA_DIR, else ./sdp-data)"
    parser.add_argument("--data-dir", type=Path, default=None, help=help)


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


def terminate_on_sigterm() -> None:
    import signal

    def handler(signum, frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, handler)


# ---------------------------------------------------------------------------------------------
# logging: -v / -q / --log-file on every command, timestamps on every line
# ---------------------------------------------------------------------------------------------

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
DATE_FORMAT = "%Y-%m-%d %H:%M:%S"
NOISY = ("distributed", "tornado", "asyncio", "bokeh", "matplotlib", "h5py", "PIL", "fsspec")
PROGRESS_LOG = logging.getLogger("sdpbatch.progress")
FILE_ONLY = {"file_only": True}
"""``extra`` of a log record for the log file only (e.g. the traceback of an error)."""
_console = None  # the rich Console of a terminal, shared by the log handler and the bar
_handlers: list[logging.Handler] = []  # the handlers setup_logging installed


def add_logging_options(parser: argparse.ArgumentParser, *, top: bool) -> None:
    """-v / -q / --log-file; on a subcommand they default to what was given before it."""
    unset = {} if top else {"default": argparse.SUPPRESS}
    parser.add_argument(
        "-v",
        "--verbose",
        action="count",
        help="more log lines: -v debug of sdpbatch, -vv also of Dask",
        **({"default": 0} if top else unset),
    )
    parser.add_argument(
        "-q",
        "--quiet",
        action="store_true",
        help="warnings and errors only, no progress display",
        **({"default": False} if top else unset),
    )
    parser.add_argument(
        "--log-file",
        type=Path,
        metavar="FILE",
        help="also append every log line (debug with -v) to FILE",
        **({"default": None} if top else unset),
    )


def setup_logging(*, verbose: int, quiet: bool, log_file: Path | None) -> None:
    """Timestamped log lines on stderr (rich's handler on a terminal, so log lines and the
    progress bar never interleave; plain lines when redirected) and, with ``log_file``, in
    that file too."""
    global _console
    level = logging.WARNING if quiet else logging.DEBUG if verbose else logging.INFO
    root = logging.getLogger()
    for handler in _handlers:  # those of an earlier call (main() run twice in one process)
        root.removeHandler(handler)
        handler.close()
    _handlers.clear()
    if sys.stderr.isatty():
        from rich.console import Console
        from rich.logging import RichHandler

        _console = Console(stderr=True)
        console: logging.Handler = RichHandler(
            console=_console, show_path=False, markup=False, log_time_format="[%X]"
        )
        console.setFormatter(logging.Formatter("%(name)s: %(message)s"))
    else:
        _console = None
        console = logging.StreamHandler(sys.stderr)
        console.setFormatter(logging.Formatter(LOG_FORMAT, DATE_FORMAT))
    console.setLevel(level)
    console.addFilter(lambda record: not getattr(record, "file_only", False))
    root.addHandler(console)
    _handlers.append(console)
    root.setLevel(logging.DEBUG if verbose else logging.INFO)  # the handlers filter further
    if log_file is not None:
        try:
            handler = logging.FileHandler(log_file, mode="a", encoding="utf-8")
        except OSError as err:
            raise UsageError(f"--log-file {log_file}: cannot open it: {err.strerror}") from None
        handler.setFormatter(logging.Formatter(LOG_FORMAT, DATE_FORMAT))
        handler.setLevel(logging.DEBUG if verbose else logging.INFO)
        root.addHandler(handler)
        _handlers.append(handler)
    for name in NOISY:
        logging.getLogger(name).setLevel(logging.DEBUG if verbose > 1 else logging.WARNING)


# ---------------------------------------------------------------------------------------------
# progress displays (the sdpbatch.execution.progress.Progress protocol)
# ---------------------------------------------------------------------------------------------


class TerminalBar:
    """A rich progress bar on the terminal; log lines print above it, never through it."""

    def __init__(self, console) -> None:
        self.console = console
        self.bar = None
        self.task = None
        self.total = 1

    def begin(self, label: str, total: int) -> None:
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TaskProgressColumn,
            TextColumn,
            TimeElapsedColumn,
        )

        self.end()
        self.total = max(1, total)
        self.bar = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            TaskProgressColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TextColumn("{task.fields[message]}"),
            console=self.console,
        )
        self.bar.start()
        self.task = self.bar.add_task(label, total=self.total, message="")

    def step(self, message: str) -> None:
        if self.bar is not None:
            done = min(self.total, self.bar.tasks[0].completed + 1)
            self.bar.update(self.task, completed=done, message=message[:60])

    def end(self) -> None:
        """Complete (100 %, even when the run settled in fewer steps) and stop the display."""
        if self.bar is not None:
            self.bar.update(self.task, completed=self.total, message="done")
            self.bar.stop()
            self.bar = None


class LogProgress:
    """Progress as plain timestamped log lines (output redirected to a file or a pipe)."""

    def __init__(self) -> None:
        self.label, self.total, self.done = "", 1, 0

    def begin(self, label: str, total: int) -> None:
        self.label, self.total, self.done = label, max(1, total), 0
        PROGRESS_LOG.info("%s: 0/%d started", self.label, self.total)

    def step(self, message: str) -> None:
        self.done = min(self.total, self.done + 1)
        PROGRESS_LOG.info("%s: %d/%d %s", self.label, self.done, self.total, message)

    def end(self) -> None:
        self.done = self.total
        PROGRESS_LOG.info("%s: %d/%d done", self.label, self.done, self.total)


def progress_display(args: argparse.Namespace):
    """The progress display of a command: a bar on a terminal, log lines when redirected,
    none with ``--no-progress`` or ``-q``."""
    from sdpbatch.execution.progress import NoProgress

    if getattr(args, "no_progress", False) or getattr(args, "quiet", False):
        return NoProgress()
    return TerminalBar(_console) if _console is not None else LogProgress()
