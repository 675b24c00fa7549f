"""Radiometer noise of SKA1-Low station baselines."""

from __future__ import annotations

import math

import numpy as np

from sdpbatch.science.constants import EFFICIENCY, JY, K_B, STATION_DIAMETER


def radiometer_sigma(
    tsys: float,
    bandwidth: np.ndarray | float,
    integration_time: float,
    *,
    diameter: float = STATION_DIAMETER,
    efficiency: float = EFFICIENCY,
) -> np.ndarray:
    """Noise rms (Jy) of the real and of the imaginary part of one visibility.

    sigma = sqrt(2) k_B Tsys / (A eta sqrt(dnu tau)) / 1e-26, A = pi (D/2)^2, with ``tsys``
    in K, ``bandwidth`` dnu in Hz, ``integration_time`` tau in s, ``diameter`` D in m.
    """
    area = math.pi * (diameter / 2) ** 2
    sefd_term = math.sqrt(2.0) * K_B * tsys / (area * efficiency)
    return sefd_term / np.sqrt(np.asarray(bandwidth, dtype=np.float64) * integration_time) / JY


def add_noise(vis: np.ndarray, sigma: np.ndarray | float, rng: np.random.Generator) -> np.ndarray:
    """``vis`` (nrow, nchan) plus complex Gaussian noise of rms ``sigma`` (per channel) per part."""
    sigma = np.broadcast_to(np.asarray(sigma, dtype=np.float64), vis.shape[-1:])
    noise = rng.standard_normal(vis.shape) + 1j * rng.standard_normal(vis.shape)
    return vis + noise * sigma
