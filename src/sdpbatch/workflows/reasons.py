"""Why a block failed, in words a person understands (the ``reason`` of a FAILED block)."""

from __future__ import annotations

import signal

from sdpbatch.control.admission import BlockRefused
from sdpbatch.io.space import DiskFull, is_disk_full
from sdpbatch.parameters import ParameterError
from sdpbatch.vocabulary import LOGS_DIR

MAX_REASON = 400  # characters: a reason is one line in `sdpbatch status`
_ENGINE_LOST = (
    "FutureCancelledError",
    "FuturesCancelledError",
    "CancelledError",
    "KilledWorker",
    "CommClosedError",
)


def _short(text: str) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= MAX_REASON else text[: MAX_REASON - 3] + "..."


def describe_failure(err: BaseException) -> str:
    """One line: what went wrong and, where it is known, what to do about it."""
    name, text = type(err).__name__, str(err)
    if isinstance(err, DiskFull):
        return str(err)
    if is_disk_full(err):
        return _short(f"no space left on device ({text})")
    if isinstance(err, SystemExit) and "signal" in text:
        signum = text.rsplit(" ", 1)[-1]
        label = signal.Signals(int(signum)).name if signum.isdigit() else signum
        return (
            f"stopped by {label}: the workflow process was told to stop (its deployer was "
            "stopped, or an operator stopped it)"
        )
    if isinstance(err, KeyboardInterrupt):
        return "stopped: the workflow process was interrupted"
    if isinstance(err, ParameterError | BlockRefused):
        return _short(f"refused: {text}")
    if name in _ENGINE_LOST or "scheduler-connection-lost" in text:
        return _short(
            f"the block's Dask engine stopped during the run ({name}: {text}); see the "
            f"deployment's log in the data root's {LOGS_DIR}/"
        )
    return _short(f"{name}: {text}")
