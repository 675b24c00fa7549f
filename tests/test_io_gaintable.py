"""H5parm gain tables: every term (T, G, B) round-trips, LoSoTo reads them without a warning,
and tables written by LoSoTo (another axis order) are read back."""

from __future__ import annotations

import logging
import warnings

import numpy as np
import pytest
from losoto.h5parm import h5parm

from sdpbatch.io.gaintable import (
    GainTable,
    read_gain_table,
    read_gain_terms,
    write_gain_table,
    write_gain_terms,
)

NAMES = [f"S{k:03d}" for k in range(7)]


def _text(values) -> list[str]:
    """Names as text, whether LoSoTo hands back str or the bytes h5py reads (values, not types)."""
    return [v.decode() if isinstance(v, bytes) else str(v) for v in values]


def _terms(seed: int = 3) -> dict[str, GainTable]:
    """T: phase per integration; G: amplitude and phase, one interval; B: per channel, with
    flagged samples (ICAL's three terms)."""
    rng = np.random.default_rng(seed)
    positions = -2.5e6 + rng.normal(0, 500.0, (len(NAMES), 3))

    def term(ntime: int, nfreq: int, amplitude: bool, flagged: bool) -> GainTable:
        phase = rng.uniform(-np.pi, np.pi, (ntime, len(NAMES), nfreq))
        amp = rng.uniform(0.5, 1.5, phase.shape) if amplitude else np.ones(phase.shape)
        weights = (rng.random(phase.shape) > 0.2).astype(float) if flagged else None
        times = 58849.0 * 86400 + 10.0 * np.arange(ntime)
        freqs = np.linspace(0.9e8, 1.1e8, nfreq) if nfreq > 1 else [1e8]
        return GainTable(amp * np.exp(1j * phase), times, NAMES, positions, freqs, weights)

    return {
        "T": term(5, 1, False, False),
        "G": term(1, 1, True, False),
        "B": term(1, 4, True, True),
    }


def test_every_term_round_trips(tmp_path):
    terms = _terms()
    write_gain_terms(tmp_path / "g.h5", terms, source_direction=(0.1, -0.5))
    back = read_gain_terms(tmp_path / "g.h5")
    assert list(back) == ["T", "G", "B"]
    for name, table in terms.items():
        assert back[name].allclose(table), name
        assert read_gain_table(tmp_path / "g.h5", name).allclose(table)
    assert read_gain_table(tmp_path / "g.h5").allclose(terms["T"])  # the first by default
    with pytest.raises(ValueError, match="no term 'X'; it holds T, G, B"):
        read_gain_table(tmp_path / "g.h5", "X")
    changed = _terms()["B"]
    changed.gains[0, 3, 2] *= 1.001
    assert not back["B"].allclose(changed)  # the comparison can fail


def test_one_term_as_the_simulation_writes_it(tmp_path):
    t = _terms()["B"]
    write_gain_table(
        tmp_path / "truth.h5",
        gains=t.gains,
        times=t.times,
        antenna_names=t.antenna_names,
        antenna_positions=t.antenna_positions,
        frequencies=t.frequencies,
        weights=t.weights,
    )
    assert read_gain_table(tmp_path / "truth.h5", "G").allclose(t)


def test_losoto_reads_every_term_without_a_warning(tmp_path, caplog):
    terms = _terms()
    write_gain_terms(tmp_path / "g.h5", terms, source_direction=(0.1, -0.5))
    caplog.set_level(logging.DEBUG, logger="LoSoTo")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        # losoto 2.7.1 itself calls pytables with deprecated keywords: not about our file
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        with h5parm(str(tmp_path / "g.h5")) as h5:
            assert h5.getSolsetNames() == ["sol000"]
            solset = h5.getSolset("sol000")
            antennas, sources = solset.getAnt(), solset.getSou()
            tabs = {t.name: t for t in solset.getSoltabs()}
            assert sorted(tabs) == sorted(
                f"{kind}{k:03d}" for kind in ("phase", "amplitude") for k in range(3)
            )
            for k, table in enumerate(terms.values()):
                phase, amplitude = tabs[f"phase{k:03d}"], tabs[f"amplitude{k:03d}"]
                assert (phase.getType(), amplitude.getType()) == ("phase", "amplitude")
                assert phase.getAxesNames() == ["time", "freq", "ant", "dir", "pol"]
                vals, axes = phase.getValues()
                weights, _ = phase.getValues(weight=True)
                amps, _ = amplitude.getValues()
                assert _text(axes["ant"]) == NAMES and _text(axes["pol"]) == ["XX", "YY"]
                np.testing.assert_allclose(axes["time"], table.times)
                np.testing.assert_allclose(axes["freq"], table.frequencies)
                gains = amps * np.exp(1j * vals)  # (time, freq, ant, dir, pol)
                for pol in range(2):
                    got = gains[:, :, :, 0, pol].transpose(0, 2, 1)
                    np.testing.assert_allclose(got, table.gains, rtol=1e-12, atol=1e-12)
                expected = np.ones(table.gains.shape) if table.weights is None else table.weights
                np.testing.assert_array_equal(weights[:, :, :, 0, 0].transpose(0, 2, 1), expected)
    assert list(antennas) == NAMES
    np.testing.assert_allclose(antennas["S003"], terms["T"].antenna_positions[3])
    np.testing.assert_allclose(sources["pointing"], [0.1, -0.5])
    noisy = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert not noisy, [r.getMessage() for r in noisy]


@pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::tables.FlavorWarning")
def test_a_table_written_by_losoto_is_read(tmp_path):
    """LoSoTo's own writer, another axis order (ant, time, freq, pol), no TERM attribute."""
    t = _terms()["B"]
    with h5parm(str(tmp_path / "l.h5"), readonly=False) as h5:
        solset = h5.makeSolset("sol000")
        solset.obj.antenna.append(list(zip(NAMES, t.antenna_positions, strict=True)))
        axes = ["ant", "time", "freq", "pol"]
        values = [NAMES, t.times, t.frequencies, ["XX", "YY"]]
        for kind, data in (("phase", np.angle(t.gains)), ("amplitude", np.abs(t.gains))):
            vals = np.repeat(data.transpose(1, 0, 2)[..., None], 2, axis=-1)
            weight = np.repeat(t.weights.transpose(1, 0, 2)[..., None], 2, axis=-1)
            solset.makeSoltab(kind, axesNames=axes, axesVals=values, vals=vals, weights=weight)
    back = read_gain_terms(tmp_path / "l.h5")
    assert list(back) == ["000"]
    assert back["000"].allclose(t, rtol=1e-6, atol=1e-6)  # losoto stores positions as float32


def _direction_term(seed: int = 5) -> GainTable:
    """D: a phase per integration and direction (3 directions), some flagged."""
    rng = np.random.default_rng(seed)
    shape = (4, len(NAMES), 1, 3)
    return GainTable(
        np.exp(1j * rng.uniform(-np.pi, np.pi, shape)),
        58849.0 * 86400 + 10.0 * np.arange(4),
        NAMES,
        -2.5e6 + rng.normal(0, 500.0, (len(NAMES), 3)),
        [1e8],
        (rng.random(shape) > 0.2).astype(float),
        directions=["Dir00", "Dir01", "Dir02"],
        direction_radec=[[0.1, -0.5], [0.12, -0.48], [0.08, -0.53]],
    )


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_a_term_per_direction_round_trips_and_losoto_sees_its_directions(tmp_path):
    terms = {"T": _terms()["T"], "D": _direction_term()}
    terms["T"].antenna_positions = terms["D"].antenna_positions
    write_gain_terms(tmp_path / "g.h5", terms, source_direction=(0.1, -0.5))
    back = read_gain_terms(tmp_path / "g.h5")
    assert back["T"].directions is None and back["T"].allclose(terms["T"])
    assert back["D"].directions == ["Dir00", "Dir01", "Dir02"]
    assert back["D"].allclose(terms["D"])
    np.testing.assert_allclose(back["D"].direction_radec, terms["D"].direction_radec)
    with h5parm(str(tmp_path / "g.h5")) as h5:
        solset = h5.getSolset("sol000")
        sources = solset.getSou()
        phase = solset.getSoltab("phase001")
        vals, axes = phase.getValues()
    assert sorted(sources) == ["Dir00", "Dir01", "Dir02", "pointing"]
    np.testing.assert_allclose(sources["Dir02"], [0.08, -0.53])
    assert _text(axes["dir"]) == ["Dir00", "Dir01", "Dir02"]
    got = vals[:, 0, :, :, 0]  # (time, ant, dir) of XX
    np.testing.assert_allclose(got, np.angle(terms["D"].gains[:, :, 0, :]), atol=1e-12)
