"""Sky models of point and Gaussian components: a GLEAM-like synthetic population and the
SKA1-Low station beam.

Spectra are logarithmic polynomials, as in the WSClean/DP3 text format with
``LogarithmicSI=true``: ``S(nu) = S0 * (nu/nu0) ** (c0 + c1*x + c2*x**2 + ...)``,
``x = log10(nu/nu0)``; ``c0`` is the ordinary spectral index.

Gaussian components follow WSClean and DP3: ``major`` and ``minor`` are full widths at half
maximum, ``position_angle`` is the angle of the major axis from north through east, measured at
the component (DP3's absolute orientation).  A component of flux S has the brightness
``S / (2 pi s_maj s_min) exp(-x_maj^2 / 2 s_maj^2 - x_min^2 / 2 s_min^2)`` with
``s = FWHM / (2 sqrt(2 ln 2))``, ``x_maj = x_e sin(pa) + x_n cos(pa)``, ``x_min = x_e cos(pa) -
x_n sin(pa)`` in its own tangent plane (east, north); its visibility is the point visibility times
``exp(-2 pi^2 (s_maj^2 u_maj^2 + s_min^2 u_min^2))`` with ``(u_maj, u_min)`` the baseline in
wavelengths projected the same way onto the component's tangent plane
(:func:`gaussian_taper_matrix`).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import numpy as np
from scipy.special import j1

HPBW_REF = math.radians(6.6)
"""Half-power beam width of the SKA1-Low station beam at :data:`BEAM_REF_FREQ` (rad)."""

BEAM_REF_FREQ = 1e8
AIRY_HALF_POWER_X = 1.616339948310703
"""x where (2 J1(x)/x)**2 = 1/2."""

SQ_DEG = math.radians(1.0) ** 2

FWHM_TO_SIGMA = 1.0 / (2.0 * math.sqrt(2.0 * math.log(2.0)))


@dataclass
class SkyModel:
    """Point and Gaussian components.

    Attributes
    ----------
    ra, dec : (nsrc,) J2000 radians.
    flux : (nsrc,) Stokes I at ``ref_freq`` (Jy), integrated over a Gaussian.
    ref_freq : (nsrc,) Hz.
    spectral_index : (nsrc, nterms) logarithmic spectral polynomial (see module docstring).
    names : source names.
    major, minor : (nsrc,) full widths at half maximum (rad) of Gaussian components; 0 for
        points (the default).
    position_angle : (nsrc,) rad, the major axis from north through east (default 0).
    """

    ra: np.ndarray
    dec: np.ndarray
    flux: np.ndarray
    ref_freq: np.ndarray
    spectral_index: np.ndarray
    names: list[str]
    major: np.ndarray | None = None
    minor: np.ndarray | None = None
    position_angle: np.ndarray | None = None

    def __post_init__(self) -> None:
        self.ra = np.asarray(self.ra, dtype=np.float64)
        self.dec = np.asarray(self.dec, dtype=np.float64)
        self.flux = np.asarray(self.flux, dtype=np.float64)
        self.ref_freq = np.asarray(self.ref_freq, dtype=np.float64)
        si = np.asarray(self.spectral_index, dtype=np.float64)
        self.spectral_index = si.reshape(len(self.ra), -1)
        for name in ("major", "minor", "position_angle"):
            value = getattr(self, name)
            value = np.zeros(len(self.ra)) if value is None else np.asarray(value, np.float64)
            setattr(self, name, np.broadcast_to(value, self.ra.shape).copy())
        if np.any(self.minor < 0) or np.any(self.major < self.minor):
            raise ValueError("Gaussian components need major >= minor >= 0")

    def __len__(self) -> int:
        return int(self.ra.shape[0])

    @property
    def is_gaussian(self) -> np.ndarray:
        """(nsrc,) bool: components with a Gaussian shape (major > 0)."""
        return self.major > 0

    def flux_at(self, frequency: np.ndarray | float) -> np.ndarray:
        """Stokes I (nsrc, nfreq) Jy at ``frequency`` (nfreq,) Hz."""
        freq = np.atleast_1d(np.asarray(frequency, dtype=np.float64))
        x = np.log10(freq[None, :] / self.ref_freq[:, None])
        exponent = np.zeros_like(x)
        for k in range(self.spectral_index.shape[1] - 1, -1, -1):  # Horner in x
            exponent = exponent * x + self.spectral_index[:, k : k + 1]
        return self.flux[:, None] * 10.0 ** (exponent * x)

    def select(self, index: np.ndarray) -> SkyModel:
        """The sources at ``index`` (indices or boolean mask)."""
        idx = np.arange(len(self))[index]
        arrays = ("ra", "dec", "flux", "ref_freq", "spectral_index", *SHAPE_FIELDS)
        return dataclasses.replace(
            self,
            names=[self.names[i] for i in idx],
            **{name: getattr(self, name)[idx] for name in arrays},
        )


SHAPE_FIELDS = ("major", "minor", "position_angle")


def gaussian_taper_matrix(sky: SkyModel, phase_centre: tuple[float, float]) -> np.ndarray:
    """(nsrc, 2, 3) matrices that turn a baseline's UVW into its Gaussian taper, zero for points.

    For UVW (metres) about ``phase_centre`` (ra, dec rad), ``(a, b) = T[s] @ uvw`` are the
    baseline's components along the component's major and minor axes times their Gaussian
    sigmas, and the visibility of component s is its point visibility times
    ``exp(-2 pi^2 (nu / c)^2 (a^2 + b^2))``.  The baseline is first projected onto the
    component's own tangent plane (east, north at the component), as DP3 does for absolute
    position angles, so the taper stays exact away from the phase centre.
    """
    e0, n0, d0 = _tangent_basis(*phase_centre)
    es, ns, _ = _tangent_basis(sky.ra, sky.dec)
    frame = np.stack([e0, n0, d0], axis=-1)  # (3 xyz, 3 uvw)
    project = np.stack([es @ frame, ns @ frame], axis=1)  # (nsrc, 2, 3): (east, north) at s
    sin_pa, cos_pa = np.sin(sky.position_angle), np.cos(sky.position_angle)
    axes = np.stack(
        [np.stack([sin_pa, cos_pa], -1), np.stack([cos_pa, -sin_pa], -1)], axis=1
    )  # (nsrc, 2, 2): rows (major, minor) in (east, north)
    sigma = FWHM_TO_SIGMA * np.stack([sky.major, sky.minor], axis=-1)[:, :, None]
    return sigma * (axes @ project)


def _tangent_basis(ra, dec) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Unit vectors east, north and towards (ra, dec), equatorial Cartesian (..., 3)."""
    ra, dec = np.asarray(ra, dtype=np.float64), np.asarray(dec, dtype=np.float64)
    sa, ca, sd, cd = np.sin(ra), np.cos(ra), np.sin(dec), np.cos(dec)
    east = np.stack([-sa, ca, np.zeros_like(ra)], axis=-1)
    north = np.stack([-sd * ca, -sd * sa, cd], axis=-1)
    toward = np.stack([cd * ca, cd * sa, sd], axis=-1)
    return east, north, toward


