"""A raw-like observation built directly with python-casacore, independently of sdpbatch.

What a preprocessed but never calibrated snapshot of a low-frequency array holds
(issue 12): one integration, wide channels, XX and YY with per-correlation flags and
WEIGHT_SPECTRUM, autocorrelations (thousands of Jy, as the system temperature makes them),
fully flagged tiles and channels holding garbage (NaN or huge values), flagged rows, and
per-station complex gains with 30 % amplitude scatter and a bandpass ripple; the sky is an
extended double source (two elliptical Gaussians) at the phase centre plus point sources.

Conventions as in ``casacore_ms_builder``: ``uvw = uvw(ANT2) - uvw(ANT1)``,
``V = S exp(+2 pi i nu/c (u l + v m + w (n - 1)))`` (times the Gaussian's taper
``exp(-2 pi^2 (s_maj^2 u_maj^2 + s_min^2 u_min^2))`` in wavelengths, position angle north
through east), and ``DATA_pq = g_p conj(g_q) TRUE_pq`` with p = ANTENNA1.  The noise of each
correlation has the variance its WEIGHT_SPECTRUM says (``1 / w`` per real and imaginary part).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from casacore import tables

from casacore_ms_builder import C, enu_to_itrf, local_to_uvw

ARCSEC = math.pi / 180 / 3600
FWHM_TO_SIGMA = 1 / (2 * math.sqrt(2 * math.log(2)))


@dataclass(frozen=True)
class Component:
    """A sky component at direction cosines (l, m) about the phase centre; major = 0: a point."""

    flux: float  # Jy at REF_FREQ
    l: float
    m: float
    spectral_index: float = -0.7
    major: float = 0.0  # FWHM rad
    minor: float = 0.0  # FWHM rad
    position_angle: float = 0.0  # rad, north through east


REF_FREQ = 1.2e8
SKY = (
    Component(12.0, -3.0e-4, 4.0e-4, -0.8, 150 * ARCSEC, 70 * ARCSEC, math.radians(35.0)),
    Component(9.0, 6.0e-4, -5.0e-4, -0.9, 120 * ARCSEC, 60 * ARCSEC, math.radians(140.0)),
    Component(4.0, 0.021, 0.013),
    Component(2.5, -0.028, 0.019, -0.5),
    Component(1.5, 0.012, -0.034),
    Component(1.0, -0.041, -0.022, -1.0),
)


@dataclass(frozen=True)
class RawLikeSpec:
    """The observation: SKA-Low-like stations, one integration, wide channels."""

    nant: int = 48
    radius: float = 1200.0  # m
    frequencies: tuple[float, ...] = tuple(1.12e8 + 1.0e6 * np.arange(16))
    channel_width: float = 1.0e6  # Hz: wide channels
    hour_angle: float = 0.2  # rad
    phase_centre: tuple[float, float] = (math.radians(15.0), math.radians(-30.0))
    amplitude_scatter: float = 0.3  # log-normal, per station
    ripple: float = 0.1  # relative bandpass ripple (per station) on a common 5 % shape
    sigma: float = 0.1  # Jy per real/imaginary part of a correlation at unit relative weight
    flagged_stations: tuple[int, ...] = (0, 13)
    flagged_channels: tuple[int, ...] = (4, 11)
    correlation_flag_fraction: float = 0.03  # per correlation (XX only, YY only)
    row_flag_fraction: float = 0.02
    auto_level: float = 5000.0  # Jy: system temperature in the autocorrelations
    seed: int = 2024
    mjd: float = 60310.5 * 86400.0


@dataclass(frozen=True)
class RawLikeTruth:
    """What the raw-like MeasurementSet holds (for the rows of cross-correlations).

    gains : (nant, nchan) complex, the injected ``g_p(nu)`` (DATA = g_p conj(g_q) TRUE).
    amplitude, bandpass : (nant,) station amplitude and (nant, nchan) bandpass of the gains.
    sigma_i : (nrow, nchan) standard deviation per real/imaginary part of Stokes I
        (``1/sqrt(weight_I)``) of each cross-correlation row (inf where flagged).
    flag_i : (nrow, nchan) bool, Stokes I samples a reader must flag.
    """

    spec: RawLikeSpec
    enu: np.ndarray
    frequencies: np.ndarray
    sky: tuple[Component, ...]
    gains: np.ndarray
    amplitude: np.ndarray
    bandpass: np.ndarray
    stokes_i_true: np.ndarray  # (nrow, nchan) uncorrupted, noise-free Stokes I
    sigma_i: np.ndarray
    flag_i: np.ndarray
    antenna1: np.ndarray
    antenna2: np.ndarray
    uvw: np.ndarray

    def component_radec(self) -> list[tuple[float, float]]:
        """(ra, dec) rad of each component (inverse SIN projection of its (l, m))."""
        ra0, dec0 = self.spec.phase_centre
        out = []
        for c in self.sky:
            n = math.sqrt(1 - c.l * c.l - c.m * c.m)
            dec = math.asin(c.m * math.cos(dec0) + n * math.sin(dec0))
            ra = ra0 + math.atan2(c.l, n * math.cos(dec0) - c.m * math.sin(dec0))
            out.append((ra % (2 * math.pi), dec))
        return out

    def write_component_list(self, path: Path) -> Path:
        """The true sky as a WSClean/DP3 component list (axes arcsec, orientation deg)."""
        lines = [
            "Format = Name, Type, Ra, Dec, I, SpectralIndex, LogarithmicSI, "
            f"ReferenceFrequency='{REF_FREQ:.0f}', MajorAxis, MinorAxis, Orientation"
        ]
        for k, (c, (ra, dec)) in enumerate(zip(self.sky, self.component_radec(), strict=True)):
            kind, shape = "POINT", ",,"
            if c.major > 0:
                kind = "GAUSSIAN"
                shape = f"{c.major / ARCSEC:.9f},{c.minor / ARCSEC:.9f},"
                shape += f"{math.degrees(c.position_angle):.9f}"
            lines.append(
                f"c{k},{kind},{_sexagesimal(math.degrees(ra) / 15, ':')},"
                f"{_sexagesimal(math.degrees(dec), '.')},{c.flux},[{c.spectral_index}],true,"
                f"{REF_FREQ:.0f},{shape}"
            )
        path.write_text("\n".join(lines) + "\n")
        return path


def _sexagesimal(value: float, separator: str) -> str:
    sign = "-" if value < 0 else "+"
    total = abs(value) * 3600
    whole, minutes = divmod(total, 3600)
    minutes, seconds = divmod(minutes, 60)
    return f"{sign}{int(whole):02d}{separator}{int(minutes):02d}{separator}{seconds:09.6f}"


def true_visibilities(uvw: np.ndarray, freqs: np.ndarray, sky) -> np.ndarray:
    """Stokes I (nrow, nchan) of the components, written out from the conventions above."""
    vis = np.zeros((uvw.shape[0], freqs.size), complex)
    for c in sky:
        n = math.sqrt(1 - c.l**2 - c.m**2)
        path = uvw @ np.array([c.l, c.m, n - 1])
        flux = c.flux * (freqs / REF_FREQ) ** c.spectral_index
        taper = np.ones((uvw.shape[0], freqs.size))
        if c.major > 0:  # near the phase centre: the component's tangent plane is (u, v)
            sp, cp = math.sin(c.position_angle), math.cos(c.position_angle)
            u_maj = (uvw[:, 0] * sp + uvw[:, 1] * cp)[:, None] * freqs / C
            u_min = (uvw[:, 0] * cp - uvw[:, 1] * sp)[:, None] * freqs / C
            s_maj, s_min = c.major * FWHM_TO_SIGMA, c.minor * FWHM_TO_SIGMA
            taper = np.exp(-2 * math.pi**2 * ((s_maj * u_maj) ** 2 + (s_min * u_min) ** 2))
        vis += flux * taper * np.exp(2j * math.pi * path[:, None] * freqs[None, :] / C)
    return vis


def _gains(spec: RawLikeSpec, rng: np.random.Generator, freqs: np.ndarray):
    amplitude = np.exp(spec.amplitude_scatter * rng.normal(size=spec.nant))
    phase = rng.uniform(-math.pi, math.pi, spec.nant)
    x = (freqs - freqs[0]) / (freqs[-1] - freqs[0])  # 0..1 across the band
    common = 1 + 0.05 * np.cos(2 * math.pi * 1.5 * x)
    shift = rng.uniform(0, 2 * math.pi, (spec.nant, 1))
    ripple = 1 + spec.ripple * np.sin(2 * math.pi * 2.0 * x[None, :] + shift)
    delay = rng.normal(0, 0.3, (spec.nant, 1)) * 2 * math.pi * x[None, :]  # rad across the band
    bandpass = common * ripple * np.exp(1j * delay)
    gains = amplitude[:, None] * np.exp(1j * phase)[:, None] * bandpass
    return gains, amplitude, bandpass


def build_raw_like_ms(path: Path, spec: RawLikeSpec = RawLikeSpec()) -> RawLikeTruth:
    """Write the raw-like MeasurementSet at ``path``; return its truth."""
    rng = np.random.default_rng(spec.seed)
    freqs = np.asarray(spec.frequencies, dtype=np.float64)
    nant = spec.nant
    r = spec.radius * np.sqrt(rng.random(nant))
    angle = 2 * math.pi * rng.random(nant)
    enu = np.stack([r * np.cos(angle), r * np.sin(angle), rng.normal(0, 1.0, nant)], axis=1)
    a1, a2 = np.triu_indices(nant)  # autocorrelations included, p <= q
    station = local_to_uvw(enu, spec.hour_angle, spec.phase_centre[1])
    uvw = station[a2] - station[a1]
    auto = a1 == a2
    gains, amplitude, bandpass = _gains(spec, rng, freqs)
    true_i = true_visibilities(uvw, freqs, SKY)
    gpq = gains[a1] * np.conj(gains[a2])
    corrupted = gpq * true_i
    corrupted[auto] = spec.auto_level * np.abs(gains[a1[auto]]) ** 2
    data, weight, flag, flag_row = _correlations(spec, rng, corrupted)
    _write_main(path, spec, uvw, a1, a2, data, weight, flag, flag_row)
    _write_subtables(path, spec, enu, freqs)
    cross = ~auto
    wxx, wyy = weight[cross][..., 0].astype(float), weight[cross][..., 1].astype(float)
    flag_i = flag[cross].any(axis=2) | flag_row[cross][:, None]
    weight_i = np.where(flag_i, 0.0, 4 * wxx * wyy / (wxx + wyy))
    with np.errstate(divide="ignore"):
        sigma_i = np.where(weight_i > 0, 1 / np.sqrt(weight_i), np.inf)
    return RawLikeTruth(
        spec=spec,
        enu=enu,
        frequencies=freqs,
        sky=SKY,
        gains=gains,
        amplitude=amplitude,
        bandpass=bandpass,
        stokes_i_true=true_i[cross],
        sigma_i=sigma_i,
        flag_i=flag_i,
        antenna1=a1[cross],
        antenna2=a2[cross],
        uvw=uvw[cross],
    )


def _correlations(spec: RawLikeSpec, rng, corrupted: np.ndarray):
    """XX = YY = corrupted I plus noise of the weights' variance; flags with garbage data."""
    nrow, nchan = corrupted.shape
    x = np.linspace(-1, 1, nchan)
    relative = (1.0 - 0.5 * x**4)[None, :, None] * rng.uniform(0.8, 1.0, (nrow, 1, 2))
    weight = (relative / spec.sigma**2).astype(np.float32)  # per correlation
    noise_sigma = 1 / np.sqrt(weight)
    noise = noise_sigma * (
        rng.normal(size=(nrow, nchan, 2)) + 1j * rng.normal(size=(nrow, nchan, 2))
    )
    data = corrupted[:, :, None] + noise
    flag = np.zeros((nrow, nchan, 2), bool)
    for k in range(2):  # one correlation only
        one = rng.random((nrow, nchan)) < spec.correlation_flag_fraction
        flag[one, k] = True
        data[one, k] = 1e3 * (1 + 1j)
    flag[:, list(spec.flagged_channels), :] = True
    data[:, list(spec.flagged_channels), :] = 1e4  # RFI
    a1, a2 = np.triu_indices(spec.nant)
    for k, s in enumerate(spec.flagged_stations):
        dead = (a1 == s) | (a2 == s)
        flag[dead] = True
        data[dead] = np.nan if k == 0 else 1e5
    flag_row = rng.random(nrow) < spec.row_flag_fraction
    data[flag_row] = -1e4
    return data.astype(np.complex64), weight, flag, flag_row


