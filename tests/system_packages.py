"""Debian packages that some tests need (SLURM, Chromium, WSClean), installed by the test set-up.

The README's test command runs the whole suite on a fresh machine; components the tests exercise
for real but that PyPI does not ship come from Debian's packages, installed here once per
machine.  Where they cannot be installed (not root, no apt, no package index), the caller skips
with the reason this returns.  Concurrent test sessions take turns through a lock file.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import subprocess
from pathlib import Path

LOCK = Path("/tmp/sdpbatch-test-apt.lock")
APT_ENV = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}


def _apt(*args: str, timeout: float) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["apt-get", *args],
        env=APT_ENV,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def ensure_debian_packages(packages: list[str], binaries: list[str]) -> str | None:
    """Install ``packages`` unless every one of ``binaries`` is already on the PATH.

    Returns None when the binaries are there, else the reason they cannot be (for a skip).
    """
    if all(shutil.which(b) for b in binaries):
        return None
    if shutil.which("apt-get") is None:
        return f"{', '.join(binaries)} not installed and there is no apt-get to install them"
    if os.geteuid() != 0:
        return f"{', '.join(binaries)} not installed and installing {packages} needs root"
    with open(LOCK, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if all(shutil.which(b) for b in binaries):  # another session installed them meanwhile
            return None
        args = ["install", "-y", "--no-install-recommends", *packages]
        result = _apt(*args, timeout=900)
        if result.returncode != 0:  # an empty or stale package index: refresh it once
            _apt("update", timeout=300)
            result = _apt(*args, timeout=900)
    missing = [b for b in binaries if shutil.which(b) is None]
    if result.returncode != 0 or missing:
        tail = (result.stderr or result.stdout).strip().splitlines()[-1:] or ["no output"]
        return f"apt-get install {' '.join(packages)} failed: {tail[0]}"
    return None
