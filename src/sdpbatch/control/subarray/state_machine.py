"""The subarray's obsState machine: which command is allowed in which state, and where it goes.

Pure: no Tango, no database.  The table is the reference's command table; the device asks
:func:`plan_command` before it does anything and refuses the command with the returned text
when it is not allowed.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass


class ObsState(enum.IntEnum):
    """Observing state of a subarray (values as in the SKA control model)."""

    EMPTY = 0
    RESOURCING = 1
    IDLE = 2
    CONFIGURING = 3
    READY = 4
    SCANNING = 5
    ABORTING = 6
    ABORTED = 7
    RESETTING = 8
    FAULT = 9
    RESTARTING = 10


class Power(enum.Enum):
    """Device power state as far as the obsState machine cares (Tango ON / OFF)."""

    OFF = "OFF"
    ON = "ON"


class AdminMode(enum.IntEnum):
    """SKA administration mode (memorised by the device, not used by the machine)."""

    ONLINE = 0
    OFFLINE = 1
    MAINTENANCE = 2
    NOT_FITTED = 3
    RESERVED = 4


class HealthState(enum.IntEnum):
    """SKA health state."""

    OK = 0
    DEGRADED = 1
    FAILED = 2
    UNKNOWN = 3


ALL_STATES = frozenset(ObsState)


@dataclass(frozen=True)
class Rule:
    """One row of the command table.

    ``allowed``: obsStates the command is accepted in; ``power``: the device power state it
    needs (None: any); ``transient``: state shown while the command works (None: none);
    ``target``: obsState after success; ``power_after``: power state after success.
    """

    allowed: frozenset[ObsState]
    target: ObsState
    power: Power | None = Power.ON
    transient: ObsState | None = None
    power_after: Power | None = None


def _states(*states: ObsState) -> frozenset[ObsState]:
    return frozenset(states)


S = ObsState
COMMANDS: dict[str, Rule] = {
    "On": Rule(_states(S.EMPTY), S.EMPTY, power=Power.OFF, power_after=Power.ON),
    "Off": Rule(ALL_STATES, S.EMPTY, power=None, power_after=Power.OFF),
    "AssignResources": Rule(_states(S.EMPTY), S.IDLE, transient=S.RESOURCING),
    "ReleaseResources": Rule(_states(S.IDLE), S.EMPTY, transient=S.RESOURCING),
    "Configure": Rule(_states(S.IDLE, S.READY), S.READY, transient=S.CONFIGURING),
    "Scan": Rule(_states(S.READY), S.SCANNING),
    "EndScan": Rule(_states(S.SCANNING), S.READY),
    "End": Rule(_states(S.READY), S.IDLE),
    "Abort": Rule(
        _states(S.IDLE, S.CONFIGURING, S.READY, S.SCANNING), S.ABORTED, transient=S.ABORTING
    ),
    "ObsReset": Rule(_states(S.ABORTED, S.FAULT), S.IDLE, transient=S.RESETTING),
    "Restart": Rule(_states(S.ABORTED, S.FAULT), S.EMPTY, transient=S.RESTARTING),
}
"""The reference's command table."""


class CommandNotAllowed(Exception):
    """A command was given in a state that does not accept it; the text says which."""


@dataclass(frozen=True)
class Plan:
    """What an allowed command does to the state."""

    command: str
    transient: ObsState | None
    target: ObsState
    power_after: Power


def plan_command(command: str, obs_state: ObsState, power: Power) -> Plan:
    """Check ``command`` against the table; return its plan or raise :class:`CommandNotAllowed`.

    >>> plan_command("AssignResources", ObsState.EMPTY, Power.ON).target
    <ObsState.IDLE: 2>
    """
    try:
        rule = COMMANDS[command]
    except KeyError:
        raise CommandNotAllowed(
            f"Unknown command {command}; commands are: {', '.join(COMMANDS)}"
        ) from None
    if rule.power is not None and power is not rule.power:
        raise CommandNotAllowed(
            f"Command {command} not allowed when the device is {power.value}"
            + (" (run On first)" if power is Power.OFF else "")
        )
    if obs_state not in rule.allowed:
        allowed = ", ".join(s.name for s in sorted(rule.allowed))
        raise CommandNotAllowed(
            f"Command {command} not allowed when obsState is {obs_state.name} "
            f"(allowed in: {allowed})"
        )
    return Plan(
        command=command,
        transient=rule.transient,
        target=rule.target,
        power_after=rule.power_after or power,
    )
