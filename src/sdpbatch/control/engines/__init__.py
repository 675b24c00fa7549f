"""Execution engines: where the Dask engine of a processing block runs.

Chosen when the system starts (``sdpbatch up --engine local|slurm|scheduler=ADDRESS``) and
recorded in the configuration database under ``/engine``; the deployer realises ``dask``
deployments on it (:class:`Engines`), the controller sizes blocks by its capacity
(:class:`EngineCapacity`), ``sdpbatch status`` shows it (:func:`engine_status`).

- ``local`` (:mod:`.local`): scheduler and workers as processes of this machine;
- ``scheduler=ADDRESS`` (:mod:`.scheduler`): an existing Dask cluster, nothing started;
- ``slurm`` (:mod:`.slurm`): the workers are SLURM jobs, the scheduler a local process.

The workflows do not know which: they ask for a Dask engine and get a scheduler address.
"""

from __future__ import annotations

import ipaddress
import logging
import re
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from sdpbatch.control.configdb import Config
from sdpbatch.control.engines.base import DaskRequest, Engine, EngineError
from sdpbatch.control.resources import Capacity
from sdpbatch.vocabulary import ENGINE, LOOPBACK

__all__ = [
    "DaskRequest",
    "Engine",
    "EngineCapacity",
    "EngineError",
    "EngineSpec",
    "Engines",
    "engine_status",
    "load_engine_spec",
    "make_engine",
    "parse_engine",
    "record_engine",
]

LOG = logging.getLogger(__name__)
KINDS = ("local", "slurm", "scheduler")
ENGINE_CHOICES = "local, slurm or scheduler=ADDRESS"
_NAME = re.compile(r"^[A-Za-z0-9_.\-]{1,64}$")
_HOST = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9.\-]{0,252})$")


@dataclass(frozen=True)
class EngineSpec:
    """The chosen engine and its settings (what ``/engine`` holds)."""

    kind: str = "local"
    address: str | None = None  # scheduler: the existing cluster's scheduler
    partition: str | None = None  # slurm: None is the cluster's default partition
    account: str | None = None  # slurm: -A of the jobs
    walltime: str | None = None  # slurm: -t of the jobs; None is the partition's default
    dask_host: str = LOOPBACK  # slurm: where the blocks' schedulers listen (nodes reach it)

    def to_dict(self) -> dict:
        return {k: v for k, v in asdict(self).items() if v is not None}

    @classmethod
    def from_dict(cls, raw: dict) -> EngineSpec:
        fields = ("kind", "address", "partition", "account", "walltime", "dask_host")
        return cls(**{k: raw[k] for k in fields if k in raw})

    def describe(self) -> str:
        """One line for people: ``slurm (partition debug, ...)``."""
        if self.kind == "scheduler":
            return f"scheduler={self.address} (an existing Dask cluster)"
        if self.kind == "slurm":
            parts = [
                f"partition {self.partition or '(default)'}",
                f"walltime {self.walltime or '(partition default)'}",
                f"Dask schedulers on {self.dask_host}",
            ]
            if self.account:
                parts.insert(1, f"account {self.account}")
            return f"slurm ({', '.join(parts)})"
        return "local (Dask processes on this machine)"


def parse_engine(
    text: str,
    *,
    partition: str | None = None,
    account: str | None = None,
    walltime: str | None = None,
    dask_host: str | None = None,
) -> EngineSpec:
    """The spec of ``--engine TEXT`` and the SLURM options; :class:`EngineError` with one line
    naming the option and what is allowed."""
    from sdpbatch.control.engines.scheduler import normalise_address
    from sdpbatch.control.engines.slurm_commands import slurm_seconds

    kind, sep, value = text.strip().partition("=")
    if kind not in KINDS or (kind == "scheduler") != bool(sep and value):
        raise EngineError(f"--engine {text!r}: allowed are {ENGINE_CHOICES}")
    slurm_options = {"--slurm-partition": partition, "--slurm-account": account}
    slurm_options.update({"--slurm-walltime": walltime, "--dask-host": dask_host})
    given = [name for name, v in slurm_options.items() if v is not None]
    if kind != "slurm" and given:
        raise EngineError(f"{', '.join(given)}: only with --engine slurm")
    if kind == "scheduler":
        try:
            return EngineSpec(kind, address=normalise_address(value))
        except EngineError as err:
            raise EngineError(f"--engine scheduler=ADDRESS: {err}") from None
    for option, name in (("--slurm-partition", partition), ("--slurm-account", account)):
        if name is not None and not _NAME.match(name):
            raise EngineError(f"{option} {name!r}: allowed are letters, digits, '_', '.', '-'")
    if walltime is not None:
        try:
            slurm_seconds(walltime)
        except ValueError:
            raise EngineError(
                f"--slurm-walltime {walltime!r}: allowed are SLURM times such as 90, 1:30:00, "
                "2-00:00:00"
            ) from None
    if dask_host is not None and not _host_ok(dask_host):
        raise EngineError(f"--dask-host {dask_host!r}: give an IP address or a host name")
    if kind == "local":
        return EngineSpec()
    return EngineSpec(
        "slurm",
        partition=partition,
        account=account,
        walltime=walltime,
        dask_host=dask_host or LOOPBACK,
    )