def lmn(ra: np.ndarray, dec: np.ndarray, phase_centre: tuple[float, float]) -> np.ndarray:
    """Direction cosines (nsrc, 3) = (l, m, n) of (ra, dec) rad about ``phase_centre`` (rad).

    l = cos d sin(a - a0) (east), m = sin d cos d0 - cos d sin d0 cos(a - a0) (north).
    """
    ra0, dec0 = phase_centre
    ra, dec = np.asarray(ra, dtype=np.float64), np.asarray(dec, dtype=np.float64)
    dra = ra - ra0
    l_ = np.cos(dec) * np.sin(dra)
    m = np.sin(dec) * np.cos(dec0) - np.cos(dec) * np.sin(dec0) * np.cos(dra)
    n = np.sin(dec) * np.sin(dec0) + np.cos(dec) * np.cos(dec0) * np.cos(dra)
    return np.stack([l_, m, n], axis=-1)


def hpbw(frequency: np.ndarray | float) -> np.ndarray:
    """Half-power beam width (rad) of the station beam: 6.6 deg at 100 MHz, scaling as 1/nu."""
    return HPBW_REF * BEAM_REF_FREQ / np.asarray(frequency, dtype=np.float64)


def station_beam(
    ra: np.ndarray, dec: np.ndarray, pointing: tuple[float, float], frequency: np.ndarray
) -> np.ndarray:
    """Power response (nsrc, nfreq) of the analytic SKA1-Low station beam pointed at ``pointing``.

    An Airy pattern ``(2 J1(x)/x)**2`` with ``x = 1.6163 sin(theta) / sin(HPBW/2)``, theta
    the angle from the pointing: a uniformly illuminated ~27 m aperture, i.e. the 38 m station
    with the taper that gives the reference's HPBW of 6.6 deg at 100 MHz.
    """
    n = lmn(ra, dec, pointing)[:, 2]
    sin_theta = np.sqrt(np.clip(1.0 - n * n, 0.0, None))
    half = np.sin(0.5 * hpbw(np.atleast_1d(frequency)))
    x = AIRY_HALF_POWER_X * sin_theta[:, None] / half[None, :]
    safe = np.where(x == 0.0, 1.0, x)
    amp = np.where(x == 0.0, 1.0, 2.0 * j1(safe) / safe)
    return amp * amp


