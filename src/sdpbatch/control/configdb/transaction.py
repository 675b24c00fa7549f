"""One attempt of a configuration database transaction: recorded reads, buffered writes and
the entity methods (scheduling block instances, processing blocks, deployments, subarrays,
buffers, resources, components) under the keys of :mod:`sdpbatch.vocabulary`.

Created by :meth:`~sdpbatch.control.configdb.config.Config.txn`; see there for the loop.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from sdpbatch.control.configdb.backend import ConfigCollision, ConfigError, ConfigVanished, Put
from sdpbatch.control.configdb.ids import (
    check_buffer_id,
    check_deployment_id,
    check_id,
    check_pb_id,
    check_sbi_id,
    check_subarray_id,
)
from sdpbatch.vocabulary import (
    BUFFER,
    COMPONENT,
    DEPLOY,
    PB,
    RESOURCES,
    SB,
    SUBARRAY,
    DeploymentType,
    allocation_key,
    buffer_key,
    component_key,
    deployment_key,
    deployment_state_key,
    pb_key,
    pb_owner_key,
    pb_state_key,
    sbi_key,
    subarray_key,
)

if TYPE_CHECKING:
    from sdpbatch.control.configdb.config import Config

DEPLOYMENT_TYPES = tuple(DeploymentType)


def _dumps(value: Any) -> str:
    return json.dumps(value, sort_keys=True)


class Transaction:
    """One attempt of a transaction: recorded reads, buffered writes, entity methods."""

    def __init__(self, config: Config):
        self.config = config
        self._backend = config.backend
        self._reads: dict[str, int] = {}  # key -> mod_revision seen (0: absent)
        self._values: dict[str, str | None] = {}
        self._prefixes: dict[str, int] = {}  # prefix -> revision of the listing
        self._writes: dict[str, Put | None] = {}  # None: delete
        self._loop = False
        self._wait = False
        self._timeout: float | None = None

    # --- raw key access -------------------------------------------------------------------------

    def get(self, key: str) -> Any | None:
        """The JSON value at ``key``, or None."""
        raw = self._get_raw(key)
        return None if raw is None else json.loads(raw)

    def _get_raw(self, key: str) -> str | None:
        if key in self._writes:
            write = self._writes[key]
            return None if write is None else write.value
        if key not in self._values:
            kv, _ = self._backend.get(key)
            self._reads[key] = kv.mod_revision if kv else 0
            self._values[key] = kv.value if kv else None
        return self._values[key]

    def list_keys(self, prefix: str, *, recurse: bool = False) -> list[str]:
        """Keys under ``prefix`` (only direct children unless ``recurse``), sorted."""
        kvs, revision = self._backend.range(prefix)
        self._prefixes[prefix] = min(revision, self._prefixes.get(prefix, revision))
        keys = set()
        for kv in kvs:
            keys.add(kv.key)
            if kv.key not in self._values:
                self._values[kv.key] = kv.value
        for key, write in self._writes.items():
            if key.startswith(prefix):
                (keys.add if write is not None else keys.discard)(key)
        if not recurse:
            keys = {k for k in keys if "/" not in k[len(prefix) :]}
        return sorted(keys)

    def create(self, key: str, value: Any, *, lease: bool = False) -> None:
        """Write a new key; :class:`ConfigCollision` if it exists."""
        if self._get_raw(key) is not None:
            raise ConfigCollision(key)
        self._writes[key] = Put(_dumps(value), self.config.lease_id if lease else 0)

    def update(self, key: str, value: Any) -> None:
        """Replace an existing key's value; :class:`ConfigVanished` if it is missing."""
        if self._get_raw(key) is None:
            raise ConfigVanished(key)
        previous = self._writes.get(key)
        self._writes[key] = Put(_dumps(value), previous.lease if previous else 0)

    def delete(self, key: str, *, must_exist: bool = True) -> None:
        """Delete a key; :class:`ConfigVanished` if missing and ``must_exist``."""
        if self._get_raw(key) is None:
            if must_exist:
                raise ConfigVanished(key)
            return
        self._writes[key] = None

    def loop(self, *, wait: bool = False, timeout: float | None = None) -> None:
        """Commit, then run the body again (after a change of a key read, if ``wait``)."""
        self._loop, self._wait, self._timeout = True, wait, timeout

    def _commit(self) -> int | None:
        covered = tuple(self._prefixes)
        key_revisions = {k: r for k, r in self._reads.items() if not k.startswith(covered)}
        puts = {k: w for k, w in self._writes.items() if w is not None}
        deletes = [k for k, w in self._writes.items() if w is None]
        return self._backend.commit(
            key_revisions=key_revisions,
            prefix_revisions=self._prefixes,
            puts=puts,
            deletes=deletes,
        )

    # --- scheduling block instances -------------------------------------------------------------

    def create_sbi(self, sbi_id: str, sbi: dict) -> None:
        self.create(sbi_key(check_sbi_id(sbi_id)), sbi)

    def get_sbi(self, sbi_id: str) -> dict | None:
        return self.get(sbi_key(check_sbi_id(sbi_id)))

    def update_sbi(self, sbi_id: str, sbi: dict) -> None:
        self.update(sbi_key(check_sbi_id(sbi_id)), sbi)

    def list_sbis(self) -> list[str]:
        return [k[len(SB) :] for k in self.list_keys(SB)]

    # --- processing blocks ----------------------------------------------------------------------

    def create_pb(self, pb: dict) -> None:
        """Create a processing block (fixed once created); validates its structure."""
        pb = _normalise_pb(pb)
        self.create(pb_key(pb["id"]), pb)

    def get_pb(self, pb_id: str) -> dict | None:
        return self.get(pb_key(check_pb_id(pb_id)))

    def list_pbs(self) -> list[str]:
        return [k[len(PB) :] for k in self.list_keys(PB)]

    def delete_pb(self, pb_id: str) -> None:
        """Delete a block with its state and owner (for cleaning up)."""
        check_pb_id(pb_id)
        self.delete(pb_key(pb_id))
        for key in (pb_state_key(pb_id), pb_owner_key(pb_id)):
            self.delete(key, must_exist=False)

    def get_pb_state(self, pb_id: str) -> dict | None:
        return self.get(pb_state_key(check_pb_id(pb_id)))

    def create_pb_state(self, pb_id: str, state: dict) -> None:
        self.create(pb_state_key(check_pb_id(pb_id)), _check_state(state))

    def update_pb_state(self, pb_id: str, state: dict) -> None:
        self.update(pb_state_key(check_pb_id(pb_id)), _check_state(state))

    def get_pb_owner(self, pb_id: str) -> dict | None:
        return self.get(pb_owner_key(check_pb_id(pb_id)))

    def take_pb_ownership(self, pb_id: str) -> None:
        """Claim the block: create its owner key on this client's lease (collision if taken)."""
        key = pb_owner_key(check_pb_id(pb_id))
        if self.get(pb_key(pb_id)) is None:
            raise ConfigVanished(pb_key(pb_id), f"processing block {pb_id} does not exist")
        try:
            self.create(key, self.config.owner_info, lease=True)
        except ConfigCollision as err:
            raise ConfigCollision(key, f"processing block {pb_id} is already claimed") from err

    def is_pb_owner(self, pb_id: str) -> bool:
        return self.get_pb_owner(pb_id) == self.config.owner_info

    def new_pb_id(self, generator: str) -> str:
        """A free id ``pb-<generator>-<YYYYMMDD>-<NNNNN>`` (checked in this transaction)."""
        check_id("generator", generator)
        stem = f"pb-{generator}-{datetime.now(UTC):%Y%m%d}-"
        taken = [k[len(PB) + len(stem) :] for k in self.list_keys(pb_key(stem))]
        numbers = [int(n) for n in taken if n.isdigit()]
        return f"{stem}{max(numbers, default=0) + 1:05d}"

    # --- deployments ----------------------------------------------------------------------------

    def create_deployment(self, dep: dict) -> None:
        """Create ``/deploy/<id>`` = ``{id, type, args}``."""
        if not isinstance(dep, dict) or set(dep) - {"id", "type", "args"}:
            raise ConfigError("a deployment is a JSON object with keys id, type, args")
        check_deployment_id(dep.get("id"))
        if dep.get("type") not in DEPLOYMENT_TYPES:
            raise ConfigError(
                f"deployment {dep['id']}: unknown type {dep.get('type')!r}; "
                f"allowed: {', '.join(DEPLOYMENT_TYPES)}"
            )
        if not isinstance(dep.get("args", {}), dict):
            raise ConfigError(f"deployment {dep['id']}: args must be a JSON object")
        self.create(deployment_key(dep["id"]), {"args": {}, **dep})

    def get_deployment(self, deploy_id: str) -> dict | None:
        return self.get(deployment_key(check_deployment_id(deploy_id)))

    def list_deployments(self) -> list[str]:
        return [k[len(DEPLOY) :] for k in self.list_keys(DEPLOY)]

    def delete_deployment(self, deploy_id: str) -> None:
        self.delete(deployment_key(check_deployment_id(deploy_id)))

    def get_deployment_state(self, deploy_id: str) -> dict | None:
        """What the deployer made of a deployment (status, pids, addresses)."""
        return self.get(deployment_state_key(check_deployment_id(deploy_id)))

    def create_deployment_state(self, deploy_id: str, state: dict) -> None:
        self.create(deployment_state_key(check_deployment_id(deploy_id)), state)

    def update_deployment_state(self, deploy_id: str, state: dict) -> None:
        self.update(deployment_state_key(check_deployment_id(deploy_id)), state)

    def delete_deployment_state(self, deploy_id: str) -> None:
        self.delete(deployment_state_key(check_deployment_id(deploy_id)), must_exist=False)

    def list_deployment_states(self) -> list[str]:
        keys = self.list_keys(DEPLOY, recurse=True)
        return [k[len(DEPLOY) : -len("/state")] for k in keys if k.endswith("/state")]

    # --- subarrays ------------------------------------------------------------------------------

    def get_subarray(self, subarray_id: str) -> dict | None:
        return self.get(subarray_key(check_subarray_id(subarray_id)))

    def create_subarray(self, subarray_id: str, subarray: dict) -> None:
        self.create(subarray_key(check_subarray_id(subarray_id)), subarray)

    def update_subarray(self, subarray_id: str, subarray: dict) -> None:
        self.update(subarray_key(check_subarray_id(subarray_id)), subarray)

    def list_subarrays(self) -> list[str]:
        return [k[len(SUBARRAY) :] for k in self.list_keys(SUBARRAY)]

    # --- buffers and resources ----------------------------------------------------------------

    def get_buffer(self, name: str) -> dict | None:
        return self.get(buffer_key(check_buffer_id(name)))

    def create_buffer(self, name: str, record: dict) -> None:
        self.create(buffer_key(check_buffer_id(name)), record)

    def update_buffer(self, name: str, record: dict) -> None:
        self.update(buffer_key(check_buffer_id(name)), record)

    def delete_buffer(self, name: str) -> None:
        self.delete(buffer_key(check_buffer_id(name)))

    def list_buffers(self) -> list[str]:
        return [k[len(BUFFER) :] for k in self.list_keys(BUFFER)]

    def get_allocation(self, pb_id: str) -> dict | None:
        """Resources held by a block (``/resources/<pb_id>``)."""
        return self.get(allocation_key(check_pb_id(pb_id)))

    def create_allocation(self, pb_id: str, allocation: dict) -> None:
        self.create(allocation_key(check_pb_id(pb_id)), allocation)

    def delete_allocation(self, pb_id: str) -> None:
        self.delete(allocation_key(check_pb_id(pb_id)), must_exist=False)

    def list_allocations(self) -> dict[str, dict]:
        return {k[len(RESOURCES) :]: self.get(k) for k in self.list_keys(RESOURCES)}

    # --- components (controller, deployer) --------------------------------------------------

    def get_component(self, name: str) -> dict | None:
        """What a running component registered (``/component/<name>``), or None."""
        return self.get(component_key(check_id("component", name)))

    def register_component(self, name: str, info: dict) -> None:
        """Write ``/component/<name>`` on this client's lease: it vanishes when the
        component stops keeping its lease alive (it died, or lost the database for good)."""
        key = component_key(check_id("component", name))
        self._get_raw(key)  # recorded read: a concurrent registration conflicts
        self._writes[key] = Put(_dumps(info), self.config.lease_id)

    def list_components(self) -> dict[str, dict]:
        return {k[len(COMPONENT) :]: self.get(k) for k in self.list_keys(COMPONENT)}


