"""The words of the system, defined once: status values, deployment and buffer ids and the
buffer-name rule, the configuration database's keys, the data root's folders, the products'
file names and the addresses.

Every component (controller, deployer, workflow runtime, subarray device, pipeline, web page,
command line) uses these names; none spells a status, an id pattern, a key, a product file
name, a folder or an address by hand (``tests/test_vocabulary.py`` checks the source).

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
    /engine                      the system's execution engine {kind, address?, ...}
"""

from __future__ import annotations

import enum
import re


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
PENDING = "PENDING"
"""How status displays call a deployment the deployer has not realised yet (no state)."""
REMOVING = "REMOVING"
"""How status displays call a deployment whose entry is gone but whose state is still there."""


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


def deployment_display_status(entry: dict | None, state: dict | None) -> str:
    """The status a display shows for a deployment: its recorded status, else
    :data:`PENDING` (entry, no state yet) or :data:`REMOVING` (state, entry gone)."""
    if not entry:
        return REMOVING
    return (state or {}).get("status", PENDING)


class DeploymentType(enum.StrEnum):
    """Kinds of deployment entry the deployer realises."""

    PROCESS = "process"
    DASK = "dask"
    BUFFER = "buffer"


# --- ids ------------------------------------------------------------------------------------


PROCESS_DEPLOYMENT = "proc-"
"""How the id of every process deployment of a block starts: ``proc-<pb_id>-<what>``."""


def block_deployment_prefix(pb_id: str) -> str:
    """Every process deployment of a block starts with this (its buffers do not)."""
    return f"{PROCESS_DEPLOYMENT}{pb_id}-"


def workflow_deployment_id(pb_id: str) -> str:
    """The deployment running the workflow process of block ``pb_id``."""
    return f"{block_deployment_prefix(pb_id)}workflow"


def dask_deployment_id(pb_id: str) -> str:
    """The Dask engine (scheduler and workers) of block ``pb_id``."""
    return f"{block_deployment_prefix(pb_id)}dask"


def pb_of_deployment(deploy_id: str) -> str | None:
    """The block a ``proc-<pb_id>-<what>`` deployment belongs to, or None."""
    rest = deploy_id.removeprefix(PROCESS_DEPLOYMENT)
    if rest == deploy_id or "-" not in rest:
        return None
    return rest.rsplit("-", 1)[0]


def default_buffer_name(pb_id: str, kind: str) -> str:
    """The buffer a block uses when its parameters name none: ``buff-<pb_id>-<kind>``
    (kind ``vis``, ``img``, ``out``)."""
    return f"buff-{pb_id}-{kind}"


# --- the data root ---------------------------------------------------------------------------

LOGS_DIR = "logs"
"""The data root's folder of logs: ``logs/<deploy_id>.log`` of every deployment, the components'."""
DASK_DIR = "dask"
"""The data root's folder of Dask work directories: ``dask/<deploy_id>``."""
ETCD_DIR = "etcd"
TANGO_DIR = "tango"
RESERVED_DIRS = frozenset({LOGS_DIR, DASK_DIR, ETCD_DIR, TANGO_DIR, "run", "tmp", "state"})
"""Folders of the data root used by the system itself, never buffer names."""
BUFFER_NAME_ALLOWED = (
    "a safe directory name: letters, digits and '-', 1 to 96 characters, not starting with "
    f"'-', not one of {', '.join(sorted(RESERVED_DIRS))}"
)

BUFFER_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9-]{0,95}$")
"""A buffer name: one directory under the data root (no leading '-', no '.', no '/')."""


def is_buffer_name(name: object) -> bool:
    """True if ``name`` may name a buffer: :data:`BUFFER_NAME` and none of the data root's
    own folders (:data:`RESERVED_DIRS`, in any case)."""
    return (
        isinstance(name, str)
        and bool(BUFFER_NAME.fullmatch(name))
        and name.lower() not in RESERVED_DIRS
    )


