"""The whole system of ``sdpbatch up`` for the tests: the command line as a subprocess, the
client environment ``up`` prints, and a ``system`` fixture (a fresh data root brought up, and
always down afterwards).

Use it in a test module with ``from system_fixture import *  # noqa: F403`` (the tests folder
is on ``sys.path`` under pytest).
"""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

__all__ = ["system"]
CLIENT_ENV = ("TANGO_HOST", "SDP_CONFIG_HOST", "SDP_CONFIG_PORT", "SDP_CONFIG_BACKEND")


def sdpbatch(*args: str, env: dict[str, str], timeout: float = 180) -> str:
    """``sdpbatch ARGS`` in a subprocess with ``env``; its output (it must succeed)."""
    result = subprocess.run(
        [sys.executable, "-m", "sdpbatch.cli", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert result.returncode == 0, f"sdpbatch {' '.join(args)}:\n{result.stdout}{result.stderr}"
    return result.stdout


def exports(text: str) -> dict[str, str]:
    """The ``export NAME=value`` lines printed by ``sdpbatch up`` (values shell-quoted)."""
    lines = [line for line in text.splitlines() if line.startswith("export ")]
    return dict(shlex.split(line)[1].split("=", 1) for line in lines)


@pytest.fixture
def system(tmp_path, monkeypatch) -> Iterator[tuple[Path, dict[str, str]]]:
    """``sdpbatch up`` on a fresh data root; ``sdpbatch down`` afterwards whatever happens.

    Yields the data root and the environment of a client (``TANGO_HOST``, ``SDP_CONFIG_*``,
    also set in this process).
    """
    data_dir = tmp_path / "data"
    env = {k: v for k, v in os.environ.items() if k not in CLIENT_ENV}
    env["SDPBATCH_DATA_DIR"] = str(data_dir)
    try:
        printed = sdpbatch("up", "--data-dir", str(data_dir), env=env)
        client_env = exports(printed)
        assert set(CLIENT_ENV) <= set(client_env), printed
        for key in CLIENT_ENV:
            monkeypatch.setenv(key, client_env[key])
        yield data_dir, {**env, **client_env}
    finally:
        subprocess.run(
            [sys.executable, "-m", "sdpbatch.cli", "down", "--data-dir", str(data_dir)],
            env=env,
            capture_output=True,
            timeout=120,
        )