def _host_ok(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
        return True
    except ValueError:
        return bool(_HOST.match(host))


def make_engine(spec: EngineSpec, data_root: Path, *, local: Capacity | None = None) -> Engine:
    """The engine of ``spec`` (``local``: this machine, of capacity ``local`` if given)."""
    if spec.kind == "scheduler":
        from sdpbatch.control.engines.scheduler import SchedulerEngine

        return SchedulerEngine(spec.address or "")
    if spec.kind == "slurm":
        from sdpbatch.control.engines.slurm import SlurmEngine

        return SlurmEngine(
            data_root,
            partition=spec.partition,
            account=spec.account,
            walltime=spec.walltime,
            host=spec.dask_host,
        )
    from sdpbatch.control.engines.local import LocalEngine

    return LocalEngine(data_root, capacity=local)


# --- the record in the configuration database ---------------------------------------------------


def record_engine(config: Config, spec: EngineSpec) -> None:
    """Record ``spec`` as the system's engine."""
    for txn in config.txn():
        if txn.get(ENGINE) is None:
            txn.create(ENGINE, spec.to_dict())
        else:
            txn.update(ENGINE, spec.to_dict())


def load_engine_spec(config: Config) -> EngineSpec:
    """The recorded engine; ``local`` if none was recorded."""
    for txn in config.txn():
        raw = txn.get(ENGINE)
    return EngineSpec.from_dict(raw) if raw else EngineSpec()


# --- what the deployer, the controller and status use ---------------------------------------------


class Engines:
    """The deployer's side: start ``dask`` deployments on the recorded engine; check and stop
    each on the engine that started it (named in its state)."""

    def __init__(self, config: Config, data_root: Path):
        self.config = config
        self.data_root = Path(data_root)
        self._engines: dict[EngineSpec, Engine] = {}

    def _engine(self, spec: EngineSpec) -> Engine:
        if spec not in self._engines:
            self._engines[spec] = make_engine(spec, self.data_root)
        return self._engines[spec]

    def start(
        self, deploy_id: str, args: dict, *, log_path: Path, marks: dict[str, str] | None = None
    ) -> dict:
        """Start the deployment on the recorded engine; ``marks``: environment that marks
        the processes this machine starts for it (the deployer finds them by it)."""
        request = DaskRequest.from_args(deploy_id, args, marks)
        spec = load_engine_spec(self.config)
        state = self._engine(spec).start(deploy_id, request, log_path=log_path)
        return {**state, "engine": spec.to_dict()}

    def _of(self, state: dict) -> Engine:
        return self._engine(EngineSpec.from_dict(state.get("engine") or {}))

    def check(self, deploy_id: str, state: dict) -> dict | None:
        return self._of(state).check(deploy_id, state)

    def stop(self, deploy_id: str, state: dict) -> None:
        self._of(state).stop(deploy_id, state)


class EngineCapacity:
    """The controller's side: the recorded engine's capacity, asked again after ``ttl`` s.

    ``get()`` is None while a non-local engine has never answered (blocks then wait)."""

    def __init__(self, config: Config, *, local: Capacity, ttl: float = 10.0):
        self.config = config
        self.local = local
        self.ttl = ttl
        self._last: tuple[EngineSpec, Capacity] | None = None
        self._asked = -float("inf")

    def get(self) -> Capacity | None:
        spec = load_engine_spec(self.config)
        if spec.kind == "local":
            return self.local
        fresh = self._last is not None and self._last[0] == spec
        if fresh and time.monotonic() - self._asked < self.ttl:
            return self._last[1]
        self._asked = time.monotonic()
        try:
            self._last = (spec, make_engine(spec, Path(".")).capacity())
        except EngineError as err:
            LOG.warning("Engine %s does not answer: %s", spec.describe(), err)
            return self._last[1] if fresh else None
        return self._last[1]


def engine_status(config: Config, *, local: Capacity | None = None) -> dict:
    """The recorded engine for ``sdpbatch status``: spec, description, and its capacity now
    (or why it cannot be had)."""
    spec = load_engine_spec(config)
    status: dict = {"spec": spec.to_dict(), "description": spec.describe()}
    try:
        status["capacity"] = make_engine(spec, Path("."), local=local).capacity().to_dict()
    except EngineError as err:
        status["error"] = str(err)
    return status
