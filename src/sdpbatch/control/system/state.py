"""What ``DATA/system.json`` records of the system of a data root: its ports, the environment
its clients need, and the processes of the current run with their restart counts.

It is written atomically after each start or restart (by ``up`` and the supervisor), so
``status`` and ``down`` know the current pids.
"""

from __future__ import annotations

import json
import shlex
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sdpbatch.control.system.data_root import DATA_DIR_ENV, Layout
from sdpbatch.control.system.processes import ProcessRecord
from sdpbatch.io.atomic import atomic_path
from sdpbatch.vocabulary import LOOPBACK

HOST = LOOPBACK
"""Every server of the system listens on loopback."""
WEB_URL_ENV = "SDPBATCH_WEB_URL"
RUN_ID_ENV = "SDPBATCH_SYSTEM_ID"


class SystemControlError(RuntimeError):
    """The system could not be started or stopped; the text names the component and its log."""


@dataclass
class SystemState:
    """What ``DATA/system.json`` holds: ports, environment and the processes of this run."""

    data_dir: Path
    ports: dict[str, int] = field(default_factory=dict)
    processes: list[ProcessRecord] = field(default_factory=list)
    running: bool = False
    started: float = 0.0
    run_id: str = ""  # marks every process of this run (env SDPBATCH_SYSTEM_ID), see down()
    restarts: dict[str, int] = field(default_factory=dict)  # by the supervisor, per component
    exits: dict[str, str] = field(default_factory=dict)  # the last exit cause per component
    supervisor: ProcessRecord | None = None

    def record(self, record: ProcessRecord) -> None:
        """Add a started process, replacing the earlier process of the same name."""
        names = [p.name for p in self.processes]
        if record.name in names:
            self.processes[names.index(record.name)] = record
        else:
            self.processes.append(record)

    @property
    def env(self) -> dict[str, str]:
        """The environment a client of this system needs."""
        if not self.ports:
            return {}
        env = {
            "TANGO_HOST": f"{HOST}:{self.ports['tango_db']}",
            "SDP_CONFIG_HOST": HOST,
            "SDP_CONFIG_PORT": str(self.ports["etcd_client"]),
            "SDP_CONFIG_BACKEND": "etcd3",
            DATA_DIR_ENV: str(self.data_dir),
        }
        if "web" in self.ports:
            env[WEB_URL_ENV] = f"http://{HOST}:{self.ports['web']}/"
        return env

    @property
    def child_env(self) -> dict[str, str]:
        """The client environment plus the run's marker, for the processes ``up`` starts."""
        return {**self.env, RUN_ID_ENV: self.run_id, "PYTHONUNBUFFERED": "1"}

    def summary(self) -> str:
        """The live processes, e.g. ``etcd pid 123, controller pid 456``."""
        return ", ".join(f"{p.name} pid {p.pid}" for p in self.processes if p.alive())

    def to_dict(self) -> dict[str, Any]:
        return {
            "data_dir": str(self.data_dir),
            "running": self.running,
            "started": self.started,
            "run_id": self.run_id,
            "ports": self.ports,
            "env": self.env,
            "processes": [p.to_dict() for p in self.processes],
            "restarts": self.restarts,
            "exits": self.exits,
            "supervisor": self.supervisor.to_dict() if self.supervisor else None,
        }

    @classmethod
    def load(cls, data_dir: Path) -> SystemState | None:
        """The state recorded under ``data_dir`` (None if there is none)."""
        path = Layout(data_dir).state_file
        if not path.is_file():
            return None
        try:
            raw = json.loads(path.read_text())
            return cls(
                data_dir=data_dir,
                ports={k: int(v) for k, v in raw.get("ports", {}).items()},
                processes=[ProcessRecord.from_dict(p) for p in raw.get("processes", [])],
                running=bool(raw.get("running")),
                started=float(raw.get("started", 0.0)),
                run_id=str(raw.get("run_id", "")),
                restarts={k: int(v) for k, v in raw.get("restarts", {}).items()},
                exits={k: str(v) for k, v in raw.get("exits", {}).items()},
                supervisor=(
                    ProcessRecord.from_dict(raw["supervisor"]) if raw.get("supervisor") else None
                ),
            )
        except (ValueError, KeyError, TypeError) as err:
            raise SystemControlError(f"{path} is not a valid system state file: {err}") from err

    def save(self) -> None:
        with atomic_path(Layout(self.data_dir).state_file) as tmp:
            tmp.write_text(json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n")


def export_lines(state: SystemState) -> list[str]:
    """``export NAME=value`` lines a user pastes (or evals) to talk to the system; each value
    shell-quoted, so a data root with spaces or shell characters comes back exact."""
    return [f"export {k}={shlex.quote(v)}" for k, v in state.env.items()]
