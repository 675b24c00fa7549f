"""A run's checkpoint on disk: a folder ``<products>.checkpoint`` beside the product folder,
holding ``checkpoint.json`` (what the run was and where it stood) and ``arrays.npz`` (the
model, gains and model increments, a few MB: no visibilities).

The folder is written whole under a temporary name and renamed into place, so a checkpoint is
complete or absent; the one it replaces stays until the rename.  It is removed once the
products it leads to are written.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from sdpbatch.io.atomic import TEMP_MARK, atomic_path
from sdpbatch.io.qa import json_ready
from sdpbatch.vocabulary import CHECKPOINT_SUFFIX

META = "checkpoint.json"
ARRAYS = "arrays.npz"
FORMAT = "sdpbatch-checkpoint/1"


class CheckpointError(ValueError):
    """A checkpoint folder that cannot be read."""


@dataclass
class Checkpoint:
    """``meta``: JSON-compatible description; ``arrays``: named numpy arrays."""

    meta: dict[str, Any]
    arrays: dict[str, np.ndarray]


def checkpoint_dir(out_dir: str | Path) -> Path:
    """Where the checkpoint of the products in ``out_dir`` lives: beside it."""
    out_dir = Path(out_dir)
    return out_dir.with_name(out_dir.name + CHECKPOINT_SUFFIX)


def write_checkpoint(path: str | Path, checkpoint: Checkpoint) -> Path:
    """Write ``checkpoint`` as the folder ``path`` (atomically: complete or absent)."""
    path = Path(path)
    with atomic_path(path) as tmp:
        tmp.mkdir()
        np.savez(tmp / ARRAYS, **checkpoint.arrays)
        meta = {"format": FORMAT, **checkpoint.meta}
        (tmp / META).write_text(json.dumps(json_ready(meta), indent=1, sort_keys=True) + "\n")
    return path


def read_checkpoint(path: str | Path) -> Checkpoint | None:
    """The checkpoint in folder ``path``; None when there is none."""
    path = Path(path)
    if not path.exists():
        return None
    try:
        meta = json.loads((path / META).read_text())
        with np.load(path / ARRAYS, allow_pickle=False) as stored:
            arrays = {name: stored[name] for name in stored.files}
    except (OSError, ValueError, json.JSONDecodeError) as err:
        raise CheckpointError(f"{path}: not a readable checkpoint ({err})") from None
    if meta.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not an {FORMAT} checkpoint")
    return Checkpoint(meta=meta, arrays=arrays)


def remove_checkpoint(path: str | Path) -> None:
    """Remove the checkpoint folder ``path`` (nothing if absent)."""
    shutil.rmtree(path, ignore_errors=True)


def remove_checkpoint_partials(path: str | Path) -> None:
    """Remove what a run stopped while writing the checkpoint ``path`` left beside it."""
    path = Path(path)
    for partial in path.parent.glob(f"{path.name}{TEMP_MARK}*"):
        shutil.rmtree(partial, ignore_errors=True)
