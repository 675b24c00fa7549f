"""Validation of the subarray commands' JSON arguments: schema first, then what a schema can't say.

The JSON Schemas live in ``sdpbatch/schemas/`` (``sbi.json`` for AssignResources,
``configure.json``, ``scan.json``).  After the schema, :func:`validate_sbi` checks duplicate
processing block ids, dependencies (known, acyclic), and every block with the one block check
(:func:`~sdpbatch.control.admission.admit_block`: known workflow, parameters, file parameters
confined to the data root and the allowed directories, resources against this machine's
resource model).  Every failure is a :class:`ConfigurationError` whose text says what is wrong
and where.
"""

from __future__ import annotations

import functools
import json
from importlib import resources
from pathlib import Path
from typing import Any

import jsonschema
import referencing
from jsonschema.exceptions import best_match

from sdpbatch.control.admission import BlockRefused, admit_block
from sdpbatch.control.resources import Capacity

SCHEMA_FILES = ("sbi.json", "configure.json", "scan.json")


class ConfigurationError(ValueError):
    """A command argument is not acceptable; ``reason`` is the short Tango error reason."""

    def __init__(self, reason: str, message: str):
        self.reason = reason
        super().__init__(message)


@functools.cache
def _registry() -> referencing.Registry:
    folder = resources.files("sdpbatch") / "schemas"
    registry = referencing.Registry()
    for name in SCHEMA_FILES:
        contents = json.loads((folder / name).read_text())
        registry = registry.with_resource(name, referencing.Resource.from_contents(contents))
    return registry


@functools.cache
def load_schema(name: str) -> dict[str, Any]:
    """The JSON Schema ``name`` (one of :data:`SCHEMA_FILES`) as a dict."""
    return _registry().contents(name)


def _validator(name: str) -> jsonschema.Draft202012Validator:
    return jsonschema.Draft202012Validator(load_schema(name), registry=_registry())


def _parse_json(text: str, what: str) -> Any:
    if not isinstance(text, str):
        raise ConfigurationError("JSON_ERROR", f"{what} must be a JSON string")
    try:
        return json.loads(text)
    except json.JSONDecodeError as err:
        raise ConfigurationError(
            "JSON_ERROR",
            f"{what} is not valid JSON: {err.msg} at line {err.lineno} column {err.colno}",
        ) from err


def check_schema(document: Any, schema_name: str) -> None:
    """Raise :class:`ConfigurationError` naming the path of the first (best) schema violation."""
    error = best_match(_validator(schema_name).iter_errors(document))
    if error is None:
        return
    path = "/".join(str(p) for p in error.absolute_path) or "<top level>"
    raise ConfigurationError(
        "VALIDATION_ERROR", f"Configuration validation failed: at {path}: {error.message}"
    )


def validate_sbi(
    text: str, *, data_root: Path | None = None, capacity: Capacity | None = None
) -> dict[str, Any]:
    """Parse and check an AssignResources argument; return the configuration dict.

    Checks, in order: JSON syntax, the ``sbi.json`` schema, unique processing block ids,
    each block (:func:`~sdpbatch.control.admission.admit_block` with ``data_root``, default
    ``$SDPBATCH_DATA_DIR`` else ./sdp-data, and ``capacity``, default this machine's) and the
    dependencies (on a block of this SBI, not on itself, no cycle).  Dependencies on blocks
    outside the SBI are returned by :func:`external_dependencies` for the caller to check
    against the database.
    """
    config = _parse_json(text, "Configuration")
    check_schema(config, "sbi.json")
    blocks = config["processing_blocks"]

    seen: set[str] = set()
    for pb in blocks:
        if pb["id"] in seen:
            raise ConfigurationError(
                "DUPLICATE_ID", f"Duplicate SBI ID or PB ID in configuration: {pb['id']}"
            )
        seen.add(pb["id"])
    if config["id"] in seen:
        raise ConfigurationError(
            "DUPLICATE_ID", f"Duplicate SBI ID or PB ID in configuration: {config['id']}"
        )
    scan_ids = [s["id"] for s in config["scan_types"]]
    duplicates = sorted({s for s in scan_ids if scan_ids.count(s) > 1})
    if duplicates:
        raise ConfigurationError(
            "VALIDATION_ERROR",
            f"Configuration validation failed: duplicate scan type id {duplicates[0]}",
        )

    if data_root is None:
        from sdpbatch.control.system.data_root import default_data_dir

        data_root = default_data_dir()
    for pb in blocks:
        _check_block(pb, data_root=Path(data_root).resolve(), capacity=capacity)
    _check_dependency_graph(blocks)
    return config


