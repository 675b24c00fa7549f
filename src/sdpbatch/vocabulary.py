"""The words of the control plane, defined once: status values, deployment and buffer ids,
and the configuration database's keys.

Every component (controller, deployer, workflow runtime, subarray device, command line) uses
these names; none spells a status, an id pattern or a key by hand.

Keys (values are JSON, written with sorted keys)::

    /sb/<sbi_id>                 scheduling block instance
    /pb/<pb_id>                  processing block (fixed once created)
    /pb/<pb_id>/state            {status, resources_available, reason?, log?, ...}
    /pb/<pb_id>/owner            {pid, hostname, command} on the owner's lease
    /deploy/<deploy_id>          {id, type, args}
    /deploy/<deploy_id>/state    what the deployer made of it {status, processes, ...}
    /subarray/<NN>               {state, sbi_id, last_command, obs_state_target}
    /buffer/<name>               {name, pb_id, path, data_root, state, size_bytes, created}
    /resources/<pb_id>           resources a released block holds {threads, memory_bytes}
    /component/<name>-<pid>      a running controller or deployer, on its lease
"""

from __future__ import annotations

import enum


class BlockStatus(enum.StrEnum):
    """Status of a processing block (``/pb/<id>/state`` ``status``)."""

    STARTING = "STARTING"  # the controller deployed its workflow process
    WAITING = "WAITING"  # claimed by its workflow, waiting for resources/dependencies
    RUNNING = "RUNNING"
    FINISHED = "FINISHED"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"


ENDED = frozenset({BlockStatus.FINISHED, BlockStatus.FAILED, BlockStatus.CANCELLED})
"""A block in one of these states is over: nothing of it may run any more."""
ACTIVE_OWNED = frozenset({BlockStatus.WAITING, BlockStatus.RUNNING})
"""States in which a block must have a live owner (its workflow process)."""
UNSUCCESSFUL = frozenset({BlockStatus.FAILED, BlockStatus.CANCELLED})
"""Ended states that cancel the blocks depending on it."""
NEW = "NEW"
"""How status displays call a block that has no state yet (the controller has not seen it)."""


class SbiStatus(enum.StrEnum):
    """Status of a scheduling block instance (``/sb/<id>`` ``status``)."""

    ACTIVE = "ACTIVE"
    FINISHED = "FINISHED"
    CANCELLED = "CANCELLED"


SBI_ENDED = frozenset({SbiStatus.FINISHED, SbiStatus.CANCELLED})


class DeploymentStatus(enum.StrEnum):
    """What the deployer made of a deployment (``/deploy/<id>/state`` ``status``)."""

    STARTING = "STARTING"
    RUNNING = "RUNNING"
    EXITED = "EXITED"  # a process deployment whose process ended by itself
    FAILED = "FAILED"  # could not start, or a process of an engine died
    REMOVED = "REMOVED"  # the entry went while it was being started


DEPLOYMENT_ENDED = frozenset({DeploymentStatus.EXITED, DeploymentStatus.FAILED})


class DeploymentType(enum.StrEnum):
    """Kinds of deployment entry the deployer realises."""

    PROCESS = "process"
    DASK = "dask"
    BUFFER = "buffer"


# --- ids ------------------------------------------------------------------------------------


def block_deployment_prefix(pb_id: str) -> str:
    """Every process deployment of a block starts with this (its buffers do not)."""
    return f"proc-{pb_id}-"


def workflow_deployment_id(pb_id: str) -> str:
    """The deployment running the workflow process of block ``pb_id``."""
    return f"{block_deployment_prefix(pb_id)}workflow"


def dask_deployment_id(pb_id: str) -> str:
    """The Dask engine (scheduler and workers) of block ``pb_id``."""
    return f"{block_deployment_prefix(pb_id)}dask"


def pb_of_deployment(deploy_id: str) -> str | None:
    """The block a ``proc-<pb_id>-<what>`` deployment belongs to, or None."""
    if not deploy_id.startswith("proc-") or "-" not in deploy_id[5:]:
        return None
    return deploy_id[5:].rsplit("-", 1)[0]


def default_buffer_name(pb_id: str, kind: str) -> str:
    """The buffer a block uses when its parameters name none: ``buff-<pb_id>-<kind>``
    (kind ``vis``, ``img``, ``out``)."""
    return f"buff-{pb_id}-{kind}"


# --- keys -----------------------------------------------------------------------------------

SB = "/sb/"
PB = "/pb/"
DEPLOY = "/deploy/"
SUBARRAY = "/subarray/"
BUFFER = "/buffer/"
RESOURCES = "/resources/"
COMPONENT = "/component/"
TOP_LEVEL = (SB, PB, DEPLOY, SUBARRAY, BUFFER, RESOURCES, COMPONENT)
"""Every prefix the system writes under."""


def sbi_key(sbi_id: str) -> str:
    return SB + sbi_id


def pb_key(pb_id: str) -> str:
    return PB + pb_id


def pb_state_key(pb_id: str) -> str:
    return f"{PB}{pb_id}/state"


def pb_owner_key(pb_id: str) -> str:
    return f"{PB}{pb_id}/owner"


def deployment_key(deploy_id: str) -> str:
    return DEPLOY + deploy_id


def deployment_state_key(deploy_id: str) -> str:
    return f"{DEPLOY}{deploy_id}/state"


def subarray_key(subarray_id: str) -> str:
    return SUBARRAY + subarray_id


def buffer_key(name: str) -> str:
    return BUFFER + name


def allocation_key(pb_id: str) -> str:
    return RESOURCES + pb_id


def component_key(name: str) -> str:
    return COMPONENT + name


# --- product sets ---------------------------------------------------------------------------

PROVENANCE = "provenance.json"
"""The manifest of a product set (:mod:`sdpbatch.io.provenance`): where every file came from."""
CHECKPOINT_SUFFIX = ".checkpoint"
"""A run's checkpoint is the folder ``<products folder><CHECKPOINT_SUFFIX>`` beside it."""