def beam_radius(frequency: float, x: float = 3.0) -> float:
    """Angle (rad) from the pointing where the Airy argument reaches ``x`` (3.0: ~5 % power)."""
    return float(np.arcsin(min(1.0, x / AIRY_HALF_POWER_X * np.sin(0.5 * hpbw(frequency)))))


def _cap_positions(
    rng: np.random.Generator, n: int, centre: tuple[float, float], radius: float
) -> tuple[np.ndarray, np.ndarray]:
    """n points uniform on the spherical cap of ``radius`` rad around ``centre`` (ra, dec rad)."""
    cos_t = rng.uniform(np.cos(radius), 1.0, n)
    phi = rng.uniform(0.0, 2 * np.pi, n)
    sin_t = np.sqrt(1.0 - cos_t**2)
    # (l, m, n) in the frame whose pole is the centre, then rotated to (ra, dec)
    l_, m, nn = sin_t * np.sin(phi), sin_t * np.cos(phi), cos_t
    ra0, dec0 = centre
    sd0, cd0 = np.sin(dec0), np.cos(dec0)
    dec = np.arcsin(np.clip(m * cd0 + nn * sd0, -1.0, 1.0))
    ra = ra0 + np.arctan2(l_, nn * cd0 - m * sd0)
    return np.mod(ra, 2 * np.pi), dec


def expected_source_count(
    flux_limit: float, fov_radius: float, *, density: float = 0.1, slope: float = 1.5
) -> float:
    """Mean number of sources above ``flux_limit`` Jy within ``fov_radius`` rad (see below)."""
    area = 2 * np.pi * (1 - np.cos(fov_radius)) / SQ_DEG
    return float(density * (flux_limit / 3.0) ** (-slope) * area)


def gleam_like_sources(
    rng: np.random.Generator,
    phase_centre: tuple[float, float],
    *,
    fov_radius: float,
    flux_limit: float,
    ref_freq: float = 1e8,
    density: float = 0.1,
    slope: float = 1.5,
    flux_max: float = 200.0,
    spectral_index_mean: float = -0.7,
    spectral_index_sigma: float = 0.2,
) -> SkyModel:
    """A deterministic GLEAM-like point-source population (intrinsic fluxes, no beam).

    Integral counts ``N(>S) = density * (S / 3 Jy)**-slope`` per square degree at ``ref_freq``
    (Euclidean slope 1.5; 0.1 deg^-2 above 3 Jy at 100 MHz is GLEAM's order of magnitude),
    fluxes from the matching truncated power law between ``flux_limit`` and ``flux_max``,
    positions uniform on the cap of ``fov_radius`` rad, spectral index N(-0.7, 0.2).
    The same ``rng`` state gives the same sources; sources come sorted by decreasing flux.
    """
    mean = expected_source_count(flux_limit, fov_radius, density=density, slope=slope)
    n = int(rng.poisson(mean))
    u = rng.uniform(0.0, 1.0, n)
    lo, hi = flux_limit ** (-slope), flux_max ** (-slope)
    flux = (lo - u * (lo - hi)) ** (-1.0 / slope)  # inverse CDF of the truncated power law
    ra, dec = _cap_positions(rng, n, phase_centre, fov_radius)
    alpha = rng.normal(spectral_index_mean, spectral_index_sigma, n)
    order = np.argsort(-flux, kind="stable")
    return SkyModel(
        ra=ra[order],
        dec=dec[order],
        flux=flux[order],
        ref_freq=np.full(n, ref_freq),
        spectral_index=alpha[order, None],
        names=[f"GLEAM_LIKE_{i:04d}" for i in range(n)],
    )


