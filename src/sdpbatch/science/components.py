"""The clean model as a component list (WSClean's ``-save-source-list``): apparent or intrinsic.

Each non-zero pixel of the Taylor-0 model is a point component at that pixel's direction.  Its
spectrum is the model's Taylor polynomial ``I(nu) = sum_k a_k t^k``, ``t = (nu - nu0) / nu0``,
at the channel blocks' frequencies, divided there by the primary beam for the intrinsic list,
then written as the log-polynomial the component lists use, fitted as the simulation fits its
apparent spectra (:func:`sdpbatch.science.skymodel.apparent_sky`); a negative component keeps
its sign, and one whose spectrum changes sign within the band (a pixel's Taylor terms need not
be a physical spectrum) is written flat at its mean over the blocks.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from sdpbatch.science.primary_beam import pixel_to_sky
from sdpbatch.science.skymodel import SkyModel, apparent_sky


def model_pixels(model_taylor: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(ix, iy) of the model's components: the non-zero pixels of its Taylor-0 image."""
    return np.nonzero(np.asarray(model_taylor)[0])


def model_components(
    model_taylor: np.ndarray,
    *,
    cellsize: float,
    phase_centre: tuple[float, float],
    reference_frequency: float,
    frequencies: np.ndarray,
    power: np.ndarray | None = None,
) -> SkyModel:
    """The components of ``model_taylor`` (nterm, N, N) Jy/pixel, in :func:`model_pixels`'
    order, spectra fitted over ``frequencies`` (nfreq,) Hz; ``power`` (ncomp, nfreq): the
    primary beam at each component and frequency, to give intrinsic fluxes."""
    model = np.asarray(model_taylor, dtype=np.float64)
    ix, iy = model_pixels(model)
    freqs = np.atleast_1d(np.asarray(frequencies, dtype=np.float64))
    t = (freqs - reference_frequency) / reference_frequency
    flux = sum(model[k][ix, iy][:, None] * t[None, :] ** k for k in range(model.shape[0]))
    flux = np.broadcast_to(flux, (ix.size, freqs.size))
    if power is not None:
        flux = flux / np.asarray(power, dtype=np.float64)
    ra, dec = pixel_to_sky(
        ix, iy, npixel=model.shape[1], cellsize=cellsize, phase_centre=phase_centre
    )
    flat = SkyModel(
        ra=ra, dec=dec, flux=np.ones(ix.size), ref_freq=np.full(ix.size, reference_frequency),
        spectral_index=np.zeros((ix.size, 1)), names=[f"c{k}" for k in range(ix.size)],
    )  # fmt: skip
    mean = flux.mean(axis=1)
    sign = np.where(mean < 0, -1.0, 1.0)
    crosses = np.any(flux * sign[:, None] <= 0, axis=1)  # no log-polynomial: flat at the mean
    response = np.where(crosses[:, None], np.abs(mean)[:, None], flux * sign[:, None])
    fitted = apparent_sky(flat, phase_centre, freqs, response=response)
    return dataclasses.replace(fitted, flux=fitted.flux * sign)
