"""The SDP subarray Tango device, in-process (MultiDeviceTestContext), against a real etcd.

The device writes through its own etcd client and the test reads through another one, as
in the running system; every refused command must leave the database exactly as it was.
"""

from __future__ import annotations

import json
import queue
from collections.abc import Iterator
from pathlib import Path

import pytest
import tango
from tango.test_context import MultiDeviceTestContext

import etcd_fixture
from sdpbatch.control.configdb import Config
from sdpbatch.control.subarray.device import SDPSubarray, subarray_id_from_name
from sdpbatch.control.subarray.state_machine import ObsState
from waiting import wait_until

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
SEED = (EXAMPLES / "sbi-seed.json").read_text()
NAMES = ("mid_sdp/elt/subarray_1", "mid_sdp/elt/subarray_2")
etcd_server = etcd_fixture.etcd_server
etcd_clean = etcd_fixture.etcd_clean


@pytest.fixture
def devices(etcd_clean) -> Iterator[dict[str, tango.DeviceProxy]]:
    """Both subarray devices, served in this process, writing to the emptied etcd."""
    info = [{"class": SDPSubarray, "devices": [{"name": name} for name in NAMES]}]
    with MultiDeviceTestContext(info, process=False, timeout=30) as context:
        yield {name: context.get_device(name) for name in NAMES}


@pytest.fixture
def db(etcd_clean) -> Iterator[Config]:
    host, port = etcd_clean
    with Config("etcd3", host=host, port=port) as config:
        yield config


def snapshot(config: Config) -> dict[str, object]:
    """Every key and value in the database."""
    for txn in config.txn():
        return {key: txn.get(key) for key in txn.list_keys("/", recurse=True)}


def refused(call, *args) -> tango.DevError:
    with pytest.raises(tango.DevFailed) as err:
        call(*args)
    return err.value.args[0]


def seed(**change) -> dict:
    config = json.loads(SEED)
    config.update(change)
    return config


def test_subarray_id_from_device_name():
    assert subarray_id_from_name("mid_sdp/elt/subarray_1") == "01"
    assert subarray_id_from_name("mid_sdp/elt/subarray_12") == "12"
    with pytest.raises(ValueError, match="does not end in subarray_<N>"):
        subarray_id_from_name("mid_sdp/elt/master")


def test_seed_session_path_writes_the_intent(devices, db):
    d = devices[NAMES[0]]
    assert d.state() == tango.DevState.ON
    assert d.obsState == ObsState.EMPTY

    d.AssignResources(SEED)
    assert d.obsState == ObsState.IDLE
    assert json.loads(d.receiveAddresses) == {}  # no receive workflow: IDLE, not RESOURCING
    db_now = snapshot(db)
    sbi = db_now["/sb/sbi-mvp01-20200523-00000"]
    assert sbi["status"] == "ACTIVE"
    assert sbi["subarray_id"] == "01"
    assert sbi["pb_realtime"] == ["pb-mvp01-20200523-00000"]
    assert sbi["pb_batch"] == ["pb-mvp01-20200523-00001"]
    assert sbi["scan_types"] == json.loads(SEED)["scan_types"]
    batch = db_now["/pb/pb-mvp01-20200523-00001"]
    assert batch["sbi_id"] == "sbi-mvp01-20200523-00000"
    assert batch["workflow"] == {"type": "batch", "id": "batch_imaging", "version": "0.1.0"}
    assert batch["parameters"] == json.loads(SEED)["processing_blocks"][1]["parameters"]
    assert batch["dependencies"] == [{"pb_id": "pb-mvp01-20200523-00000", "type": ["none"]}]
    assert db_now["/subarray/01"] == {
        "state": "ON",
        "sbi_id": "sbi-mvp01-20200523-00000",
        "last_command": "AssignResources",
        "obs_state_target": "IDLE",
    }

    d.Configure(json.dumps({"scan_type": "science"}))
    assert (d.obsState, d.scanType) == (ObsState.READY, "science")
    d.Scan(json.dumps({"id": 42}))
    assert (d.obsState, d.scanID) == (ObsState.SCANNING, 42)
    assert snapshot(db)["/sb/sbi-mvp01-20200523-00000"]["scan_id"] == 42
    d.EndScan()
    assert d.obsState == ObsState.READY
    assert snapshot(db)["/sb/sbi-mvp01-20200523-00000"]["scan_id"] is None
    d.End()
    assert (d.obsState, d.scanType) == (ObsState.IDLE, "")
    assert snapshot(db)["/sb/sbi-mvp01-20200523-00000"]["current_scan_type"] is None

    d.ReleaseResources()
    assert d.obsState == ObsState.EMPTY
    db_now = snapshot(db)
    assert db_now["/sb/sbi-mvp01-20200523-00000"]["status"] == "FINISHED"
    assert db_now["/subarray/01"]["sbi_id"] is None
    assert db_now["/subarray/01"]["obs_state_target"] == "EMPTY"
    # the other subarray was not touched
    assert devices[NAMES[1]].obsState == ObsState.EMPTY
    assert "/subarray/02" not in db_now


