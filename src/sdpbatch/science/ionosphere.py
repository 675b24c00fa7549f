"""Ionospheric phase screens: a drifting Kolmogorov TEC screen seen through its pierce points.

The screen is a thin layer at :data:`SCREEN_HEIGHT`.  Its phase at :data:`REFERENCE_FREQUENCY`
has the von Karman structure function

    D(r) = 2 sigma^2 [1 - 2^(1/6) / Gamma(5/6) (k0 r)^(5/6) K_5/6(k0 r)],

which is the Kolmogorov law ``(r / r_diff)^(5/3)`` well inside the outer scale ``L0 = 1/k0``
and saturates at ``2 sigma^2`` beyond it: ``sigma`` is the rms phase (parameter
``ionosphere_rms_phase``) and ``r_diff`` the diffractive scale, where D is 1 rad^2
(``ionosphere_scale_km``); together they set ``k0`` (:func:`outer_wavenumber`).

The screen is a sum of plane waves (a randomised spectral method): the wavenumbers are split
into logarithmic bins, each bin holds the variance of the von Karman spectrum in it, shared by
``per_bin`` waves of random direction and phase whose wavenumbers are drawn from that
spectrum; so the screen can be evaluated anywhere (pierce points hundreds of km apart as it
drifts) and its structure function is the one above, averaged over positions.  At frequency
nu the phase is the 100 MHz phase times ``REFERENCE_FREQUENCY / nu`` (a TEC screen).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy.special import gamma, kv

SCREEN_HEIGHT = 300e3
"""Metres: height of the thin screen."""
REFERENCE_FREQUENCY = 1e8
"""Hz: the frequency at which screen phases are given."""
_SMALL_R = -gamma(-5.0 / 6.0) / (2.0 ** (5.0 / 3.0) * gamma(5.0 / 6.0))
"""D(r) -> 2 sigma^2 _SMALL_R (k0 r)^(5/3) for k0 r -> 0."""


def outer_wavenumber(rms_phase: float, diffractive_scale: float) -> float:
    """k0 (rad/m) such that D(r) -> (r / diffractive_scale)^(5/3) at small r (metres)."""
    return (2.0 * rms_phase**2 * _SMALL_R) ** (-0.6) / diffractive_scale


def structure_function(r, *, rms_phase: float, diffractive_scale: float) -> np.ndarray:
    """The von Karman structure function (rad^2 at 100 MHz) at separations ``r`` (m)."""
    x = outer_wavenumber(rms_phase, diffractive_scale) * np.asarray(r, dtype=np.float64)
    safe = np.where(x > 0, x, 1.0)
    tail = 2.0 ** (1.0 / 6.0) / gamma(5.0 / 6.0) * safe ** (5.0 / 6.0) * kv(5.0 / 6.0, safe)
    return np.where(x > 0, 2.0 * rms_phase**2 * (1.0 - tail), 0.0)


@dataclass(frozen=True)
class PhaseScreen:
    """A frozen screen: phase(x) = sum_j a_j cos(k_j . x + psi_j), rad at 100 MHz."""

    wavevectors: np.ndarray  # (nwave, 2) rad/m (east, north)
    amplitudes: np.ndarray  # (nwave,) rad
    offsets: np.ndarray  # (nwave,) rad

    def phase(self, xy: np.ndarray, *, chunk: int = 65_536) -> np.ndarray:
        """Phase (rad at 100 MHz) at positions ``xy`` (..., 2) metres in the screen."""
        xy = np.asarray(xy, dtype=np.float64)
        flat = xy.reshape(-1, 2)
        out = np.empty(flat.shape[0])
        for lo in range(0, flat.shape[0], chunk):
            arg = flat[lo : lo + chunk] @ self.wavevectors.T + self.offsets
            out[lo : lo + chunk] = np.cos(arg) @ self.amplitudes
        return out.reshape(xy.shape[:-1])


def von_karman_screen(
    rng: np.random.Generator,
    *,
    rms_phase: float,
    diffractive_scale: float,
    smallest_scale: float = 20.0,
    bins_per_decade: int = 8,
    per_bin: int = 16,
) -> PhaseScreen:
    """A random screen of rms ``rms_phase`` (rad at 100 MHz) and diffractive scale (m).

    Wavenumbers from 0 to ``2 pi / smallest_scale`` (m): the first bin holds everything below
    ``k0 / 30``, then ``bins_per_decade`` logarithmic bins (20 m: below the distance between
    two 38 m stations; the screen costs positions x waves, ~650 waves).  In a bin the
    variance of the spectrum ``Phi(k) ~ (k^2 + k0^2)^(-11/6)`` is ``c [u(k_a) - u(k_b)]`` with
    ``u = (k^2 + k0^2)^(-5/6)``, so wavenumbers with that distribution are drawn uniform in u.
    """
    k0 = outer_wavenumber(rms_phase, diffractive_scale)
    top = 2.0 * np.pi / smallest_scale
    ndec = max(1.0, math.log10(top / (k0 / 30.0)))
    edges = np.concatenate([[0.0], np.geomspace(k0 / 30.0, top, int(ndec * bins_per_decade))])

    def u(k):
        return (k * k + k0 * k0) ** (-5.0 / 6.0)

    total = u(0.0)  # the variance sigma^2 in units of the u difference over all k
    variance = rms_phase**2 * (u(edges[:-1]) - u(edges[1:])) / total  # per bin
    nbin = variance.size
    draws = rng.uniform(0.0, 1.0, (nbin, per_bin))
    ub = u(edges[1:])[:, None] + draws * (u(edges[:-1]) - u(edges[1:]))[:, None]
    k = np.sqrt(np.clip(ub ** (-1.2) - k0 * k0, 0.0, None)).ravel()
    angle = rng.uniform(0.0, 2.0 * np.pi, k.size)
    return PhaseScreen(
        wavevectors=np.stack([k * np.cos(angle), k * np.sin(angle)], axis=-1),
        amplitudes=np.repeat(np.sqrt(2.0 * variance / per_bin), per_bin),
        offsets=rng.uniform(0.0, 2.0 * np.pi, k.size),
    )


def pierce_points(
    station_en: np.ndarray, directions: np.ndarray, *, height: float = SCREEN_HEIGHT
) -> np.ndarray:
    """(ntime, nant, nsrc, 2) east/north metres where each station's line of sight to each
    source crosses the screen (flat screen): the station plus ``height * tan(zenith angle)``
    towards the source's azimuth.

    station_en (nant, 2) metres; directions (ntime, nsrc, 3) east-north-up unit vectors.
    """
    up = np.clip(directions[..., 2:3], 1e-3, None)
    offset = height * directions[..., :2] / up  # (ntime, nsrc, 2)
    return station_en[None, :, None, :] + offset[:, None, :, :]


def screen_phases(
    screen: PhaseScreen,
    station_en: np.ndarray,
    directions: np.ndarray,
    seconds: np.ndarray,
    *,
    speed: float,
    height: float = SCREEN_HEIGHT,
) -> np.ndarray:
    """(ntime, nant, nsrc) phases (rad at 100 MHz) each station sees towards each source.

    The screen drifts east at ``speed`` m/s: at ``seconds`` (ntime,) from the start a pierce
    point x sees the frozen screen at ``x - speed * t`` (east).
    """
    xy = pierce_points(station_en, directions, height=height)
    drift = np.zeros((np.size(seconds), 1, 1, 2))
    drift[:, 0, 0, 0] = speed * np.asarray(seconds, dtype=np.float64)
    return screen.phase(xy - drift)


def ionosphere_gains(phases: np.ndarray, frequency: np.ndarray) -> np.ndarray:
    """(..., nchan) complex gains ``exp(i phase * 100 MHz / nu)`` of phases (...) at 100 MHz."""
    scale = REFERENCE_FREQUENCY / np.asarray(frequency, dtype=np.float64)
    return np.exp(1j * np.asarray(phases)[..., None] * scale)
