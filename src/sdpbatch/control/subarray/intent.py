"""What the subarray commands write to the configuration database, as transaction bodies.

Each function takes an open transaction (``for txn in config.txn(): ...``), reads what it
needs and buffers its writes; the caller commits by leaving the loop body.  They have no side
effects outside the transaction, so a conflicting body can simply run again.  A refusal is a
:class:`~.schema.ConfigurationError` raised before anything is committed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sdpbatch.control.subarray.schema import ConfigurationError, external_dependencies
from sdpbatch.control.subarray.state_machine import ObsState, Power
from sdpbatch.vocabulary import SbiStatus


@dataclass(frozen=True)
class SubarrayRecord:
    """The ``/subarray/NN`` entry: ``{state, sbi_id, last_command, obs_state_target}``."""

    state: str  # Power.ON or Power.OFF (the value)
    sbi_id: str | None
    last_command: str
    obs_state_target: str  # name of the obsState the last command leads to

    def to_dict(self) -> dict[str, Any]:
        return {
            "state": self.state,
            "sbi_id": self.sbi_id,
            "last_command": self.last_command,
            "obs_state_target": self.obs_state_target,
        }


def write_subarray(txn, subarray_id: str, record: SubarrayRecord) -> None:
    """Create or replace the subarray's entry."""
    if txn.get_subarray(subarray_id) is None:
        txn.create_subarray(subarray_id, record.to_dict())
    else:
        txn.update_subarray(subarray_id, record.to_dict())


def read_subarray(txn, subarray_id: str) -> SubarrayRecord | None:
    """The subarray's entry, or None if it has never been written."""
    raw = txn.get_subarray(subarray_id)
    if raw is None:
        return None
    return SubarrayRecord(
        state=raw.get("state", Power.ON.value),
        sbi_id=raw.get("sbi_id"),
        last_command=raw.get("last_command", ""),
        obs_state_target=raw.get("obs_state_target", ObsState.EMPTY.name),
    )


def sbi_entry(config: dict[str, Any], subarray_id: str) -> dict[str, Any]:
    """The ``/sb/<id>`` value for a validated AssignResources configuration."""
    blocks = config["processing_blocks"]
    return {
        "id": config["id"],
        "subarray_id": subarray_id,
        "max_length": config["max_length"],
        "scan_types": config["scan_types"],
        "pb_realtime": [pb["id"] for pb in blocks if pb["workflow"]["type"] == "realtime"],
        "pb_batch": [pb["id"] for pb in blocks if pb["workflow"]["type"] == "batch"],
        "pb_receive_addresses": None,
        "current_scan_type": None,
        "scan_id": None,
        "status": SbiStatus.ACTIVE,
    }


def pb_entry(pb: dict[str, Any], sbi_id: str) -> dict[str, Any]:
    """The ``/pb/<id>`` value of one processing block of the configuration."""
    return {
        "id": pb["id"],
        "sbi_id": sbi_id,
        "workflow": pb["workflow"],
        "parameters": pb["parameters"],
        "dependencies": pb.get("dependencies", []),
    }


def assign_resources(txn, subarray_id: str, config: dict[str, Any]) -> None:
    """Create the SBI and its processing blocks, or refuse if an id is already taken."""
    if txn.get_sbi(config["id"]) is not None:
        raise ConfigurationError(
            "DUPLICATE_ID", f"Duplicate SBI ID or PB ID in configuration: {config['id']}"
        )
    for pb in config["processing_blocks"]:
        if txn.get_pb(pb["id"]) is not None:
            raise ConfigurationError(
                "DUPLICATE_ID", f"Duplicate SBI ID or PB ID in configuration: {pb['id']}"
            )
    for pb_id in external_dependencies(config):
        if txn.get_pb(pb_id) is None:
            raise ConfigurationError(
                "VALIDATION_ERROR",
                f"Configuration validation failed: dependency on unknown processing block "
                f"{pb_id} (neither in this SBI nor in the database)",
            )
    txn.create_sbi(config["id"], sbi_entry(config, subarray_id))
    for pb in config["processing_blocks"]:
        txn.create_pb(pb_entry(pb, config["id"]))


def end_sbi(txn, sbi_id: str | None, status: str) -> None:
    """Set an ACTIVE SBI's status to ``status`` (FINISHED or CANCELLED); others stay."""
    if sbi_id is None:
        return
    sbi = txn.get_sbi(sbi_id)
    if sbi is not None and sbi.get("status") == SbiStatus.ACTIVE:
        txn.update_sbi(sbi_id, {**sbi, "status": status})


def update_sbi(txn, sbi_id: str | None, **fields: Any) -> dict[str, Any] | None:
    """Change some fields of the SBI (scan type, scan id); returns the new value."""
    if sbi_id is None:
        return None
    sbi = txn.get_sbi(sbi_id)
    if sbi is None:
        raise ConfigurationError(
            "CONFIG_DB_ERROR", f"scheduling block instance {sbi_id} is missing from the database"
        )
    sbi = {**sbi, **fields}
    txn.update_sbi(sbi_id, sbi)
    return sbi
