"""The SDP subarray Tango device: a thin layer over the configuration database.

Every command does the same three steps: check the obsState machine (and its argument),
write the intent to the config DB in one transaction, then update obsState and push a change
event.  A refused command raises a Tango ``DevFailed`` whose description says what is wrong,
and has written nothing.  The device keeps no state the database does not also hold: on
(re)start it reads ``/subarray/NN`` back (and keeps trying while the database is away).

``healthState`` is watched by a thread every :data:`HEALTH_PERIOD` s: FAILED while the
configuration database cannot be reached, DEGRADED while it can but no processing controller
or no deployer is connected to it (``/component/<name>-<pid>`` keys, kept
by their leases), OK otherwise; the device's status says which.
"""

from __future__ import annotations

import json
import logging
import re
import threading
from collections.abc import Callable
from typing import Any

import tango
from tango import AttrWriteType, DevState
from tango.server import Device, attribute, command

from sdpbatch.control.configdb import Config, ConfigError
from sdpbatch.control.subarray import intent
from sdpbatch.control.subarray.intent import SubarrayRecord
from sdpbatch.control.subarray.schema import (
    ConfigurationError,
    validate_configure,
    validate_sbi,
    validate_scan,
)
from sdpbatch.control.subarray.state_machine import (
    AdminMode,
    CommandNotAllowed,
    HealthState,
    ObsState,
    Plan,
    Power,
    plan_command,
)
from sdpbatch.vocabulary import SbiStatus

LOG = logging.getLogger(__name__)
STABLE = {ObsState.EMPTY, ObsState.IDLE, ObsState.READY, ObsState.SCANNING, ObsState.ABORTED}
HEALTH_PERIOD = 1.0  # s between two looks at the database and the components
COMMAND_PATIENCE = 1.0  # s a command waits for an unreachable database (Tango clients: 3 s)
NEEDED_COMPONENTS = ("controller", "deployer")
SUBARRAY_NAME = re.compile(r"subarray_(\d{1,2})$")


def subarray_id_from_name(device_name: str) -> str:
    """``mid_sdp/elt/subarray_1`` -> ``"01"`` (the config DB's subarray id)."""
    match = SUBARRAY_NAME.search(device_name)
    if match is None or int(match.group(1)) == 0:
        raise ValueError(
            f"device name {device_name!r} does not end in subarray_<N> with N from 1 to 99"
        )
    return f"{int(match.group(1)):02d}"