def _bad_cases() -> dict[str, tuple[str, str, str]]:
    extra = seed()
    extra["processing_blocks"][1]["priority"] = 1
    unknown = seed()
    unknown["processing_blocks"][0]["workflow"]["id"] = "vis_receive"
    duplicate = seed()
    duplicate["processing_blocks"][1]["id"] = duplicate["processing_blocks"][0]["id"]
    missing = seed()
    del missing["processing_blocks"]
    return {
        "not JSON": ("{'id': 'sbi-1'", "JSON_ERROR", "Configuration is not valid JSON"),
        "missing processing_blocks": (
            json.dumps(missing),
            "VALIDATION_ERROR",
            "Configuration validation failed: at <top level>: 'processing_blocks' is a required "
            "property",
        ),
        "extra key in a block": (
            json.dumps(extra),
            "VALIDATION_ERROR",
            "Configuration validation failed: at processing_blocks/1: Additional properties "
            "are not allowed ('priority' was unexpected)",
        ),
        "unknown workflow": (
            json.dumps(unknown),
            "UNKNOWN_WORKFLOW",
            "Unknown workflow realtime:vis_receive:0.2.0 in processing block "
            "pb-mvp01-20200523-00000; known workflows: batch:batch_imaging:0.1.0, "
            "realtime:test_realtime:0.2.0, batch:test_dask:0.1.0",
        ),
        "duplicate ids": (
            json.dumps(duplicate),
            "DUPLICATE_ID",
            "Duplicate SBI ID or PB ID in configuration: pb-mvp01-20200523-00000",
        ),
    }


BAD = _bad_cases()


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_configuration_is_refused_and_writes_nothing(devices, db, case):
    text, reason, message = BAD[case]
    d = devices[NAMES[0]]
    before = snapshot(db)
    error = refused(d.AssignResources, text)
    assert error.reason == reason
    assert message in error.desc
    assert error.origin.endswith("subarray_1.AssignResources")
    assert snapshot(db) == before
    assert d.obsState == ObsState.EMPTY


def test_assign_twice_and_ids_taken_by_another_sbi(devices, db):
    d1, d2 = devices[NAMES[0]], devices[NAMES[1]]
    d1.AssignResources(SEED)
    before = snapshot(db)

    error = refused(d1.AssignResources, SEED)
    assert error.reason == "COMMAND_NOT_ALLOWED"
    assert "Command AssignResources not allowed when obsState is IDLE" in error.desc

    error = refused(d2.AssignResources, SEED)  # same SBI id on the other subarray
    assert error.desc == "Duplicate SBI ID or PB ID in configuration: sbi-mvp01-20200523-00000"

    other = seed(id="sbi-mvp01-20200523-00099")  # new SBI, but its PB ids are taken
    error = refused(d2.AssignResources, json.dumps(other))
    assert error.desc == "Duplicate SBI ID or PB ID in configuration: pb-mvp01-20200523-00000"

    assert snapshot(db) == before
    assert (d1.obsState, d2.obsState) == (ObsState.IDLE, ObsState.EMPTY)


def test_commands_in_the_wrong_state_write_nothing(devices, db):
    d = devices[NAMES[0]]
    before = snapshot(db)
    for call, args in (
        (d.ReleaseResources, ()),
        (d.Configure, ('{"scan_type": "science"}',)),
        (d.Scan, ('{"id": 1}',)),
        (d.End, ()),
        (d.ObsReset, ()),
        (d.On, ()),
    ):
        error = refused(call, *args)
        assert error.reason == "COMMAND_NOT_ALLOWED"
        assert "not allowed when" in error.desc
    assert snapshot(db) == before
    d.AssignResources(SEED)
    error = refused(d.Configure, '{"scan_type": "calibration"}')
    assert "unknown scan type calibration; known: science" in error.desc
    assert d.obsState == ObsState.IDLE


def test_off_and_restart_cancel_the_sbi(devices, db):
    d = devices[NAMES[0]]
    d.AssignResources(SEED)
    d.Off()
    assert (d.state(), d.obsState) == (tango.DevState.OFF, ObsState.EMPTY)
    db_now = snapshot(db)
    assert db_now["/sb/sbi-mvp01-20200523-00000"]["status"] == "CANCELLED"
    assert db_now["/subarray/01"]["state"] == "OFF"
    error = refused(d.AssignResources, SEED)
    assert "not allowed when the device is OFF" in error.desc

    d.On()
    small = (EXAMPLES / "sbi-small.json").read_text()
    d.AssignResources(small)
    d.Abort()
    assert d.obsState == ObsState.ABORTED
    d.ObsReset()
    assert d.obsState == ObsState.IDLE
    d.Abort()
    d.Restart()
    assert d.obsState == ObsState.EMPTY
    assert snapshot(db)["/sb/sbi-small-20200523-00000"]["status"] == "CANCELLED"


