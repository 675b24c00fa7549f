"""The gain terms and the solver options have one home each: the places that name a term (the
schema, the solver, ICAL's calibration schedule) derive from the table, and the solver's knobs
from the schema."""

from __future__ import annotations

import dataclasses
import inspect
import itertools

import numpy as np
import pytest

from sdpbatch.execution.ical.settings import CalibrationSchedule
from sdpbatch.parameters import FIELDS, SCHEMA, ParameterError, Parameters
from sdpbatch.parameters.gain_terms import TERMS
from sdpbatch.science import solve
from sdpbatch.science.solve import SolverOptions, finish_term, solve_cells, solve_term, stefcal

ALL = "".join(TERMS)


def _subsequences(names: str) -> set[str]:
    return {"".join(c) for n in range(len(names) + 1) for c in itertools.combinations(names, n)}


def test_the_schema_context_is_the_tables_terms():
    f = FIELDS["calibration_context"]
    allowed = _subsequences(ALL) - {""}
    for word in allowed:
        Parameters(calibration_context=word)
    words = {"".join(p) for n in range(1, 4) for p in itertools.product(ALL + "X", repeat=n)}
    for word in words - allowed:
        with pytest.raises(ParameterError, match="calibration_context"):
            Parameters(calibration_context=word)
    assert all(f"{t.name} ({t.meaning})" in f.help for t in TERMS.values())


def test_every_term_has_its_schedule_parameters_and_no_other_term_has():
    names = set()
    for t in TERMS.values():
        assert FIELDS[t.first_parameter].default == t.first_cycle
        names.add(t.first_parameter)
        if t.interval_parameter is not None:
            assert FIELDS[t.interval_parameter].default == t.interval
            names.add(t.interval_parameter)
    per_term = {f.name for f in SCHEMA if f.name.startswith(("first_selfcal_", "timeslice_"))}
    assert per_term == names


def test_the_schedule_takes_every_term_from_the_parameters():
    params = Parameters(calibration_context=ALL)
    changed = {t.first_parameter: t.first_cycle + 1 for t in TERMS.values()}
    changed |= {t.interval_parameter: 7.0 for t in TERMS.values() if t.interval_parameter}
    schedule = CalibrationSchedule.from_parameters(params.replace(**changed))
    assert list(schedule.first) == list(schedule.spans) == list(TERMS)
    for t in TERMS.values():
        assert schedule.first[t.name] == t.first_cycle + 1
        assert schedule.spans[t.name] == (7.0 if t.interval_parameter else t.interval)
    only = CalibrationSchedule.from_parameters(params.replace(calibration_context=ALL[-1]))
    assert list(only.first) == [ALL[-1]]


def test_the_solver_uses_the_table():
    assert solve.TERMS is TERMS
    with pytest.raises(ValueError, match=f"allowed: {', '.join(TERMS)}"):
        finish_term(
            solve.CellSolutions.none(3),
            term="X",
            initial=np.ones((1, 3, 1)),
            normalise=False,
            options=SolverOptions(),
        )


def test_the_solver_options_are_the_schemas():
    """One set of defaults (the schema's), every ``solve_*`` parameter reaches the solver, and
    no solver function has a default of its own."""
    knobs = [f.name for f in SCHEMA if f.name.startswith("solve_")]
    defaults = SolverOptions()
    for name in knobs:
        assert getattr(defaults, name.removeprefix("solve_")) == FIELDS[name].default
    params = Parameters(
        solve_tolerance=1e-6,
        solve_max_iterations=7,
        solve_step=0.25,
        solve_min_snr=5.0,
        solve_outlier_sigma=4.0,
    )
    options = CalibrationSchedule.from_parameters(params).solver
    for name in knobs:
        assert getattr(options, name.removeprefix("solve_")) == getattr(params, name)
    option_names = {f.name for f in dataclasses.fields(SolverOptions)}
    for fn in (solve_cells, stefcal, solve_term, finish_term):
        signature = inspect.signature(fn).parameters
        assert signature["options"].default is inspect.Parameter.empty, fn.__name__
        assert not option_names & set(signature), fn.__name__