def _write_main(path, spec, uvw, a1, a2, data, weight, flag, flag_row) -> None:
    nrow = uvw.shape[0]
    desc = tables.maketabdesc(
        [
            tables.makearrcoldesc("DATA", 0j, ndim=2, valuetype="complex"),
            tables.makearrcoldesc("WEIGHT_SPECTRUM", 0.0, ndim=2, valuetype="float"),
        ]
    )
    with tables.default_ms(str(path), desc) as ms:
        ms.addrows(nrow)
        ms.putcol("DATA", data)
        ms.putcol("WEIGHT_SPECTRUM", weight)
        ms.putcol("WEIGHT", weight.mean(axis=1))
        ms.putcol("SIGMA", 1 / np.sqrt(weight.mean(axis=1)))
        ms.putcol("FLAG", flag)
        ms.putcol("FLAG_ROW", flag_row)
        ms.putcol("UVW", uvw)
        ms.putcol("ANTENNA1", a1.astype(np.int32))
        ms.putcol("ANTENNA2", a2.astype(np.int32))
        for col in ("TIME", "TIME_CENTROID"):
            ms.putcol(col, np.full(nrow, spec.mjd))
        for col in ("INTERVAL", "EXPOSURE"):
            ms.putcol(col, np.full(nrow, 10.0))