def _check_block(pb: dict[str, Any], *, data_root: Path, capacity: Capacity | None) -> None:
    try:
        admit_block(
            pb["id"], pb["workflow"], pb["parameters"], data_root=data_root, capacity=capacity
        )
    except BlockRefused as err:
        if err.field == "workflow":
            wf = pb["workflow"]
            raise ConfigurationError(
                "UNKNOWN_WORKFLOW",
                f"Unknown workflow {wf['type']}:{wf['id']}:{wf['version']} in processing "
                f"block {pb['id']}; {str(err).split('; ', 1)[-1]}",
            ) from None
        raise ConfigurationError(
            "VALIDATION_ERROR",
            f"Configuration validation failed: processing block {pb['id']}: {err}",
        ) from None


def _check_dependency_graph(blocks: list[dict[str, Any]]) -> None:
    """No block depends on itself, and the dependencies inside the SBI have no cycle."""
    inside = {pb["id"]: [d["pb_id"] for d in pb.get("dependencies", [])] for pb in blocks}
    for pb_id, deps in inside.items():
        if pb_id in deps:
            raise ConfigurationError(
                "VALIDATION_ERROR",
                f"Configuration validation failed: processing block {pb_id} depends on itself",
            )
    done: set[str] = set()

    def visit(pb_id: str, path: list[str]) -> None:
        if pb_id in path:
            cycle = " -> ".join([*path[path.index(pb_id) :], pb_id])
            raise ConfigurationError(
                "VALIDATION_ERROR",
                f"Configuration validation failed: dependency cycle {cycle}",
            )
        if pb_id in done or pb_id not in inside:
            return
        for dep in inside[pb_id]:
            visit(dep, [*path, pb_id])
        done.add(pb_id)

    for pb_id in inside:
        visit(pb_id, [])


def external_dependencies(config: dict[str, Any]) -> list[str]:
    """Ids of the blocks that the SBI's blocks depend on but that are not part of it."""
    inside = {pb["id"] for pb in config["processing_blocks"]}
    return sorted(
        {
            d["pb_id"]
            for pb in config["processing_blocks"]
            for d in pb.get("dependencies", [])
            if d["pb_id"] not in inside
        }
    )


def validate_configure(text: str, known_scan_types: list[str]) -> dict[str, Any]:
    """Parse and check a Configure argument ``{scan_type, new_scan_types?}``.

    ``scan_type`` must be one of ``known_scan_types`` or of the new ones.
    """
    config = _parse_json(text, "Configure argument")
    check_schema(config, "configure.json")
    new = [s["id"] for s in config.get("new_scan_types", [])]
    clash = sorted(set(new) & set(known_scan_types))
    if clash:
        raise ConfigurationError(
            "VALIDATION_ERROR",
            f"Configuration validation failed: new scan type {clash[0]} already exists",
        )
    if config["scan_type"] not in [*known_scan_types, *new]:
        raise ConfigurationError(
            "VALIDATION_ERROR",
            f"Configuration validation failed: unknown scan type {config['scan_type']}; "
            f"known: {', '.join([*known_scan_types, *new]) or 'none'}",
        )
    return config


def validate_scan(text: str) -> dict[str, Any]:
    """Parse and check a Scan argument ``{id: int}``."""
    config = _parse_json(text, "Scan argument")
    check_schema(config, "scan.json")
    return config
