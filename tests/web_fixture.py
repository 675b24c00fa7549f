"""Helpers of the web tests: a small image product with known content, a real ``sdpbatch web``
process, and a reader of server-sent events over a plain HTTP connection.

Use it with ``import web_fixture`` (the tests folder is on ``sys.path`` under pytest).
"""

from __future__ import annotations

import http.client
import json
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np

from sdpbatch.control.system.etcd_server import free_port
from sdpbatch.control.system.processes import ProcessRecord, is_alive, start_process
from sdpbatch.io.fits_image import write_fits_image
from sdpbatch.io.gaintable import write_gain_table
from sdpbatch.io.qa import write_qa
from sdpbatch.vocabulary import DEFAULT_PRODUCT_PREFIX, product_files


@dataclass
class Product:
    """What a synthetic product holds, to compare with what the server shows."""

    directory: Path
    prefix: str
    npixel: int
    cellsize: float  # rad
    phase_centre: tuple[float, float]  # rad
    source_pixel: tuple[int, int]  # science orientation [ix, iy], ix east
    beam: tuple[float, float, float]  # rad (bmaj, bmin, bpa)
    gains: np.ndarray  # (ntime, nstation, nfreq)
    weights: np.ndarray
    times: np.ndarray
    frequencies: np.ndarray
    stations: list[str]
    cycles: list[dict]

    def path(self, role: str) -> Path:
        """The file of ``role`` (restored, residual, gains, qa)."""
        return self.directory / product_files(self.prefix)[role]