def _write_subtables(path: Path, spec: RawLikeSpec, enu: np.ndarray, freqs: np.ndarray) -> None:
    nchan, nant = freqs.size, spec.nant
    width = np.full((1, nchan), spec.channel_width)
    direction = np.array([[[spec.phase_centre[0], spec.phase_centre[1]]]])
    subtables = {
        "SPECTRAL_WINDOW": dict(
            CHAN_FREQ=freqs[None], CHAN_WIDTH=width, EFFECTIVE_BW=width, RESOLUTION=width,
            NUM_CHAN=np.array([nchan]), REF_FREQUENCY=freqs[:1],
            TOTAL_BANDWIDTH=np.array([spec.channel_width * nchan]),
        ),
        "POLARIZATION": dict(
            NUM_CORR=np.array([2]), CORR_TYPE=np.array([[9, 12]], np.int32),
            CORR_PRODUCT=np.array([[[0, 0], [1, 1]]], np.int32),
        ),
        "DATA_DESCRIPTION": dict(SPECTRAL_WINDOW_ID=np.array([0]), POLARIZATION_ID=np.array([0])),
        "FIELD": dict(
            PHASE_DIR=direction, DELAY_DIR=direction, REFERENCE_DIR=direction,
            NAME=np.array(["RAWLIKE"]),
        ),
        "OBSERVATION": dict(
            TELESCOPE_NAME=np.array(["SKA1-Low"]), OBSERVER=np.array(["raw_like_ms"]),
            TIME_RANGE=np.array([[spec.mjd - 5.0, spec.mjd + 5.0]]),
        ),
        "ANTENNA": dict(
            POSITION=enu_to_itrf(enu), DISH_DIAMETER=np.full(nant, 38.0),
            NAME=np.array([f"S{k:03d}" for k in range(nant)]), STATION=np.array(["SKA"] * nant),
            TYPE=np.array(["GROUND-BASED"] * nant), MOUNT=np.array(["X-Y"] * nant),
        ),
    }  # fmt: skip
    for name, columns in subtables.items():
        with tables.table(str(path / name), readonly=False, ack=False) as t:
            t.addrows(len(next(iter(columns.values()))))
            for column, value in columns.items():
                t.putcol(column, value)
