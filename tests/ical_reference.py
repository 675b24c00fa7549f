"""Stored reference results of ICAL, to check that a restructuring changes nothing.

``python3 tests/ical_reference.py`` runs the cases below with the code as it is and writes
``tests/data/ical_reference.npz``; ``tests/test_ical_reference.py`` runs them again and
compares (images to 1e-6 of the peak).  Regenerate only on purpose (a change of the science),
never to make the test pass.  History: made before ICAL became a package (issue 10) and
checked against it and against the channel blocks with a block per channel (issue 11); made
again when the robust solver (normalised self-calibration amplitudes, SNR flags) and the
CLEAN's far-sidelobe stop came in (issue 12).

Small images (128 pixels) keep the file small (float32 images: ~6e-8 of their peak); their
pixels sample the beam well (a beam fitted to a few pixels would jump with the PSF's last
digits).
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
REFERENCE = HERE / "data" / "ical_reference.npz"

SMALL = dict(
    rmax=200.0,
    ntimes=3,
    nfreqwin=3,
    npixel=128,
    cellsize=0.0015,  # ~5 pixels across the beam: a well-sampled beam fit
    n_workers=1,
    threads_per_worker=1,
)
"""Single-channel windows: the shape of the seed's data at a fraction of the size."""


@dataclass(frozen=True)
class Case:
    name: str
    params: dict
    sky_model: bool  # calibrate first against the simulation's catalogue


CASES = (
    Case("selfcal-T", {}, sky_model=False),
    Case(
        "catalogue-TGB-briggs",
        dict(
            amplitude_error=0.05,
            calibration_context="TGB",
            timeslice_G=1.0,
            weighting="briggs",
            robust=0.0,
        ),
        sky_model=True,
    ),
)


def simulate_case(case: Case, out: Path):
    """(Parameters, MeasurementSet paths, catalogue SkyModel or None) of a case."""
    from sdpbatch.execution.simulate import simulate
    from sdpbatch.io.skymodel_file import read_sky_model
    from sdpbatch.parameters import Parameters
    from sdpbatch.vocabulary import CATALOGUE_FILE

    params = Parameters(**SMALL, **case.params)
    products = simulate(params, out)
    sky = read_sky_model(products.truth_dir / CATALOGUE_FILE) if case.sky_model else None
    return params, products.ms_paths, sky


def multichannel_case(out: Path):
    """Two MeasurementSets built with casacore, 3 channels each, uniform weighting."""
    sys.path.insert(0, str(HERE))
    from casacore_ms_builder import MsSpec, build_ms, random_enu
    from sdpbatch.parameters import Parameters

    rng = np.random.default_rng(21)
    enu = random_enu(30, 200.0, seed=5)
    gains = np.exp(1j * rng.normal(0, 1.0, (3, 30)))
    sources = [(10.0, 0.02, -0.03), (5.0, -0.05, 0.04), (3.0, 0.06, 0.05)]
    paths = []
    for w, f0 in enumerate((0.95e8, 1.05e8)):
        spec = MsSpec(
            enu=enu,
            frequencies=f0 + np.array([-1e6, 0.0, 1e6]),
            ntimes=3,
            sources=sources,
            spectral_index=-0.7,
            gains=gains,
            autocorrelations=False,  # how a reader treats them is not what is compared
        )
        paths.append(out / f"window{w}.ms")
        build_ms(paths[-1], spec)
    params = Parameters(npixel=128, cellsize=0.0015, weighting="uniform", threads_per_worker=1)
    return params, paths, None


def figures(result) -> dict[str, np.ndarray]:
    """What is compared: images (float32), the model's nonzero pixels, every gain term."""
    out = {
        "restored": result.restored.astype(np.float32),
        "residual_taylor": result.residual_taylor.astype(np.float32),
        "residual_cube": result.residual_cube.astype(np.float32),
        "model_index": np.flatnonzero(result.model_taylor),
        "model_value": result.model_taylor.ravel()[np.flatnonzero(result.model_taylor)],
    }
    for term, solution in result.solutions.items():
        out[f"gains_{term}"] = solution.gains
    return out


def run_all(work: Path, one_block_per_channel: bool = False) -> dict[str, dict[str, np.ndarray]]:
    """Every case's figures; ``one_block_per_channel``: image each channel as its own block
    (the exact Taylor computation the reference was made with, before channel blocks)."""
    from sdpbatch.execution.ical import run_ical

    def run(params, paths, sky=None):
        if one_block_per_channel:  # and every image computed to the accuracy of the reference
            nchan = sum(len(read_measurement_set_metadata(p).frequency) for p in paths)
            params = params.replace(
                channel_blocks=nchan, grid_epsilon=params.epsilon, small_inversion=False
            )
        return figures(run_ical(paths, params, sky_model=sky))

    from sdpbatch.io.ms_read import read_measurement_set_metadata

    results = {}
    for case in CASES:
        results[case.name] = run(*simulate_case(case, work / case.name))
    (work / "multichannel").mkdir()
    results["multichannel-uniform"] = run(*multichannel_case(work / "multichannel"))
    return results


def main() -> None:
    import tempfile

    from sdpbatch.offline import configure_astropy_offline

    configure_astropy_offline()
    with tempfile.TemporaryDirectory() as tmp:
        results = run_all(Path(tmp), one_block_per_channel=True)
    flat = {f"{case}/{key}": value for case, r in results.items() for key, value in r.items()}
    REFERENCE.parent.mkdir(exist_ok=True)
    np.savez_compressed(REFERENCE, **flat)
    print(f"wrote {REFERENCE} ({REFERENCE.stat().st_size / 1024:.0f} KiB)")


if __name__ == "__main__":
    main()
