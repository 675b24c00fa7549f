"""docs/itango-session.md's transcript is what a real session prints today.

``docs/record_itango_session.py`` records it (``sdpbatch up`` in a temporary data root, the
subarray driven through Tango as the page shows, ``sdpbatch down``): a whole session takes
20 to 30 s on 2 cores, so the test runs it for real rather than matching the page's lines
against the log format strings in the code.
"""

from __future__ import annotations

import importlib.util
import re
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "docs" / "record_itango_session.py"
_spec = importlib.util.spec_from_file_location("record_itango_session", SCRIPT)
recorder = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(recorder)


def test_the_check_sees_words_not_numbers():
    """The page's records compare equal to themselves, with any other numbers (durations,
    peaks, pids), and not with a log line worded otherwise."""
    page = recorder.PAGE.read_text()
    records = recorder.regions(page)
    assert set(records) == {"up", "session", "refusals"}
    assert recorder.differences(page, records) == ""
    renumbered = {name: re.sub(r"\d", "7", text) for name, text in records.items()}
    assert recorder.differences(page, renumbered) == ""
    session = records["session"]
    assert "INFO:batch_imaging:Deploying Dask EE\n" in session
    reworded = {**records, "session": session.replace("Deploying Dask EE", "Deploying Dask")}
    assert "+INFO:batch_imaging:Deploying Dask" in recorder.differences(page, reworded)
    assert recorder.replaced(page, records) == page  # writing what is there changes nothing


@pytest.mark.slow
def test_the_page_matches_a_session_run_now():
    result = subprocess.run(
        [sys.executable, str(SCRIPT), "--check"], capture_output=True, text=True, timeout=600
    )
    assert result.returncode == 0, (
        "docs/itango-session.md differs from a session run now (rewrite it with "
        f"`python3 docs/record_itango_session.py`):\n{result.stdout}{result.stderr}"
    )
