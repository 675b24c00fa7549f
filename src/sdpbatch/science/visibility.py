"""The in-memory visibility container shared by simulation, I/O and ICAL.

Conventions (those of the MeasurementSet, DP3 and WSClean; see docs/conventions.md):

- ``uvw[row] = uvw(antenna2) - uvw(antenna1)`` in metres, J2000;
- an unpolarised point source of flux S at direction cosines (l, m) gives
  ``vis = S * exp(+2j*pi*nu/c*(u*l + v*m + w*(n - 1)))``;
- gains enter as ``vis_pq = g_p * conj(g_q) * true_pq`` with p = ``antenna1``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass
class Visibilities:
    """Stokes I visibilities of one phase centre, rows x channels.

    Attributes
    ----------
    uvw : (nrow, 3) float64, metres.
    time : (nrow,) float64, MJD seconds (UTC), centre of the integration.
    antenna1, antenna2 : (nrow,) int32, station indices into ``antenna_positions``.
    frequency : (nchan,) float64, Hz, channel centres.
    channel_width : (nchan,) float64, Hz.
    vis : (nrow, nchan) complex128, Jy (Stokes I).
    weight : (nrow, nchan) float32, inverse variance of ``vis`` (Jy^-2).
    flag : (nrow, nchan) bool, True where the sample must not be used.
    phase_centre : (ra, dec) radians, J2000.
    antenna_positions : (nant, 3) float64, ITRF metres.
    antenna_names : station names, length nant.
    integration_time : seconds (one value for all rows).
    antenna_diameter : metres.
    """

    uvw: np.ndarray
    time: np.ndarray
    antenna1: np.ndarray
    antenna2: np.ndarray
    frequency: np.ndarray
    channel_width: np.ndarray
    vis: np.ndarray
    weight: np.ndarray
    flag: np.ndarray
    phase_centre: tuple[float, float]
    antenna_positions: np.ndarray
    antenna_names: list[str] = field(default_factory=list)
    integration_time: float = 1.0
    antenna_diameter: float = 38.0

    @property
    def nrow(self) -> int:
        return int(self.uvw.shape[0])

    @property
    def nchan(self) -> int:
        return int(self.frequency.shape[0])

    @property
    def nant(self) -> int:
        return int(self.antenna_positions.shape[0])

    def check(self) -> None:
        """Raise ValueError if the arrays disagree in shape."""
        nrow, nchan = self.nrow, self.nchan
        expected = {
            "uvw": (nrow, 3),
            "time": (nrow,),
            "antenna1": (nrow,),
            "antenna2": (nrow,),
            "channel_width": (nchan,),
            "vis": (nrow, nchan),
            "weight": (nrow, nchan),
            "flag": (nrow, nchan),
        }
        for name, shape in expected.items():
            actual = getattr(self, name).shape
            if actual != shape:
                raise ValueError(f"Visibilities.{name} has shape {actual}, expected {shape}")