def log_file_name(deploy_id: str) -> str:
    """The log of a deployment (or a component) in :data:`LOGS_DIR`."""
    return f"{deploy_id}.log"


# --- products ------------------------------------------------------------------------------

DEFAULT_PRODUCT_PREFIX = "ska_pipeline_ical"
"""How the ICAL products are named by default (the ``prefix`` parameter, WSClean's ``-name``)."""
QA_FILE = "qa.json"
"""The quality record of a product set (no prefix): its parameters hold the set's prefix, and
the pipeline moves it in last, so it always names a complete set."""
PRODUCT_SUFFIXES = {
    "restored": "_restored.fits",
    "residual": "_residual.fits",
    "deconvolved": "_deconvolved.fits",
    "restored_cube": "_restored_cube.fits",
    "residual_cube": "_residual_cube.fits",
    "deconvolved_cube": "_deconvolved_cube.fits",
    "gains": "_gains.h5",
    "preview": "_restored.png",
    "beam": "_beam.fits",
    "restored_pb": "_restored_pb.fits",
    "sources": "_sources.txt",
    "sources_pb": "_sources_pb.txt",
}
"""The file of each role of a product set, after its prefix.  Only with primary-beam
correction: ``beam`` (the average station power beam on the image grid, WSClean's
``-beam-0.fits``), ``restored_pb`` (the restored image divided by it, WSClean's
``-image-pb.fits``) and the clean model as component lists, ``sources`` with apparent and
``sources_pb`` with intrinsic fluxes (WSClean's ``-sources.txt`` and ``-sources-pb.txt``)."""


def product_files(prefix: str) -> dict[str, str]:
    """The file names of the product set named ``prefix``, by role (and ``qa``)."""
    return {**{role: prefix + end for role, end in PRODUCT_SUFFIXES.items()}, "qa": QA_FILE}


SIMULATION_FILE = "simulation.json"
"""The simulation's record beside its MeasurementSets: its parameters (so the station beam the
data were observed with), counts, the files it wrote (:mod:`sdpbatch.io.truth`)."""
TRUTH_SKYMODEL_FILE = "truth_skymodel.txt"
"""The simulation's sky as the visibilities hold it (:mod:`sdpbatch.io.truth`)."""
TRUTH_INTRINSIC_FILE = "truth_intrinsic_skymodel.txt"
"""The simulation's sky before the station beam (intrinsic fluxes)."""
CATALOGUE_FILE = "catalogue_skymodel.txt"
"""The simulation's catalogue of its field (the sky with a survey's errors)."""
TRUTH_GAINS_FILE = "truth_gains.h5"
"""The simulation's true station gains."""
TRUTH_IONOSPHERE_FILE = "truth_ionosphere.h5"
"""The simulation's true ionospheric phases per time, station and source (when it has one)."""
PROVENANCE = "provenance.json"
"""The manifest of a product set (:mod:`sdpbatch.io.provenance`): where every file came from."""
CHECKPOINT_SUFFIX = ".checkpoint"
"""A run's checkpoint is the folder ``<products folder><CHECKPOINT_SUFFIX>`` beside it."""


# --- addresses -------------------------------------------------------------------------------

LOOPBACK = "127.0.0.1"
"""The address every server of the system binds to unless told otherwise."""
LOOPBACK_NAMES = (LOOPBACK, "localhost")
"""The host names that mean this machine's loopback."""
ETCD_PORT = 2379
"""etcd's client port when none is given."""


# --- keys -----------------------------------------------------------------------------------

SB = "/sb/"
PB = "/pb/"
DEPLOY = "/deploy/"
SUBARRAY = "/subarray/"
BUFFER = "/buffer/"
RESOURCES = "/resources/"
COMPONENT = "/component/"
ENGINE = "/engine"
"""The key of the system's execution engine (one key, no children)."""
TOP_LEVEL = (SB, PB, DEPLOY, SUBARRAY, BUFFER, RESOURCES, COMPONENT, ENGINE)
"""Every prefix the system writes under (what a display of everything watches)."""


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
