"""What self-calibration keeps of a calibration against a catalogue.

Self-calibration cannot determine a linear phase gradient across the array (it shifts the
image and its model with it) nor a flux scale (its model's is the data's own).  Once a
calibration against a sky model (a catalogue of the field) has fixed both, later solutions
keep them: the gradient of the catalogue's solution (``anchor_phase_gradient``) and its mean
amplitude per solution (``keep_amplitude_scale``).
"""

from __future__ import annotations

import numpy as np


def anchor_phase_gradient(
    gains: np.ndarray,
    anchor: np.ndarray,
    positions: np.ndarray,
    *,
    flags: np.ndarray | None = None,
) -> np.ndarray:
    """``gains`` with the linear phase gradient of ``gains / anchor`` across stations removed.

    Self-calibration cannot determine a phase gradient across the array (it shifts the image
    and the model with it).  Once a calibration against a sky model has fixed it (``anchor``),
    later solutions keep its gradient: per solution interval and channel, the plane
    ``b . (position - centroid)`` fitted to the phase of ``gains conj(anchor)`` is taken out.
    The constant phase is kept.  ``gains`` (nint, nant, nfreq); ``anchor`` broadcastable to
    it; ``positions`` (nant, 3) metres (any Cartesian frame: ITRF or local); ``flags``
    (gains' shape, optional): flagged gains take no part in the fit and are not changed.
    """
    gains = np.asarray(gains, dtype=np.complex128)
    diff = gains * np.conj(np.broadcast_to(anchor, gains.shape))
    ok = np.isfinite(diff) & (np.abs(diff) > 0)
    if flags is not None:
        ok &= ~flags
    phase = np.angle(np.where(ok, diff, 1.0))  # (nint, nant, nfreq)
    pos = np.asarray(positions, dtype=np.float64)
    rel = pos - pos.mean(axis=0)
    design = np.column_stack([np.ones(pos.shape[0]), rel])
    out = gains.copy()
    for t in range(gains.shape[0]):
        for f in range(gains.shape[2]):
            use = ok[t, :, f]
            if use.sum() < design.shape[1] + 1:
                continue
            coef = np.linalg.lstsq(design[use], phase[t, use, f], rcond=1e-9)[0]
            plane = np.exp(-1j * (rel @ coef[1:]))
            out[t, :, f] *= plane if flags is None else np.where(flags[t, :, f], 1.0, plane)
    return out


def keep_amplitude_scale(
    gains: np.ndarray, anchor: np.ndarray, flags: np.ndarray | None = None
) -> np.ndarray:
    """``gains`` rescaled per cell (interval, channel) so that their mean ``|g|`` over the
    unflagged stations is the ``anchor``'s: self-calibration, which normalises its amplitudes
    (no flux scale of its own), keeps the scale a calibration against a catalogue fixed.

    gains : (nint, nant, nfreq); anchor : broadcastable to it; flags : gains' shape.
    """
    gains = np.asarray(gains, dtype=np.complex128)
    anchor = np.broadcast_to(np.asarray(anchor), gains.shape)
    used = np.ones(gains.shape, bool) if flags is None else ~flags
    count = used.sum(axis=1, keepdims=True)
    target = np.where(used, np.abs(anchor), 0.0).sum(axis=1, keepdims=True)
    current = np.where(used, np.abs(gains), 0.0).sum(axis=1, keepdims=True)
    ok = (count > 0) & (current > 0) & (target > 0)
    scale = np.divide(target, current, out=np.ones_like(target), where=ok)
    return gains * scale