def _check_state(state: dict) -> dict:
    if not isinstance(state, dict) or not isinstance(state.get("status"), str):
        raise ConfigError("a processing block state is a JSON object with a 'status' string")
    return state


def _normalise_pb(pb: dict) -> dict:
    """Check a processing block's structure; fill in sbi_id, parameters and dependencies."""
    if not isinstance(pb, dict):
        raise ConfigError("a processing block is a JSON object")
    unknown = set(pb) - {"id", "sbi_id", "workflow", "parameters", "dependencies"}
    if unknown:
        raise ConfigError(f"processing block: unknown keys {sorted(unknown)}")
    pb_id = check_pb_id(pb.get("id"))
    workflow = pb.get("workflow")
    if not (
        isinstance(workflow, dict)
        and set(workflow) == {"type", "id", "version"}
        and all(isinstance(v, str) and v for v in workflow.values())
    ):
        raise ConfigError(
            f"processing block {pb_id}: workflow must be {{type, id, version}} strings"
        )
    if pb.get("sbi_id") is not None:
        check_sbi_id(pb["sbi_id"])
    parameters = pb.get("parameters", {})
    if not isinstance(parameters, dict):
        raise ConfigError(f"processing block {pb_id}: parameters must be a JSON object")
    dependencies = pb.get("dependencies", [])
    if not isinstance(dependencies, list):
        raise ConfigError(f"processing block {pb_id}: dependencies must be a list")
    for dep in dependencies:
        if not isinstance(dep, dict) or set(dep) - {"pb_id", "type"}:
            raise ConfigError(f"processing block {pb_id}: a dependency is {{pb_id, type}}")
        check_pb_id(dep.get("pb_id"))
        if dep["pb_id"] == pb_id:
            raise ConfigError(f"processing block {pb_id} cannot depend on itself")
    return {
        "id": pb_id,
        "sbi_id": pb.get("sbi_id"),
        "workflow": workflow,
        "parameters": parameters,
        "dependencies": dependencies,
    }
