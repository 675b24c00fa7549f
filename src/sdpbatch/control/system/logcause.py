"""The cause a component gave for failing, read from its log (one line for a person).

etcd writes JSON lines (``{"level": "panic", "msg": "failed to create WAL", "error": "no
space left on device", ...}``) followed by a Go stack; Python components end with a
traceback whose last line is the exception.  :func:`failure_cause` finds the last such
statement in the tail of a log.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

TAIL_BYTES = 64 * 1024
_SEVERE = ("fatal", "panic", "dpanic", "error")
_PYTHON_ERROR = re.compile(r"^([A-Za-z_][\w.]*(Error|Exception|Exit)|[\w.]+Failed)(: .*)?$")


def _tail(path: Path) -> list[str]:
    try:
        with open(path, "rb") as f:
            f.seek(0, 2)
            size = f.tell()
            f.seek(max(0, size - TAIL_BYTES))
            return f.read().decode(errors="replace").splitlines()
    except OSError:
        return []


def _json_cause(line: str) -> str | None:
    try:
        record = json.loads(line)
    except ValueError:
        return None
    if not isinstance(record, dict) or record.get("level") not in _SEVERE:
        return None
    message = str(record.get("msg", "")).strip()
    error = str(record.get("error", "")).strip()
    return f"{message}: {error}" if message and error else message or error or None


def failure_cause(log_path: str | Path) -> str | None:
    """The last error statement in the log: etcd's most severe JSON record (panic, fatal,
    error), else a Python exception line; None if there is none."""
    lines = _tail(Path(log_path))
    by_level: dict[str, str] = {}
    for line in lines:
        line = line.strip()
        if line.startswith("{"):
            cause = _json_cause(line)
            if cause:
                by_level[json.loads(line)["level"]] = cause
    for level in _SEVERE:
        if level in by_level:
            return by_level[level]
    for line in reversed(lines):
        line = line.strip()
        if _PYTHON_ERROR.match(line):
            return line
    return None
