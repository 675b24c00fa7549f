"""Write ICAL's result back into the MeasurementSets: MODEL_DATA and CORRECTED_DATA.

One task per window (a MeasurementSet's field and spectral window) on the run's runner, with
the window's metadata as the run checked them (not read again):

- MODEL_DATA: the final model predicted exactly for every channel of the window
  (``V_c = sum_k t_c^k degrid(model_k)``, at the run's ``epsilon``), time chunk by time
  chunk into a scratch file, then written (:func:`sdpbatch.io.ms_writeback.write_model_data`);
- CORRECTED_DATA: the data corrected by every solved gain term
  (:func:`sdpbatch.io.ms_writeback.write_corrected_data`).

Each column is swapped in only once complete, so a failure leaves each file as it was.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from sdpbatch.execution.ical import IcalResult
from sdpbatch.execution.runner import InProcess, Runner
from sdpbatch.io.ms_read import (
    MeasurementSetInfo,
    read_measurement_set,
    window_times,
)
from sdpbatch.io.ms_writeback import GainTerm, write_corrected_data, write_model_data
from sdpbatch.parameters import Parameters
from sdpbatch.science.imaging import predict_visibilities

CHUNK_VISIBILITIES = 4_000_000
"""Most visibilities predicted at once (the rest of the window waits in a scratch file)."""


@dataclass(frozen=True)
class WindowModel:
    """What a window's model prediction needs: the Taylor model and the imaging geometry."""

    model_taylor: np.ndarray  # (nmoment, N, N) Jy/pixel
    reference_frequency: float  # Hz
    cellsize: float  # rad
    epsilon: float
    nthreads: int


def _predict_window(
    info: MeasurementSetInfo, data_column: str, model: WindowModel, out, rows, times
) -> None:
    """Fill ``out`` (ncross, nchan) with the model of the window's cross-correlation rows in
    table order (main-table ``rows`` at ``times``), reading their UVW a time chunk at a time
    (only the rows of the chunk's span)."""
    distinct = np.unique(times)
    per_chunk = max(1, CHUNK_VISIBILITIES // max(1, times.size // distinct.size * info.nchan))
    taylor = (info.frequency - model.reference_frequency) / model.reference_frequency
    for start in range(0, distinct.size, per_chunk):
        chunk = distinct[start : start + per_chunk]
        edges = (chunk[0], np.nextafter(chunk[-1], np.inf))
        mine = rows[(times >= edges[0]) & (times < edges[1])]
        vis = read_measurement_set(
            info.path,
            data_column=data_column,
            time_range=edges,
            rows=(int(mine[0]), int(mine[-1]) + 1),
            info=info,
        )
        predicted = np.zeros(vis.vis.shape, np.complex64)
        for k, term in enumerate(model.model_taylor):
            if term.any():
                part = predict_visibilities(
                    term,
                    vis.uvw,
                    vis.frequency,
                    cellsize=model.cellsize,
                    epsilon=model.epsilon,
                    nthreads=model.nthreads,
                )
                predicted += part * (taylor**k)[None, :]
        out[np.flatnonzero((times >= edges[0]) & (times < edges[1]))] = predicted


def write_back_window(
    info: MeasurementSetInfo,
    first_channel: int,
    *,
    model: WindowModel | None,
    terms: list[tuple[np.ndarray, np.ndarray, bool]],
    data_column: str,
) -> list[str]:
    """Write MODEL_DATA (``model`` given) and CORRECTED_DATA (``terms``: (gains, interval
    boundaries, per channel) of each solved term) of one window; the columns written."""
    written = []
    if model is not None:
        rows, times = window_times(info.path, info)
        with tempfile.TemporaryDirectory(prefix="sdpbatch-model-") as tmp:
            shape = (rows.size, info.nchan)
            out = np.lib.format.open_memmap(
                Path(tmp) / "model.npy", mode="w+", dtype=np.complex64, shape=shape
            )
            _predict_window(info, data_column, model, out, rows, times)
            write_model_data(info, out)
            del out
        written.append("MODEL_DATA")
    if terms:
        channels = first_channel + np.arange(info.nchan)
        gains = [
            GainTerm(g, b, channels if per_channel else np.zeros(info.nchan, np.int64))
            for g, b, per_channel in terms
        ]
        write_corrected_data(info, gains, data_column=data_column)
        written.append("CORRECTED_DATA")
    return written


def write_back(
    infos: list[MeasurementSetInfo],
    result: IcalResult,
    params: Parameters,
    *,
    runner: Runner | None = None,
) -> dict[str, list[str]]:
    """MODEL_DATA and/or CORRECTED_DATA (as ``params.write_model``, ``write_corrected`` ask)
    into every window's MeasurementSet, one task per window; {window: columns written}."""
    if not (params.write_model or params.write_corrected):
        return {}
    runner = runner or InProcess(params.threads_per_worker)
    model = None
    if params.write_model:
        model = WindowModel(
            model_taylor=result.model_taylor,
            reference_frequency=result.reference_frequency,
            cellsize=result.cellsize,
            epsilon=params.epsilon,
            nthreads=runner.slots[0].nthreads,
        )
    terms = []
    if params.write_corrected:
        terms = [(s.gains, s.boundaries, s.per_channel) for s in result.solutions.values()]
    shared_model = runner.scatter(model) if model is not None else None
    handles, first = [], 0
    for w, info in enumerate(infos):
        handles.append(
            runner.submit(
                _write_back_task,
                info,
                first,
                shared_model,
                terms,
                params.data_column,
                key=f"write-back-{w}",
                slot=w,
            )
        )
        first += info.nchan
    names = [f"{info.path}" + (f" (spw {info.spw_id})" if info.spw_id else "") for info in infos]
    return dict(zip(names, runner.gather(handles), strict=True))


def _write_back_task(info, first_channel, model, terms, data_column) -> list[str]:
    return write_back_window(info, first_channel, model=model, terms=terms, data_column=data_column)
