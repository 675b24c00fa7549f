"""How long-running work reports progress: a small protocol, displays live in the CLI.

The pipelines (simulation, ICAL) call ``begin`` once with the number of steps they expect,
``step`` after each, and ``end`` when they are done (a run that finishes early, e.g. ICAL
settling before ``nmajor``, still ends at 100 %).  Log lines are written by the pipelines
themselves whatever the display; a display only decides how progress is shown.
"""

from __future__ import annotations

from typing import Protocol


class Progress(Protocol):
    """Receives the progress of one run."""

    def begin(self, label: str, total: int) -> None:
        """A run of ``total`` steps called ``label`` starts."""

    def step(self, message: str) -> None:
        """One step is done; ``message`` says what it was."""

    def end(self) -> None:
        """The run is done (complete, even when fewer than ``total`` steps ran)."""


class NoProgress:
    """Shows nothing (the default: the log lines are enough)."""

    def begin(self, label: str, total: int) -> None:
        pass

    def step(self, message: str) -> None:
        pass

    def end(self) -> None:
        pass
