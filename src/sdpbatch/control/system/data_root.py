"""The data root of a system on this machine: where ``sdpbatch up`` keeps everything.

``$SDPBATCH_DATA_DIR``, else ``./sdp-data``; under it the state file ``system.json``, the logs
(``logs/``), etcd's data (``etcd/``), the Tango database (``tango/tango_database.db``) and
the buffers of the processing blocks.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from sdpbatch.vocabulary import ETCD_DIR, LOGS_DIR, TANGO_DIR

DATA_DIR_ENV = "SDPBATCH_DATA_DIR"
DEFAULT_DATA_DIR = "sdp-data"


def default_data_dir() -> Path:
    """``$SDPBATCH_DATA_DIR``, else ``./sdp-data``."""
    return Path(os.environ.get(DATA_DIR_ENV) or DEFAULT_DATA_DIR)


def resolve_data_dir(data_dir: Path | str | None = None) -> Path:
    """``data_dir`` (default: :func:`default_data_dir`) as an absolute path."""
    return Path(data_dir or default_data_dir()).resolve()


@dataclass(frozen=True)
class Layout:
    """Where things live under the data root."""

    data_dir: Path

    @property
    def state_file(self) -> Path:
        """``system.json``: the ports and processes of the last ``up``."""
        return self.data_dir / "system.json"

    @property
    def logs(self) -> Path:
        return self.data_dir / LOGS_DIR

    @property
    def etcd(self) -> Path:
        return self.data_dir / ETCD_DIR

    @property
    def tango(self) -> Path:
        return self.data_dir / TANGO_DIR

    @property
    def tango_db_file(self) -> Path:
        return self.tango / "tango_database.db"