def make_product(
    directory: Path, *, seed: int = 3, prefix: str = DEFAULT_PRODUCT_PREFIX
) -> Product:
    """Restored and residual FITS, an H5parm gain table and a qa.json (recording ``prefix``, as
    the pipeline's does in its parameters) in ``directory``, named as the pipeline names them."""
    names = product_files(prefix)
    rng = np.random.default_rng(seed)
    n, cell, centre = 64, np.radians(0.05), (np.radians(15.0), np.radians(-45.0))
    source = (n // 2 + 11, n // 2 - 7)  # 11 px east, 7 px south of the centre
    beam = (np.radians(0.2), np.radians(0.12), np.radians(30.0))
    image = rng.normal(0, 0.01, (n, n))
    image[source] = 5.0
    common = dict(phase_centre=centre, cellsize=cell, frequencies=[1.0e8], bandwidths=[1e6])
    directory.mkdir(parents=True, exist_ok=True)
    write_fits_image(directory / names["restored"], image, bunit="Jy/beam", beam=beam, **common)
    residual = image - 5.0 * (image > 1)
    write_fits_image(directory / names["residual"], residual, bunit="Jy/beam", **common)
    ntime, nstation = 4, 6
    gains = np.exp(1j * rng.uniform(-np.pi, np.pi, (ntime, nstation, 1)))
    gains *= rng.uniform(0.8, 1.2, gains.shape)
    weights = np.ones(gains.shape)
    weights[2, 3, 0] = 0.0  # one flagged solution
    times = 5.0e9 + 60.0 * np.arange(ntime)
    stations = [f"S{k:03d}" for k in range(nstation)]
    write_gain_table(
        directory / names["gains"],
        gains=gains,
        times=times,
        antenna_names=stations,
        antenna_positions=rng.normal(0, 100, (nstation, 3)),
        frequencies=[1.0e8],
        weights=weights,
    )
    with h5py.File(directory / names["gains"], "a") as f:  # as the pipeline marks its terms
        for tab in ("phase000", "amplitude000"):
            f[f"sol000/{tab}"].attrs["TERM"] = np.bytes_("G")
    cycles = [
        {"cycle": 0, "peak": 5.0, "peak_end": 0.5, "rms": 0.2, "components": 10, "seconds": 0.3,
         "solved": ["T"], "stop_reason": "threshold"},
        {"cycle": 1, "peak": 0.5, "peak_end": 0.05, "rms": 0.02, "components": 40, "seconds": 0.2,
         "solved": ["T"], "stop_reason": "niter"},
        {"cycle": "final", "peak": 0.05, "rms": 0.01, "components": 0, "seconds": 0.1,
         "solved": []},
    ]  # fmt: skip
    write_qa(
        directory / names["qa"],
        {
            "parameters": {"prefix": prefix},
            "cycles": cycles,
            "clean_beam_deg": dict(zip(("bmaj", "bmin", "bpa"), np.degrees(beam), strict=True)),
            "restored": {"peak": 5.0, "rms": 0.01, "dynamic_range": 500.0},
            "truth": {"gain_phase_rms_error_rad": 0.01, "max_flux_error": 0.02},
        },
    )
    return Product(
        directory, prefix, n, cell, centre, source, beam, gains, weights, times, np.array([1e8]),
        stations, cycles,
    )  # fmt: skip


def start_web(data_dir: Path, log: Path, env: dict[str, str]) -> tuple[ProcessRecord, str]:
    """``sdpbatch web --data-dir DATA`` on a free loopback port; (process, base URL)."""
    port = free_port()
    record = start_process(
        "web",
        [sys.executable, "-m", "sdpbatch.cli", "web", "--data-dir", str(data_dir), "--port",
         str(port)],
        log_path=log,
        env=env,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    wait_for_http(f"{url}/api/health", record, log)
    return record, url


def wait_for_http(url: str, record: ProcessRecord, log: Path, timeout: float = 60) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        assert is_alive(record.pid), f"web server exited:\n{log.read_text()}"
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.2)
    raise AssertionError(f"{url} not answering after {timeout} s:\n{log.read_text()}")


def get(url: str, path: str, *, method: str = "GET", headers: dict | None = None):
    """(status, headers, body bytes) of a request sent with ``path`` exactly as given."""
    parts = url.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(parts[0], int(parts[1]), timeout=30)
    try:
        conn.putrequest(method, path, skip_accept_encoding=True)
        for key, value in (headers or {}).items():
            conn.putheader(key, value)
        conn.endheaders()
        response = conn.getresponse()
        return response.status, response.msg, response.read()  # headers: case-insensitive
    finally:
        conn.close()


def get_json(url: str, path: str):
    status, _, body = get(url, path)
    assert status == 200, (path, status, body[:300])
    return json.loads(body)


class EventStream:
    """Server-sent events of one GET, read as they arrive."""

    def __init__(self, url: str, path: str, *, headers: dict | None = None, timeout: float = 30):
        parts = url.removeprefix("http://").split(":")
        self.conn = http.client.HTTPConnection(parts[0], int(parts[1]), timeout=timeout)
        self.conn.request("GET", path, headers={"Accept": "text/event-stream", **(headers or {})})
        self.response = self.conn.getresponse()
        assert self.response.status == 200, self.response.read()[:300]
        assert self.response.getheader("Content-Type").startswith("text/event-stream")

    def events(self) -> Iterator[tuple[str, str | None, str]]:
        """(event name, id, data) of each event; comments and retry lines are skipped."""
        name, event_id, data = "message", None, []
        while True:
            line = self.response.fp.readline().decode()
            if not line:
                return
            line = line.rstrip("\n")
            if line == "":
                if data:
                    yield name, event_id, "\n".join(data)
                name, event_id, data = "message", None, []
            elif line.startswith("event:"):
                name = line[6:].strip()
            elif line.startswith("id:"):
                event_id = line[3:].strip()
            elif line.startswith("data:"):
                data.append(line[5:].lstrip(" "))

    def next(self, name: str) -> tuple[str | None, str]:
        for event, event_id, data in self.events():
            if event == name:
                return event_id, data
        raise AssertionError(f"stream ended before an event {name!r}")

    def close(self) -> None:
        self.conn.close()
