"""What a MeasurementSet says about its observation (the OBSERVATION table), for product
headers: the telescope name."""

from __future__ import annotations

from pathlib import Path

from casacore import tables


def read_telescope_name(ms_path: str | Path) -> str | None:
    """OBSERVATION.TELESCOPE_NAME of the first row, or None when the table or name is absent."""
    path = Path(ms_path) / "OBSERVATION"
    if not (path / "table.dat").is_file():
        return None
    with tables.table(str(path), ack=False) as t:
        if t.nrows() == 0 or "TELESCOPE_NAME" not in t.colnames():
            return None
        name = str(t.getcell("TELESCOPE_NAME", 0)).strip()
    return name or None
