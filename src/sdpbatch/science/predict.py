"""Exact point-source visibilities: the direct Fourier sum, including the w term.

Convention (MeasurementSet / WSClean, see :mod:`sdpbatch.science.visibility`)::

    V(u, v, w, nu) = sum_s S_s(nu) * exp(+2j*pi*nu/c * (u*l_s + v*m_s + w*(n_s - 1)))

No 1/n factor: a point source of apparent flux S gives |V| = S.
"""

from __future__ import annotations

import numpy as np

from sdpbatch.science.constants import C

ROW_CHUNK = 32_768
"""Rows per chunk: bounds the (rows x sources) work arrays (~0.5 MiB per source)."""


def predict_point_sources(
    uvw: np.ndarray,
    frequency: np.ndarray,
    lmn: np.ndarray,
    flux: np.ndarray,
    *,
    row_chunk: int = ROW_CHUNK,
) -> np.ndarray:
    """Visibilities (nrow, nchan) complex128 Jy of point sources.

    Parameters
    ----------
    uvw : (nrow, 3) metres.
    frequency : (nchan,) Hz.
    lmn : (nsrc, 3) direction cosines (l, m, n) of the sources.
    flux : (nsrc, nchan) apparent Stokes I (Jy) of each source at each channel.
    row_chunk : rows per chunk (memory ~ 24 * row_chunk * nsrc bytes).

    The phase of each (row, source) is one matrix product ``uvw @ (l, m, n-1)``; cos and sin
    are taken in float64 and summed over sources with two real matrix-vector products.
    """
    uvw = np.asarray(uvw, dtype=np.float64)
    frequency = np.atleast_1d(np.asarray(frequency, dtype=np.float64))
    lmn = np.asarray(lmn, dtype=np.float64).reshape(-1, 3)
    flux = np.asarray(flux, dtype=np.float64).reshape(lmn.shape[0], frequency.size)
    nrow = uvw.shape[0]
    out = np.zeros((nrow, frequency.size), dtype=np.complex128)
    if lmn.shape[0] == 0 or nrow == 0:
        return out
    delay = (lmn - np.array([0.0, 0.0, 1.0])).T  # (3, nsrc)
    for start in range(0, nrow, row_chunk):
        stop = min(nrow, start + row_chunk)
        path = uvw[start:stop] @ delay  # (rows, nsrc) metres
        for c, nu in enumerate(frequency):
            phase = path * (2.0 * np.pi * nu / C)
            out[start:stop, c].real = np.cos(phase) @ flux[:, c]
            out[start:stop, c].imag = np.sin(phase) @ flux[:, c]
    return out
