"""Provenance of a product set: ``provenance.json`` beside the products, and its check.

The manifest says where every product came from and lets anyone check, later, that the
files are the ones written::

    {
      "format": "sdpbatch-provenance/1",
      "created": "2026-12-07T23:59:59Z",          # UTC, when the products were written
      "sdpbatch": "0.1.0", "python": "3.11.7", "platform": "Linux-...-x86_64",
      "dependencies": {"numpy": "2.4.6", "ducc0": "0.42.0", ...},
      "command": "sdpbatch ical ...",             # when known
      "parameters": {...},                        # as resolved (every field)
      "inputs": [{"path", "nrow", "nchan", "time_range", "metadata_sha256"}, ...],
      "engine": {"kind": "dask" | "in-process", "workers": [...]},
      "stages": {"read": 0.7, ...},               # seconds
      "resumed_from": [],                         # cycles a resumed run took up
      "files": {"<name>": {"bytes": 123, "sha256": "..."}, ...},
      "changes": [{"when", "what", "files"}, ...]  # later writes into listed files
    }

A MeasurementSet (a directory) is one entry whose checksum covers every file in it, in
sorted order, with their relative names.  :func:`verify` compares a folder with its manifest:
a file missing, changed (size or checksum) or not in the manifest.  A later step that writes
into a listed file on purpose (ICAL's MODEL_DATA and CORRECTED_DATA in the simulation's
MeasurementSets) records it with :func:`record_change`: the new checksums and what it did.
"""

from __future__ import annotations

import hashlib
import json
import platform
import sys
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import numpy as np

from sdpbatch.io.qa import json_ready, write_qa
from sdpbatch.vocabulary import PROVENANCE

FORMAT = "sdpbatch-provenance/1"
DEPENDENCIES = (
    "numpy",
    "scipy",
    "ducc0",
    "python-casacore",
    "astropy",
    "dask",
    "distributed",
    "h5py",
    "matplotlib",
)
"""The libraries whose versions decide the numbers in the products."""
_BLOCK = 1 << 20


class ProvenanceError(ValueError):
    """A folder without a readable manifest."""


def installed_version(package: str) -> str | None:
    """The installed version of ``package``, None when it is not installed."""
    try:
        return version(package)
    except PackageNotFoundError:
        return None


def _update_with_file(digest, path: Path) -> int:
    size = 0
    with path.open("rb") as stream:
        while chunk := stream.read(_BLOCK):
            digest.update(chunk)
            size += len(chunk)
    return size


def checksum(path: str | Path) -> dict[str, Any]:
    """``{"bytes", "sha256"}`` of a file, or of a directory's files (names and contents, in
    sorted order: a MeasurementSet is one entry)."""
    path = Path(path)
    digest = hashlib.sha256()
    if not path.is_dir():
        return {"bytes": _update_with_file(digest, path), "sha256": digest.hexdigest()}
    size = 0
    for member in sorted(p for p in path.rglob("*") if p.is_file()):
        digest.update(member.relative_to(path).as_posix().encode() + b"\0")
        size += _update_with_file(digest, member)
    return {"bytes": size, "sha256": digest.hexdigest()}


def metadata_identity(info: Any) -> dict[str, Any]:
    """What identifies an input window (a ``MeasurementSetInfo``) without its visibilities:
    its path, size and a checksum of its metadata (frequencies, stations, phase centre,
    times, correlations)."""
    described = {
        "field_id": info.field_id,
        "spw_id": info.spw_id,
        "nrow": info.nrow,
        "phase_centre": info.phase_centre,
        "frequency": info.frequency,
        "channel_width": info.channel_width,
        "correlations": info.correlations,
        "antenna_names": info.antenna_names,
        "antenna_positions": np.round(np.asarray(info.antenna_positions, dtype=float), 6),
        "time_range": info.time_range,
        "integration_time": info.integration_time,
    }
    text = json.dumps(json_ready(described), sort_keys=True)
    return {
        "path": str(info.path),
        "field_id": info.field_id,
        "spw_id": info.spw_id,
        "nrow": info.nrow,
        "nchan": len(info.frequency),
        "time_range": info.time_range,
        "metadata_sha256": hashlib.sha256(text.encode()).hexdigest(),
    }


def environment() -> dict[str, Any]:
    """The software that made the products."""
    return {
        "sdpbatch": installed_version("sdpbatch"),
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "dependencies": {name: installed_version(name) for name in DEPENDENCIES},
    }


def write_manifest(
    directory: str | Path,
    *,
    files: list[Path],
    record: dict[str, Any],
) -> Path:
    """Write ``provenance.json`` into ``directory``: the environment, ``record`` (parameters,
    inputs, engine, stages, ...) and the checksum of each of ``files`` (paths in
    ``directory``, named relative to it); atomic."""
    directory = Path(directory)
    manifest = {
        "format": FORMAT,
        "created": _now(),
        **environment(),
        **record,
        "files": {p.name: checksum(p) for p in sorted(files)},
    }
    return write_qa(directory / PROVENANCE, manifest)


def record_change(paths: list[Path], *, what: str) -> list[Path]:
    """After ``paths`` were written into on purpose: in each manifest that lists one of them
    (``provenance.json`` of its folder), its new checksum and a ``changes`` entry saying
    ``what``; the manifests updated (atomically).  Files no manifest lists are left alone."""
    by_folder: dict[Path, list[Path]] = {}
    for path in map(Path, paths):
        by_folder.setdefault(path.parent, []).append(path)
    updated = []
    for folder, members in sorted(by_folder.items()):
        if not (folder / PROVENANCE).is_file():
            continue
        manifest = read_manifest(folder)
        listed = [p for p in members if p.name in manifest["files"]]
        if not listed:
            continue
        for path in listed:
            manifest["files"][path.name] = checksum(path)
        manifest.setdefault("changes", []).append(
            {"when": _now(), "what": what, "files": sorted(p.name for p in listed)}
        )
        updated.append(write_qa(folder / PROVENANCE, manifest))
    return updated


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def read_manifest(directory: str | Path) -> dict[str, Any]:
    path = Path(directory) / PROVENANCE
    if not path.is_file():
        raise ProvenanceError(f"{directory}: no {PROVENANCE} (not a product set of sdpbatch?)")
    try:
        manifest = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ProvenanceError(f"{path}: not readable JSON ({err})") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise ProvenanceError(f"{path}: not an {FORMAT} manifest")
    if not isinstance(manifest.get("files"), dict):
        raise ProvenanceError(f"{path}: no 'files' entry")
    return manifest


@dataclass
class Verification:
    """What :func:`verify` found: file names per outcome."""

    good: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    changed: list[str] = field(default_factory=list)
    unlisted: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """Every listed file is there and unchanged (unlisted files are reported only)."""
        return not self.missing and not self.changed


def verify(directory: str | Path) -> Verification:
    """Compare ``directory`` with its ``provenance.json``."""
    directory = Path(directory)
    manifest = read_manifest(directory)
    found = Verification()
    for name, expected in sorted(manifest["files"].items()):
        path = directory / name
        if Path(name).name != name or not path.exists():
            found.missing.append(name)
        elif checksum(path) != {k: expected.get(k) for k in ("bytes", "sha256")}:
            found.changed.append(name)
        else:
            found.good.append(name)
    listed = set(manifest["files"]) | {PROVENANCE}
    found.unlisted = sorted(p.name for p in directory.iterdir() if p.name not in listed)
    return found