def test_obs_state_change_events(devices):
    d = devices[NAMES[0]]
    events: queue.Queue = queue.Queue()

    def on_event(event) -> None:
        if not event.err:
            events.put(ObsState(int(event.attr_value.value)))

    event_id = d.subscribe_event("obsState", tango.EventType.CHANGE_EVENT, on_event)
    try:
        d.AssignResources(SEED)
        d.Configure('{"scan_type": "science"}')
        d.End()
        d.ReleaseResources()
        expected = [
            ObsState.EMPTY,  # the current value, at subscription
            ObsState.RESOURCING,
            ObsState.IDLE,
            ObsState.CONFIGURING,
            ObsState.READY,
            ObsState.IDLE,
            ObsState.RESOURCING,
            ObsState.EMPTY,
        ]
        received = [events.get(timeout=5) for _ in expected]
        assert received == expected
    finally:
        d.unsubscribe_event(event_id)


def test_device_restart_restores_its_state_from_the_database(devices, db):
    d = devices[NAMES[0]]
    d.AssignResources(SEED)
    d.Configure('{"scan_type": "science"}')
    d.Init()  # delete_device + init_device: all in-memory state is rebuilt from the database
    assert (d.obsState, d.scanType) == (ObsState.READY, "science")
    d.End()
    d.ReleaseResources()
    assert snapshot(db)["/sb/sbi-mvp01-20200523-00000"]["status"] == "FINISHED"


@pytest.mark.parametrize("field", ["sky_model", "layout", "calibration_model"])
def test_untrusted_paths_are_refused_at_assign_resources(devices, db, field, tmp_path, monkeypatch):
    monkeypatch.setenv("SDPBATCH_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.delenv("SDPBATCH_ALLOWED_DIRS", raising=False)
    d = devices[NAMES[0]]
    before = snapshot(db)
    for value in ("/etc/passwd", "/etc/shadow", "../../../../../etc/passwd"):
        config = seed()
        config["processing_blocks"][1]["parameters"][field] = value
        error = refused(d.AssignResources, json.dumps(config))
        assert error.reason == "VALIDATION_ERROR"
        assert f"parameter '{field}'" in error.desc and "outside" in error.desc
        assert snapshot(db) == before and d.obsState == ObsState.EMPTY
    config = seed()  # the same field naming a file in the data root is accepted
    config["processing_blocks"][1]["parameters"][field] = "models/file.txt"
    d.AssignResources(json.dumps(config))
    assert d.obsState == ObsState.IDLE


def test_oversized_engine_is_refused_at_the_door(devices, db):
    d = devices[NAMES[0]]
    before = snapshot(db)
    config = seed()
    config["processing_blocks"][1]["parameters"]["n_workers"] = 200
    error = refused(d.AssignResources, json.dumps(config))
    assert error.reason == "VALIDATION_ERROR"
    assert "parameter 'n_workers'" in error.desc and "200 worker threads" in error.desc
    assert snapshot(db) == before and d.obsState == ObsState.EMPTY


def _wait_health(device, health, timeout: float) -> float:
    return wait_until(f"healthState {health!r}", lambda: device.healthState == health, timeout)


def test_health_follows_the_database_and_the_components(tmp_path, monkeypatch):
    from sdpbatch.control.subarray.state_machine import HealthState

    server = etcd_fixture.PrivateEtcd(tmp_path)
    server.start()
    for key, value in server.env.items():
        monkeypatch.setenv(key, value)
    info = [{"class": SDPSubarray, "devices": [{"name": NAMES[0]}]}]
    component = Config("etcd3", port=server.port, lease_ttl=2.0)
    try:
        with MultiDeviceTestContext(info, process=False, timeout=30) as context:
            d = context.get_device(NAMES[0])
            _wait_health(d, HealthState.DEGRADED, 10)  # no controller, no deployer yet
            assert "no controller and no deployer" in d.status()
            for txn in component.txn():
                for name in ("controller", "deployer"):
                    txn.register_component(f"{name}-1", {"name": name, "pid": 1})
            _wait_health(d, HealthState.OK, 10)
            server.kill()
            failed = _wait_health(d, HealthState.FAILED, 10)
            assert "configuration database unreachable" in d.status()
            server.start()
            back = _wait_health(d, HealthState.OK, 20)  # the components' lease survived
            d.AssignResources(SEED)  # and commands work again
            component.close()  # the components go away (their lease is revoked)
            gone = _wait_health(d, HealthState.DEGRADED, 10)
            print(
                f"\nsubarray health: FAILED {failed:.1f} s after etcd died, OK {back:.1f} s "
                f"after it was back, DEGRADED {gone:.1f} s after the components left"
            )
    finally:
        component.close()
        server.stop()
