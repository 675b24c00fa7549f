"""The space a batch imaging run needs, per output directory (for the pre-flight check)."""

from __future__ import annotations

from pathlib import Path

from sdpbatch.io.layout_file import load_layout
from sdpbatch.io.space import image_products_bytes, simulation_bytes
from sdpbatch.parameters import Parameters
from sdpbatch.science.layouts import select_stations


def station_count(params: Parameters) -> int:
    """Stations of the layout within ``rmax`` (as the simulation selects them)."""
    enu, _ = load_layout(params.layout)
    return int(select_stations(enu, params.rmax).size)


def run_space(params: Parameters, vis_dir: Path, img_dir: Path) -> list[tuple[Path, int]]:
    """[(vis_dir, bytes of the MeasurementSets), (img_dir, bytes of the images)], about."""
    nant = station_count(params)
    vis = simulation_bytes(
        nfreqwin=params.nfreqwin, ntimes=params.ntimes, nbaselines=nant * (nant - 1) // 2
    )
    npixel = params.npixel or 1024
    img = image_products_bytes(npixel=npixel, nfreqwin=params.nfreqwin)
    return [(Path(vis_dir), vis), (Path(img_dir), img)]
