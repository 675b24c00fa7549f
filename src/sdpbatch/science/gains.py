"""Station gain errors and their application to visibilities."""

from __future__ import annotations

import numpy as np


def random_gains(
    rng: np.random.Generator,
    ntimes: int,
    nant: int,
    *,
    phase_error: float,
    amplitude_error: float = 0.0,
) -> np.ndarray:
    """Gains (ntimes, nant): phase ~ N(0, phase_error) rad, amplitude ~ N(1, amplitude_error).

    The phases are drawn first (ntimes x nant, row-major), then the amplitudes only if
    ``amplitude_error > 0``, so phase-only runs draw the same phases whatever the amplitude knob.
    """
    phase = (
        rng.normal(0.0, phase_error, (ntimes, nant))
        if phase_error > 0
        else np.zeros((ntimes, nant))
    )
    amp = (
        rng.normal(1.0, amplitude_error, (ntimes, nant))
        if amplitude_error > 0
        else np.ones((ntimes, nant))
    )
    return amp * np.exp(1j * phase)


def corrupt(
    vis: np.ndarray,
    gains: np.ndarray,
    antenna1: np.ndarray,
    antenna2: np.ndarray,
    time_index: np.ndarray,
) -> np.ndarray:
    """Corrupted visibilities ``g_p conj(g_q) vis_pq`` with p = antenna1, q = antenna2.

    Parameters
    ----------
    vis : (nrow, nchan) complex.
    gains : (ntimes, nant) complex (same gain for all channels) or (ntimes, nant, nchan).
    antenna1, antenna2, time_index : (nrow,) int, the row's stations and time sample.
    """
    gp = gains[time_index, antenna1]
    gq = gains[time_index, antenna2]
    g = gp * np.conj(gq)
    if g.ndim == 1:
        g = g[:, None]
    return vis * g
