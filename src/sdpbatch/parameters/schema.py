"""The schema of the workflow parameters: :data:`SCHEMA`, one :class:`Field` a parameter.

The single source of each parameter's type, default, allowed values, help text, section and
command-line flag; the seed's example parameters are the defaults.  Also the rule of product
file prefixes (:func:`is_file_prefix`; buffer names follow the one rule,
:func:`sdpbatch.vocabulary.is_buffer_name`) and the special values of the parameters that
otherwise name a file (:data:`PATH_FIELDS`).
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sdpbatch.parameters.gain_terms import TERMS
from sdpbatch.vocabulary import (
    BUFFER_NAME_ALLOWED,
    CATALOGUE_FILE,
    DEFAULT_PRODUCT_PREFIX,
    SIMULATION_FILE,
    is_buffer_name,
    product_files,
)

FILE_PREFIX = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,95}$")
"""A prefix of product file names (no path separator, not hidden)."""
COLUMN = re.compile(r"^[A-Z][A-Z0-9_]{0,63}$")
"""A MeasurementSet column name."""

GLEAM_LIKE = "gleam-like"
DEFAULT_LAYOUT = "ska1-low-central"
CATALOGUE = "catalogue"
NO_MODEL = "none"
BEAMS = ("airy", "everybeam", "none")
"""The station beams the simulation knows (parameter ``beam``)."""
PB_LIMIT = 0.005
"""The primary-beam corrected image is blank (NaN) where the beam is below this (WSClean's
``-primary-beam-limit`` default)."""


def is_file_prefix(name: str) -> bool:
    """True if ``name`` can prefix product file names in an output folder."""
    return bool(FILE_PREFIX.fullmatch(name)) and ".." not in name


@dataclass(frozen=True)
class Field:
    """One parameter: its type, default, check, help, section and command-line flag.

    ``flag`` is how the command line spells it, with a metavar (``"-size N"``); empty means
    ``--name-with-dashes`` and a metavar from the kind.
    """

    name: str
    kind: str  # "int", "float", "bool", "str", "int-list", "optional-int", "optional-float"
    default: Any
    help: str
    check: Callable[[Any], bool] | None = None
    allowed: str = ""  # human description of the allowed values
    section: str = "execution"  # which commands offer the flag: cli.options.SECTION_COMMANDS
    flag: str = ""

    @property
    def spelling(self) -> str:
        """The command-line option, e.g. ``-size`` or ``--n-workers``."""
        return self.flag.split()[0] if self.flag else "--" + self.name.replace("_", "-")

    @property
    def usage(self) -> str:
        """The option with its argument, e.g. ``-size N`` (a bool flag alone)."""
        if self.flag or self.kind == "bool":
            return self.flag or self.spelling
        metavar = {"int-list": "N,N,..."}.get(self.kind, self.name.split("_")[-1].upper())
        return f"{self.spelling} {metavar}"


def _range(lo: float | None = None, hi: float | None = None, *, lo_open: bool = False):
    def check(v: float) -> bool:
        if isinstance(v, float) and not math.isfinite(v):
            return False
        if lo is not None and (v <= lo if lo_open else v < lo):
            return False
        return hi is None or v <= hi

    return check


def _optional(check: Callable[[Any], bool]) -> Callable[[Any], bool]:
    return lambda v: v is None or check(v)


def _term_fields() -> tuple[Field, ...]:
    """Each gain term's schedule: its first self-calibration cycle, then the solution
    intervals that are parameters (:data:`~sdpbatch.parameters.gain_terms.TERMS`)."""
    first = [
        Field(t.first_parameter, "int", t.first_cycle, f"first major cycle that solves {t.name}",
              _range(0, 100), "0 to 100", "calibration", f"--first-selfcal-{t.name} N")
        for t in TERMS.values()
    ]  # fmt: skip
    intervals = [
        Field(t.interval_parameter, "optional-float", t.interval,
              f"solution interval of {t.name} (s) (null: the whole observation)",
              _optional(lambda v: v > 0 and math.isfinite(v)), "> 0 s, or null", "calibration",
              f"--timeslice-{t.name} SECONDS")
        for t in TERMS.values() if t.interval_parameter
    ]  # fmt: skip
    return (*first, *intervals)


SCHEMA: tuple[Field, ...] = (
    # --- the seed's workflow parameters -------------------------------------------------------
    Field("n_workers", "int", 4, "number of Dask workers to deploy", _range(1, 256), "1 to 256"),
    Field("freq_min", "float", 0.9e8, "minimum frequency (Hz)", _range(1e6, 1e12),
          "1e6 to 1e12 Hz", "observation"),
    Field("freq_max", "float", 1.1e8, "maximum frequency (Hz)", _range(1e6, 1e12),
          "1e6 to 1e12 Hz", "observation"),
    Field("nfreqwin", "int", 8,
          "number of frequency channels, evenly spaced from freq_min to freq_max (the seed's "
          "frequency windows)",
          _range(1, 4096), "1 to 4096", "observation"),
    Field("channels_per_window", "int", 1,
          "channels per simulated MeasurementSet: 1 writes one file per channel (the seed's "
          "way), nfreqwin writes one file holding them all",
          _range(1, 4096), "1 to 4096, dividing nfreqwin", "observation"),
    Field("ntimes", "int", 5, "number of time samples over hour angles -30..+30 deg",
          _range(1, 100000), "1 to 100000", "observation"),
    Field("rmax", "float", 750.0, "maximum distance of stations from the array centre (m)",
          _range(0.0, 1e6, lo_open=True), "> 0 and <= 1e6 m", "observation"),
    Field("ra", "float", 0.0, "right ascension of the phase centre (deg, J2000)",
          _range(0.0, 360.0), "0 to 360 deg", "observation"),
    Field("dec", "float", -30.0, "declination of the phase centre (deg, J2000)",
          _range(-90.0, 90.0), "-90 to 90 deg", "observation"),
    Field("buffer_vis", "str", "buff-pb-mvp01-20200523-00001-vis",
          "name of the buffer reservation for visibilities", is_buffer_name, BUFFER_NAME_ALLOWED,
          "buffers"),
    Field("buffer_img", "str", "buff-pb-mvp01-20200523-00001-img",
          "name of the buffer reservation for images", is_buffer_name, BUFFER_NAME_ALLOWED,
          "buffers"),
    # --- simulation knobs ----------------------------------------------------------------------
    Field("seed", "int", 20200523, "random seed of sky model, gains and noise",
          _range(0, 2**32 - 1), "0 to 2**32-1", "simulation"),
    Field("phase_error", "float", 1.0, "rms of the station phase errors (rad)",
          _range(0.0, 10.0), "0 to 10 rad", "simulation"),
    Field("amplitude_error", "float", 0.0, "rms of the fractional station amplitude errors",
          _range(0.0, 0.5), "0 to 0.5", "simulation"),
    Field("add_noise", "bool", False, "add radiometer noise", section="simulation"),
    Field("tsys", "float", 20.0, "system temperature for radiometer noise (K)",
          _range(0.0, 1e5, lo_open=True), "> 0 K", "simulation"),
    Field("sky_model", "str", GLEAM_LIKE,
          f"'{GLEAM_LIKE}' for a synthetic GLEAM-like field, or a WSClean/DP3 sky model file",
          lambda v: bool(v), f"'{GLEAM_LIKE}' or a file path", "simulation", "--sky FILE"),
    Field("flux_limit", "float", 3.0, "flux limit of the synthetic sky model at 100 MHz (Jy)",
          _range(0.0, 1e4, lo_open=True), "> 0 Jy", "simulation"),
    Field("catalogue_flux_error", "float", 0.05,
          "fractional rms error of the fluxes in the catalogue the simulation writes for "
          f"calibration ({CATALOGUE_FILE}; the sky itself is exact)",
          _range(0.0, 1.0), "0 to 1", "simulation"),
    Field("catalogue_position_error", "float", 2.0,
          "rms error of each coordinate of the catalogue's positions (arcsec)",
          _range(0.0, 3600.0), "0 to 3600 arcsec", "simulation"),
    Field("beam", "str", "airy",
          "station beam of the simulation: 'airy' (one analytic power beam for every station "
          "and time), 'everybeam' (per station, time, direction and frequency: EveryBeam's "
          "SKA-Low element pattern times the station's array factor), 'none'",
          lambda v: v in BEAMS, ", ".join(BEAMS), "simulation"),
    Field("ionosphere_rms_phase", "float", 0.0,
          "rms phase (rad at 100 MHz) of a Kolmogorov TEC screen at 300 km drifting over the "
          "array, over regions beyond its outer scale (0: no ionosphere)",
          _range(0.0, 100.0), "0 to 100 rad", "simulation"),
    Field("ionosphere_scale_km", "float", 10.0,
          "diffractive scale of the screen (km): its phase structure function at 100 MHz is "
          "(r / scale)^(5/3) well inside the outer scale",
          _range(0.01, 1e4), "0.01 to 1e4 km", "simulation"),
    Field("ionosphere_speed", "float", 0.1, "speed of the screen drifting over the array (km/s)",
          _range(0.0, 10.0), "0 to 10 km/s", "simulation"),
    Field("layout", "str", DEFAULT_LAYOUT,
          f"'{DEFAULT_LAYOUT}' or a station layout file (east north up metres, text or CSV)",
          lambda v: bool(v), f"'{DEFAULT_LAYOUT}' or a file path", "observation",
          "--layout FILE"),
    Field("obs_date", "str", "2020-01-01", "date of the transit of the phase centre (UTC)",
          lambda v: bool(re.match(r"^\d{4}-\d{2}-\d{2}$", v)), "YYYY-MM-DD", "observation",
          "--obs-date YYYY-MM-DD"),
    # --- imaging ---------------------------------------------------------------------------------
    Field("npixel", "optional-int", 1024, "image size in pixels (null: advise from the data)",
          _optional(lambda v: 64 <= v <= 32768 and v % 2 == 0), "even, 64 to 32768, or null",
          "imaging", "-size N"),
    Field("cellsize", "optional-float", 0.0005,
          "pixel size (rad) (null: advise from the data); the flag takes units: 20asec, "
          "0.5amin, 0.01deg (a bare number is degrees, as in WSClean)",
          _optional(lambda v: 1e-9 < v < 0.1), "1e-9 to 0.1 rad, or null", "imaging",
          "-scale ANGLE"),
    Field("weighting", "str", "natural", "visibility weighting",
          lambda v: v in ("natural", "uniform", "briggs"), "natural, uniform, briggs", "imaging",
          "-weight natural|uniform|briggs R"),
    Field("robust", "float", 0.0, "Briggs robustness (the R of -weight briggs R)",
          _range(-2.0, 2.0), "-2 to 2", "imaging"),
    Field("epsilon", "float", 1e-5,
          "accuracy of the predicted model visibilities (degridding): it bounds the dynamic "
          "range", _range(1e-12, 1e-2), "1e-12 to 1e-2", "imaging", "-wgridder-accuracy E"),
    Field("grid_epsilon", "float", 1e-4,
          "accuracy of the gridded images (PSF, residuals) relative to their own peak; their "
          "errors are corrected by the next major cycle, so only the final residual keeps them",
          _range(1e-12, 1e-2), "1e-12 to 1e-2", "imaging"),
    Field("small_inversion", "bool", False,
          "grid on the fewest pixels that sample the image, then interpolate (WSClean's small "
          "inversion): less FFT work for an oversampled image, but the field's cut makes the "
          "interpolation ring: ~1e-5 of the peak inside and ~1e-3 at the edges on the seed's "
          "field, percents where the image is bright at its edges", section="imaging"),
    Field("prefix", "str", DEFAULT_PRODUCT_PREFIX,
          f"file name prefix of the ICAL products ({product_files('<prefix>')['restored']}, ...)",
          is_file_prefix, "letters, digits, '_', '.', '-'; 1 to 96, no path", "imaging",
          "-name PREFIX"),
    Field("pb_correct", "optional-bool", None,
          "primary-beam correction: write the average station power beam on the image grid "
          f"({product_files('<prefix>')['beam']}) and the restored image divided by it "
          f"({product_files('<prefix>')['restored_pb']}, blank where the beam is below "
          f"{PB_LIMIT}, WSClean's -primary-beam-limit), and the clean model as component lists "
          f"with apparent and intrinsic fluxes ({product_files('<prefix>')['sources']}, "
          f"{product_files('<prefix>')['sources_pb']}); the beam is the one the simulation "
          f"that wrote the MeasurementSets recorded (its {SIMULATION_FILE} beside them); "
          "null or auto: on when that beam is known and not 'none', off for MeasurementSets "
          "without one (logged); true: refused when no beam is known",
          None, "true, false, or null (auto)", "imaging", "--pb-correct true|false|auto"),
    # --- deconvolution ---------------------------------------------------------------------------
    Field("nmajor", "int", 5, "number of major (self-calibration) cycles", _range(0, 100),
          "0 to 100", "deconvolution", "-nmiter N"),
    Field("niter", "int", 1000,
          "clean iterations per minor cycle (WSClean's -niter counts the whole run)",
          _range(0, 10**7), "0 to 1e7", "deconvolution", "-niter N"),
    Field("clean_gain", "float", 0.25, "clean loop gain", _range(0.0, 1.0, lo_open=True),
          "> 0 and <= 1", "deconvolution", "-gain G"),
    Field("threshold", "float", 0.1,
          "absolute clean threshold (Jy); the flag takes units: 10mJy, 0.1Jy",
          _range(0.0, 1e6), ">= 0 Jy", "deconvolution", "-threshold FLUX"),
    Field("fractional_threshold", "float", 0.1,
          "clean threshold relative to the cycle's peak; -mgain M sets it to 1 - M "
          "(WSClean's major-cycle gain)",
          _range(0.0, 1.0), "0 to 1", "deconvolution", "-mgain M"),
    Field("auto_threshold", "optional-float", None,
          "clean threshold in units of the residual's robust rms (WSClean's -auto-threshold); "
          "the highest of the three thresholds stops a minor cycle (null: not used)",
          _optional(_range(0.0, 1e3, lo_open=True)), "> 0 sigma, or null", "deconvolution",
          "-auto-threshold SIGMA"),
    Field("scales", "int-list", [0, 3, 10], "multi-scale clean scales (pixels)",
          lambda v: 1 <= len(v) <= 10 and all(0 <= s <= 1000 for s in v),
          "1 to 10 integers from 0 to 1000", "deconvolution", "-multiscale-scales N,N,..."),
    Field("nmoment", "int", 2, "number of Taylor terms of the multi-frequency clean",
          _range(1, 4), "1 to 4", "deconvolution", "-fit-spectral-pol N"),
    Field("channel_blocks", "optional-int", None,
          "channel blocks each major cycle grids and predicts separately (WSClean's "
          "-channels-out): every visibility is gridded once, onto its block's image, and the "
          "Taylor images are formed from the blocks; exact when each block is one channel, "
          "each block costs one FFT per pass (null or auto: one block with one Taylor term, "
          "else nmoment blocks at least and one per 6 % of fractional bandwidth)",
          _optional(_range(1, 4096)), "1 to 4096, or null", "deconvolution", "-channels-out N"),
    Field("psf_support", "int", 128, "half-width of the PSF patch used by minor cycles (px)",
          _range(8, 4096), "8 to 4096", "deconvolution"),
    Field("parallel_deconvolution", "int", 0,
          "minor cycles split into sub-images of at most this many pixels a side, cleaned as "
          "tasks spread over the workers, each holding its tile and the PSF patch (WSClean's "
          "-parallel-deconvolution; seams follow the faintest residual); 0: the whole image "
          "in one task; unused when the PSF patch must be the whole PSF",
          lambda v: v == 0 or 64 <= v <= 65536, "0 (off) or 64 to 65536", "deconvolution",
          "-parallel-deconvolution N"),
    # --- calibration -----------------------------------------------------------------------------
    Field("selfcal", "bool", True, "self-calibrate during the major cycles",
          section="calibration"),
    Field("calibration_model", "str", CATALOGUE,
          "sky model to calibrate against before the first image, which fixes the absolute "
          "positions that self-calibration alone leaves free: 'catalogue' = the component "
          "list of the field when one is known (the simulation's, beside its MeasurementSets), "
          "'none' = self-calibration alone (the seed's way), or a component list file "
          "(WSClean format, apparent fluxes)",
          lambda v: bool(v.strip()), "'catalogue', 'none' or a file path", "calibration",
          "--sky-model FILE"),
    Field("calibration_context", "str", "T",
          "gain terms to solve: " + ", ".join(f"{t.name} ({t.meaning})" for t in TERMS.values()),
          lambda v: bool(v) and bool(re.fullmatch("".join(f"{re.escape(t)}?" for t in TERMS), v)),
          f"a non-empty subsequence of '{''.join(TERMS)}'", "calibration",
          f"--context {''.join(TERMS)}"),
    *_term_fields(),
    Field("ndirections", "int", 8,
          "calibration directions of the D term: the clean model's brightest components "
          "clustered, each with its Voronoi facet of the model (DP3 DDECal's directions)",
          _range(1, 100), "1 to 100", "calibration", "--directions N"),
    Field("solve_tolerance", "float", 1e-10,
          "StEFCal stops a solution cell once the largest change of its gains relative to its "
          "largest gain falls below this",
          _range(0.0, 1e-2, lo_open=True), "> 0 and <= 1e-2", "calibration"),
    Field("solve_max_iterations", "int", 500, "most StEFCal iterations of a solution cell",
          _range(1, 100000), "1 to 100000", "calibration"),
    Field("solve_step", "float", 0.5,
          "StEFCal's damping: each iteration moves the gains this fraction of the way to the "
          "new estimate (0.5 cancels the undamped update's overshoot to first order)",
          _range(0.0, 1.0, lo_open=True), "> 0 and <= 1", "calibration"),
    Field("solve_min_snr", "float", 3.0,
          "solutions below this signal-to-noise are flagged (CASA gaincal's minsnr; 0 flags "
          "none)",
          _range(0.0, 1e6), "0 to 1e6", "calibration"),
    Field("solve_outlier_sigma", "float", 8.0,
          "a station's amplitude beyond this many robust standard deviations of log|g| from "
          "the others of its cell, or a cell's from the station's other cells, is flagged "
          "(with 30 % amplitude scatter: beyond a factor ~11 from the median)",
          _range(0.0, 1e6, lo_open=True), "> 0 and <= 1e6", "calibration"),
    # --- data selection and write-back -----------------------------------------------------------
    Field("data_column", "str", "DATA", "MeasurementSet column that ICAL reads",
          lambda v: bool(COLUMN.match(v)), "a column name, e.g. DATA or CORRECTED_DATA",
          "selection", "--data-column NAME"),
    Field("field", "optional-int", None,
          "FIELD_ID of the rows ICAL reads (null: the only field of each MeasurementSet)",
          _optional(_range(0, 10**6)), ">= 0, or null", "selection", "--field ID"),
    Field("spw", "optional-int", None,
          "spectral window (DATA_DESC_ID) ICAL reads (null: the only one of each "
          "MeasurementSet)",
          _optional(_range(0, 10**6)), ">= 0, or null", "selection", "--spw ID"),
    Field("write_model", "bool", False,
          "write the final model visibilities into each MeasurementSet's MODEL_DATA",
          section="write-back"),
    Field("write_corrected", "bool", False,
          "write the data with the solved gains applied into each MeasurementSet's "
          "CORRECTED_DATA",
          section="write-back"),
    # --- execution -------------------------------------------------------------------------------
    Field("threads_per_worker", "int", 1, "threads per Dask worker (and ducc0 threads)",
          _range(1, 256), "1 to 256", flag="-j N"),
)  # fmt: skip

FIELDS: dict[str, Field] = {f.name: f for f in SCHEMA}


PATH_FIELDS: dict[str, tuple[str, ...]] = {
    "sky_model": (GLEAM_LIKE,),
    "layout": (DEFAULT_LAYOUT,),
    "calibration_model": (CATALOGUE, NO_MODEL),
}
"""Fields that name a file unless they hold one of their special values (in schema order)."""

RESULT_NEUTRAL = frozenset(
    {
        "n_workers",
        "threads_per_worker",
        "buffer_vis",
        "buffer_img",
        "prefix",
        "write_model",
        "write_corrected",
        "pb_correct",
    }
)
"""Fields that decide where and how fast a run goes, or what it also writes, not its images,
gains or visibilities: a run may be resumed, or its simulation reused, with other values."""