class SDPSubarray(Device):
    """SDP subarray: takes scheduling block instances and writes them to the config DB."""

    # ------------------------------------------------------------------ attributes
    obsState = attribute(dtype=ObsState, access=AttrWriteType.READ, doc="observing state")
    adminMode = attribute(
        dtype=AdminMode, access=AttrWriteType.READ_WRITE, doc="administration mode"
    )
    healthState = attribute(dtype=HealthState, access=AttrWriteType.READ, doc="health")
    receiveAddresses = attribute(
        dtype=str, access=AttrWriteType.READ, doc="receive addresses of the SBI (JSON)"
    )
    scanType = attribute(dtype=str, access=AttrWriteType.READ, doc="current scan type")
    scanID = attribute(dtype=int, access=AttrWriteType.READ, doc="current scan id (0: none)")

    # ------------------------------------------------------------------ life cycle
    def init_device(self) -> None:
        super().init_device()
        self._subarray_id = subarray_id_from_name(self.get_name())
        self._obs_state = ObsState.EMPTY
        self._power = Power.ON
        self._admin_mode = AdminMode.ONLINE
        self._health = HealthState.OK
        self._health_text = ""
        self._sbi_id: str | None = None
        self._scan_type = ""
        self._scan_id = 0
        self.set_change_event("obsState", True, False)
        self._config = Config(patience=COMMAND_PATIENCE)
        self._restored = False
        self._try_restore()
        self._stop_health = threading.Event()
        self._health_thread = threading.Thread(
            target=self._watch_health, name="subarray-health", daemon=True
        )
        self._health_thread.start()

    def _try_restore(self) -> None:
        """Read the subarray back from the database; FAULT with the reason while it fails."""
        try:
            self._restore()
        except Exception as err:  # the device must still come up to say what is wrong
            LOG.warning("cannot read the configuration database: %s", err)
            self._health = HealthState.FAILED
            self.set_state(DevState.FAULT)
            self.set_status(f"Cannot use the configuration database: {err}")
            return
        self._restored = True
        self._show_power()

    def _watch_health(self) -> None:
        while not self._stop_health.wait(HEALTH_PERIOD):
            self.check_health()

    def check_health(self) -> HealthState:
        """One look: FAILED (database unreachable), DEGRADED (a component missing) or OK."""
        try:
            for txn in self._config.txn():
                components = txn.list_components()
        except (ConfigError, OSError) as err:
            health, text = HealthState.FAILED, f"configuration database unreachable: {err}"
        else:
            if not self._restored:
                self._try_restore()
            running = {(info or {}).get("name") for info in components.values()}
            missing = [c for c in NEEDED_COMPONENTS if c not in running]
            if missing:
                health = HealthState.DEGRADED
                text = f"no {' and no '.join(missing)} connected to the configuration database"
            else:
                health, text = HealthState.OK, ""
        if health != self._health:
            LOG.warning("healthState %s -> %s %s", self._health.name, health.name, text)
            self._health, self._health_text = health, text
            if self._restored:
                self._show_power()
        return health

    def delete_device(self) -> None:
        stop = getattr(self, "_stop_health", None)
        if stop is not None:
            stop.set()
            self._health_thread.join(timeout=2 * HEALTH_PERIOD)
        config = getattr(self, "_config", None)
        if config is not None:
            config.close()
            self._config = None

    def _restore(self) -> None:
        """Take power state, obsState and the SBI from the database (after a restart)."""
        for txn in self._config.txn():
            record = intent.read_subarray(txn, self._subarray_id)
            sbi = txn.get_sbi(record.sbi_id) if record and record.sbi_id else None
        if record is None:
            return
        self._power = Power.OFF if record.state == Power.OFF.value else Power.ON
        target = ObsState.__members__.get(record.obs_state_target, ObsState.EMPTY)
        self._obs_state = target if target in STABLE else ObsState.FAULT
        if self._obs_state is not ObsState.EMPTY and sbi is not None:
            self._sbi_id = sbi["id"]
            self._scan_type = sbi.get("current_scan_type") or ""
            self._scan_id = sbi.get("scan_id") or 0

    # ------------------------------------------------------------------ attribute access
    def read_obsState(self) -> ObsState:
        return self._obs_state

    def read_adminMode(self) -> AdminMode:
        return self._admin_mode

    def write_adminMode(self, value: int) -> None:
        self._admin_mode = AdminMode(value)

    def read_healthState(self) -> HealthState:
        return self._health

    def read_receiveAddresses(self) -> str:
        if self._sbi_id is None or not self._restored:
            return "{}"
        for txn in self._config.txn():
            sbi = txn.get_sbi(self._sbi_id)
        return json.dumps((sbi or {}).get("pb_receive_addresses") or {}, sort_keys=True)

    def read_scanType(self) -> str:
        return self._scan_type

    def read_scanID(self) -> int:
        return self._scan_id

    # ------------------------------------------------------------------ commands
    @command
    def On(self) -> None:
        """Power on (EMPTY)."""
        self._execute("On", None)

    @command
    def Off(self) -> None:
        """Power off (EMPTY); cancels the assigned SBI."""
        sbi_id = self._sbi_id
        self._execute(
            "Off", lambda txn: intent.end_sbi(txn, sbi_id, SbiStatus.CANCELLED), clear=True
        )

    @command(dtype_in=str, doc_in="scheduling block instance configuration (JSON)")
    def AssignResources(self, config_text: str) -> None:
        """Create the SBI and its processing blocks (EMPTY -> IDLE)."""
        self._check("AssignResources")
        config = self._validated(lambda: validate_sbi(config_text), "AssignResources")
        self._execute(
            "AssignResources",
            lambda txn: intent.assign_resources(txn, self._subarray_id, config),
            sbi_id=config["id"],
        )

    @command
    def ReleaseResources(self) -> None:
        """End the SBI (status FINISHED) (IDLE -> EMPTY)."""
        sbi_id = self._sbi_id
        self._execute(
            "ReleaseResources",
            lambda txn: intent.end_sbi(txn, sbi_id, SbiStatus.FINISHED),
            clear=True,
        )

    @command(dtype_in=str, doc_in='{"scan_type": ..., "new_scan_types": [...]} (JSON)')
    def Configure(self, argument: str) -> None:
        """Select the scan type (IDLE/READY -> READY)."""
        self._check("Configure")
        known = [s["id"] for s in self._current_sbi().get("scan_types", [])]
        config = self._validated(lambda: validate_configure(argument, known), "Configure")
        sbi_id = self._sbi_id

        def write(txn) -> None:
            sbi = txn.get_sbi(sbi_id) or {}
            scan_types = [*sbi.get("scan_types", []), *config.get("new_scan_types", [])]
            intent.update_sbi(
                txn, sbi_id, scan_types=scan_types, current_scan_type=config["scan_type"]
            )

        self._execute("Configure", write)
        self._scan_type = config["scan_type"]

    @command(dtype_in=str, doc_in='{"id": <scan id>} (JSON)')
    def Scan(self, argument: str) -> None:
        """Start a scan (READY -> SCANNING)."""
        self._check("Scan")
        scan = self._validated(lambda: validate_scan(argument), "Scan")
        sbi_id = self._sbi_id
        self._execute("Scan", lambda txn: intent.update_sbi(txn, sbi_id, scan_id=scan["id"]))
        self._scan_id = scan["id"]

    @command
    def EndScan(self) -> None:
        """End the scan (SCANNING -> READY)."""
        sbi_id = self._sbi_id
        self._execute("EndScan", lambda txn: intent.update_sbi(txn, sbi_id, scan_id=None))
        self._scan_id = 0

    @command
    def End(self) -> None:
        """Clear the scan type (READY -> IDLE)."""
        self._clear_scan("End")

    @command
    def Abort(self) -> None:
        """Abort what is going on (IDLE..SCANNING -> ABORTED)."""
        self._execute("Abort", None)

    @command
    def ObsReset(self) -> None:
        """Back to IDLE with the SBI kept (ABORTED/FAULT -> IDLE)."""
        self._clear_scan("ObsReset")

    @command
    def Restart(self) -> None:
        """Cancel the SBI and go to EMPTY (ABORTED/FAULT -> EMPTY)."""
        sbi_id = self._sbi_id
        self._execute(
            "Restart", lambda txn: intent.end_sbi(txn, sbi_id, SbiStatus.CANCELLED), clear=True
        )

    def _clear_scan(self, name: str) -> None:
        """Command ``name`` that leaves the SBI without scan type or scan (End, ObsReset)."""
        sbi_id = self._sbi_id
        self._execute(
            name,
            lambda txn: intent.update_sbi(txn, sbi_id, current_scan_type=None, scan_id=None),
        )
        self._scan_type, self._scan_id = "", 0

    # ------------------------------------------------------------------ the three steps
    def _check(self, name: str) -> Plan:
        """Step 1: is the command allowed now?  Throws DevFailed with the reason if not."""
        if not self._restored:
            self._throw("CONFIG_DB_ERROR", f"Command {name} refused: {self.get_status()}", name)
        try:
            return plan_command(name, self._obs_state, self._power)
        except CommandNotAllowed as err:
            self._throw("COMMAND_NOT_ALLOWED", str(err), name)

    def _validated(self, validate: Callable[[], dict[str, Any]], name: str) -> dict[str, Any]:
        try:
            return validate()
        except ConfigurationError as err:
            self._throw(err.reason, str(err), name)

    def _execute(
        self,
        name: str,
        write: Callable[[Any], None] | None,
        *,
        sbi_id: str | None = None,
        clear: bool = False,
    ) -> None:
        """Steps 2 and 3: write the intent in one transaction, then move obsState.

        ``sbi_id``: the SBI assigned from now on (AssignResources); ``clear``: the command
        ends the SBI.  The subarray entry is written in the same transaction.
        """
        plan = self._check(name)
        sbi_after = None if clear else (sbi_id or self._sbi_id)
        record = SubarrayRecord(plan.power_after.value, sbi_after, name, plan.target.name)
        before = self._obs_state
        if plan.transient is not None:
            self._set_obs_state(plan.transient)
        try:
            for txn in self._config.txn():
                if write is not None:
                    write(txn)
                intent.write_subarray(txn, self._subarray_id, record)
        except ConfigurationError as err:
            self._set_obs_state(before)
            self._throw(err.reason, str(err), name)
        except Exception as err:
            self._set_obs_state(before)
            LOG.exception("%s failed", name)
            self._throw(
                "CONFIG_DB_ERROR",
                f"Command {name} failed writing to the configuration database "
                f"({type(err).__name__}: {err}); nothing was changed",
                name,
            )
        self._power = plan.power_after
        self._sbi_id = sbi_after
        if clear:
            self._scan_type, self._scan_id = "", 0
        self._show_power()
        self._set_obs_state(plan.target)

    # ------------------------------------------------------------------ helpers
    def _current_sbi(self) -> dict[str, Any]:
        if self._sbi_id is None:
            return {}
        for txn in self._config.txn():
            sbi = txn.get_sbi(self._sbi_id)
        return sbi or {}

    def _set_obs_state(self, state: ObsState) -> None:
        self._obs_state = state
        self.push_change_event("obsState", state)

    def _show_power(self) -> None:
        note = f"; {self._health_text}" if self._health_text else ""
        if self._power is Power.ON:
            self.set_state(DevState.ON)
            self.set_status(f"Subarray {self._subarray_id} is ON{note}")
        else:
            self.set_state(DevState.OFF)
            self.set_status(f"Subarray {self._subarray_id} is OFF{note}")

    def _throw(self, reason: str, description: str, name: str) -> None:
        LOG.info("%s refused: %s", name, description)
        tango.Except.throw_exception(reason, description, f"{self.get_name()}.{name}")
