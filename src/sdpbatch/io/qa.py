"""Quality-assessment record of a run as JSON (sorted keys, atomic)."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np

from sdpbatch.io.atomic import atomic_path


def json_ready(value: Any) -> Any:
    """JSON-compatible copy: numpy scalars/arrays to Python, non-finite floats to None."""
    if isinstance(value, dict):
        return {str(k): json_ready(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_ready(v) for v in value]
    if isinstance(value, np.ndarray):
        return json_ready(value.tolist())
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def write_qa(path: str | Path, qa: dict) -> Path:
    """Write ``qa`` to ``path`` as indented JSON with sorted keys (strict JSON: inf/nan -> null)."""
    text = json.dumps(json_ready(qa), indent=2, sort_keys=True, allow_nan=False) + "\n"
    path = Path(path)
    with atomic_path(path) as tmp:
        tmp.write_text(text)
    return path


def read_qa(path: str | Path) -> dict:
    """Read a QA file back."""
    return json.loads(Path(path).read_text())