def apparent_sky(
    sky: SkyModel,
    pointing: tuple[float, float],
    frequencies: np.ndarray,
    *,
    nterms: int = 3,
    response: np.ndarray | float | None = None,
) -> SkyModel:
    """The beam-attenuated sky as seen at ``frequencies`` (Hz), as a log-polynomial model.

    At each frequency the apparent flux is intrinsic x ``response`` (nsrc, nfreq) power
    response, by default :func:`station_beam` (1.0: no beam); the spectrum is
    fitted by a log10 polynomial of ``min(nterms, nfreq - 1)`` spectral terms (exact when
    nfreq <= nterms + 1).  The visibilities are predicted from this model, so the truth file
    describes exactly what the data contain.  Reference frequency: the middle of the band.
    """
    freqs = np.asarray(frequencies, dtype=np.float64)
    ref = float(np.sqrt(freqs.min() * freqs.max()))
    if response is None:
        response = station_beam(sky.ra, sky.dec, pointing, freqs)
    flux = sky.flux_at(freqs) * response
    nsi = max(1, min(nterms, freqs.size - 1))
    if freqs.size == 1:  # exact at that frequency; the intrinsic index is kept for the record
        return dataclasses.replace(
            sky,
            flux=flux[:, 0],
            ref_freq=np.full(len(sky), freqs[0]),
            spectral_index=sky.spectral_index[:, :1].copy(),
            names=list(sky.names),
        )
    x = np.log10(freqs / ref)
    design = np.stack([x ** (k + 1) for k in range(nsi)], axis=1)  # (nfreq, nsi)
    design = np.concatenate([np.ones((freqs.size, 1)), design], axis=1)
    y = np.log10(np.maximum(flux, 1e-300)).T  # (nfreq, nsrc)
    coef, *_ = np.linalg.lstsq(design, y, rcond=None)  # (1 + nsi, nsrc)
    # log10 S = a0 + sum_k a_k x^(k+1)  ==  S0 * (nu/nu0)^(c0 + c1 x + ...), c_k = a_(k+1)
    return dataclasses.replace(
        sky,
        flux=10.0 ** coef[0],
        ref_freq=np.full(len(sky), ref),
        spectral_index=coef[1:].T,
        names=list(sky.names),
    )


def catalogue_view(
    sky: SkyModel, rng: np.random.Generator, *, flux_error: float, position_error: float
) -> SkyModel:
    """``sky`` as a survey catalogue records it: each flux times N(1, ``flux_error``) (kept
    positive), each position moved by N(0, ``position_error`` rad) east and north.

    For calibration models that are close to, but not, the truth.
    """
    n = len(sky)
    scale = np.maximum(rng.normal(1.0, flux_error, n), 0.05) if flux_error > 0 else np.ones(n)
    east, north = (
        rng.normal(0.0, position_error, (2, n)) if position_error > 0 else np.zeros((2, n))
    )
    return dataclasses.replace(
        sky,
        ra=sky.ra + east / np.maximum(np.cos(sky.dec), 1e-6),
        dec=np.clip(sky.dec + north, -np.pi / 2, np.pi / 2),
        flux=sky.flux * scale,
        ref_freq=sky.ref_freq.copy(),
        spectral_index=sky.spectral_index.copy(),
        names=list(sky.names),
    )
