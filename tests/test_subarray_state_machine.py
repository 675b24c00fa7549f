"""The subarray's obsState machine and its configuration validation (pure, no Tango, no DB)."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest

from sdpbatch.control.subarray.schema import (
    ConfigurationError,
    external_dependencies,
    validate_configure,
    validate_sbi,
    validate_scan,
)
from sdpbatch.control.subarray.state_machine import (
    COMMANDS,
    CommandNotAllowed,
    ObsState,
    Power,
    plan_command,
)
from sdpbatch.control.workflow_catalogue import (
    KNOWN_WORKFLOWS,
    find_workflow,
    known_workflow_keys,
)
from sdpbatch.workflows.registry import TARGETS, catalog, workflow_function

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
S = ObsState

# The reference's command table, written out independently of the module's table.
ALLOWED = {
    "AssignResources": ({S.EMPTY}, S.IDLE),
    "ReleaseResources": ({S.IDLE}, S.EMPTY),
    "Configure": ({S.IDLE, S.READY}, S.READY),
    "Scan": ({S.READY}, S.SCANNING),
    "EndScan": ({S.SCANNING}, S.READY),
    "End": ({S.READY}, S.IDLE),
    "Abort": ({S.IDLE, S.CONFIGURING, S.READY, S.SCANNING}, S.ABORTED),
    "ObsReset": ({S.ABORTED, S.FAULT}, S.IDLE),
    "Restart": ({S.ABORTED, S.FAULT}, S.EMPTY),
    "Off": (set(ObsState), S.EMPTY),
}


def test_enum_values_match_the_control_model():
    assert [(s.name, s.value) for s in ObsState] == [
        ("EMPTY", 0),
        ("RESOURCING", 1),
        ("IDLE", 2),
        ("CONFIGURING", 3),
        ("READY", 4),
        ("SCANNING", 5),
        ("ABORTING", 6),
        ("ABORTED", 7),
        ("RESETTING", 8),
        ("FAULT", 9),
        ("RESTARTING", 10),
    ]


@pytest.mark.parametrize("command", sorted(ALLOWED))
@pytest.mark.parametrize("state", list(ObsState))
def test_every_command_in_every_state(command, state):
    allowed, target = ALLOWED[command]
    if state in allowed:
        plan = plan_command(command, state, Power.ON)
        assert plan.target is target
        assert plan.power_after is (Power.OFF if command == "Off" else Power.ON)
    else:
        with pytest.raises(CommandNotAllowed) as err:
            plan_command(command, state, Power.ON)
        assert f"Command {command} not allowed when obsState is {state.name}" in str(err.value)


def test_table_covers_all_reference_commands():
    assert set(COMMANDS) == set(ALLOWED) | {"On"}


def test_power():
    assert plan_command("On", S.EMPTY, Power.OFF).power_after is Power.ON
    with pytest.raises(CommandNotAllowed, match="Command On not allowed when the device is ON"):
        plan_command("On", S.EMPTY, Power.ON)
    with pytest.raises(
        CommandNotAllowed, match="AssignResources not allowed when the device is OFF"
    ):
        plan_command("AssignResources", S.EMPTY, Power.OFF)
    assert plan_command("Off", S.EMPTY, Power.OFF).power_after is Power.OFF
    with pytest.raises(CommandNotAllowed, match="Unknown command Dance"):
        plan_command("Dance", S.EMPTY, Power.ON)


def test_transient_states():
    assert plan_command("AssignResources", S.EMPTY, Power.ON).transient is S.RESOURCING
    assert plan_command("Abort", S.READY, Power.ON).transient is S.ABORTING
    assert plan_command("Scan", S.READY, Power.ON).transient is None


# --- AssignResources configuration -----------------------------------------------------------


def seed_config() -> dict:
    return json.loads((EXAMPLES / "sbi-seed.json").read_text())


def test_examples_are_valid():
    config = validate_sbi((EXAMPLES / "sbi-seed.json").read_text())
    assert config["id"] == "sbi-mvp01-20200523-00000"
    assert [pb["workflow"]["id"] for pb in config["processing_blocks"]] == [
        "test_realtime",
        "batch_imaging",
    ]
    small = validate_sbi((EXAMPLES / "sbi-small.json").read_text())
    assert {pb["id"] for pb in small["processing_blocks"]}.isdisjoint(
        pb["id"] for pb in config["processing_blocks"]
    )
    assert external_dependencies(config) == []


def _broken(change) -> str:
    config = seed_config()
    change(config)
    return json.dumps(config)


BAD = {
    "not json": ("{ not json", "JSON_ERROR", "Configuration is not valid JSON"),
    "missing processing_blocks": (
        _broken(lambda c: c.pop("processing_blocks")),
        "VALIDATION_ERROR",
        "Configuration validation failed: at <top level>: 'processing_blocks' is a required",
    ),
    "no processing blocks": (
        _broken(lambda c: c.update(processing_blocks=[])),
        "VALIDATION_ERROR",
        "at processing_blocks:",
    ),
    "extra key in a block": (
        _broken(lambda c: c["processing_blocks"][1].update(colour="red")),
        "VALIDATION_ERROR",
        "at processing_blocks/1: Additional properties are not allowed ('colour' was unexpected)",
    ),
    "bad pb id": (
        _broken(lambda c: c["processing_blocks"][0].update(id="pb/../x")),
        "VALIDATION_ERROR",
        "at processing_blocks/0/id:",
    ),
    "empty dependency type": (
        _broken(lambda c: c["processing_blocks"][1]["dependencies"][0].update(type=[])),
        "VALIDATION_ERROR",
        "at processing_blocks/1/dependencies/0/type:",
    ),
    "channel without count": (
        _broken(lambda c: c["scan_types"][0]["channels"][0].pop("count")),
        "VALIDATION_ERROR",
        "at scan_types/0/channels/0: 'count' is a required property",
    ),
    "unknown workflow": (
        _broken(lambda c: c["processing_blocks"][1]["workflow"].update(version="9.9.9")),
        "UNKNOWN_WORKFLOW",
        "Unknown workflow batch:batch_imaging:9.9.9 in processing block pb-mvp01-20200523-00001",
    ),
    "duplicate pb ids": (
        _broken(lambda c: c["processing_blocks"][1].update(id="pb-mvp01-20200523-00000")),
        "DUPLICATE_ID",
        "Duplicate SBI ID or PB ID in configuration: pb-mvp01-20200523-00000",
    ),
    "self dependency": (
        _broken(
            lambda c: c["processing_blocks"][0].update(
                dependencies=[{"pb_id": "pb-mvp01-20200523-00000", "type": ["none"]}]
            )
        ),
        "VALIDATION_ERROR",
        "depends on itself",
    ),
    "cycle": (
        _broken(
            lambda c: c["processing_blocks"][0].update(
                dependencies=[{"pb_id": "pb-mvp01-20200523-00001", "type": ["none"]}]
            )
        ),
        "VALIDATION_ERROR",
        "dependency cycle",
    ),
    "bad batch parameter": (
        _broken(lambda c: c["processing_blocks"][1]["parameters"].update(nfreqwin=0)),
        "VALIDATION_ERROR",
        "processing block pb-mvp01-20200523-00001: parameter 'nfreqwin'",
    ),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_configurations_are_refused_with_clear_text(case):
    text, reason, message = BAD[case]
    with pytest.raises(ConfigurationError) as err:
        validate_sbi(text)
    assert err.value.reason == reason
    assert message in str(err.value)


def test_external_dependencies_are_reported():
    config = seed_config()
    config["processing_blocks"][1]["dependencies"].append(
        {"pb_id": "pb-elsewhere-00001", "type": ["visibilities"]}
    )
    assert external_dependencies(validate_sbi(json.dumps(config))) == ["pb-elsewhere-00001"]


def test_configure_and_scan_arguments():
    assert validate_configure('{"scan_type": "science"}', ["science"])["scan_type"] == "science"
    new = {"scan_type": "cal", "new_scan_types": [{"id": "cal"}]}
    assert validate_configure(json.dumps(new), ["science"])["new_scan_types"] == [{"id": "cal"}]
    with pytest.raises(ConfigurationError, match="unknown scan type calibration; known: science"):
        validate_configure('{"scan_type": "calibration"}', ["science"])
    with pytest.raises(ConfigurationError, match="new scan type science already exists"):
        validate_configure(
            '{"scan_type": "science", "new_scan_types": [{"id": "science"}]}', ["science"]
        )
    assert validate_scan('{"id": 7}') == {"id": 7}
    with pytest.raises(ConfigurationError, match="at id: 'seven' is not of type 'integer'"):
        validate_scan('{"id": "seven"}')


def test_workflow_catalogue():
    assert known_workflow_keys()[:2] == [
        "batch:batch_imaging:0.1.0",
        "realtime:test_realtime:0.2.0",
    ]
    batch = {"type": "batch", "id": "batch_imaging", "version": "0.1.0"}
    assert find_workflow(batch).batch_parameters
    assert find_workflow({**batch, "version": "0.2.0"}) is None
    assert find_workflow({"type": "batch"}) is None


def test_config_is_not_modified_by_validation():
    config = seed_config()
    before = copy.deepcopy(config)
    validate_sbi(json.dumps(config))
    assert config == before


def test_catalogue_matches_the_workflow_registry():
    """The device refuses what the controller could not run, and nothing else."""
    assert sorted(TARGETS) == sorted(known_workflow_keys())
    assert sorted(catalog()) == sorted(known_workflow_keys())
    for spec in KNOWN_WORKFLOWS:
        assert callable(workflow_function(spec)), spec.key
