"""The parameter model: defaults are the seed's example, bad input names the field."""

from __future__ import annotations

import dataclasses
import inspect
import json
import re
from pathlib import Path

import pytest

from sdpbatch.cli.options import describe_parameters
from sdpbatch.parameters import (
    FIELDS,
    SCHEMA,
    ParameterError,
    Parameters,
    load_parameters,
    parse_parameters,
)

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"

SEED_EXAMPLE = {
    "n_workers": 4,
    "freq_min": 0.9e8,
    "freq_max": 1.1e8,
    "nfreqwin": 8,
    "ntimes": 5,
    "rmax": 750.0,
    "ra": 0.0,
    "dec": -30.0,
    "buffer_vis": "buff-pb-mvp01-20200523-00001-vis",
    "buffer_img": "buff-pb-mvp01-20200523-00001-img",
}


def test_defaults_are_the_seed_example():
    params = parse_parameters({})
    for key, value in SEED_EXAMPLE.items():
        assert getattr(params, key) == value
    assert params == parse_parameters(SEED_EXAMPLE)
    assert load_parameters(EXAMPLES / "seed-params.json") == params


def test_schema_and_dataclass_agree():
    names = [f.name for f in dataclasses.fields(Parameters)]
    assert names == [f.name for f in SCHEMA]
    defaults = Parameters()
    for f in SCHEMA:
        assert getattr(defaults, f.name) == f.default, f.name
    assert "`nmajor`" in describe_parameters()


@pytest.mark.parametrize(
    ("raw", "field", "words"),
    [
        ({"freq_min": 1.2e8}, "freq_min", "below freq_max"),
        ({"freq_min": 1.1e8}, "freq_min", "below freq_max"),
        ({"nfreqwin": 0}, "nfreqwin", "1 to 4096"),
        ({"ntimes": 0}, "ntimes", "1 to 100000"),
        ({"dec": -90.5}, "dec", "-90 to 90"),
        ({"dec": 91}, "dec", "-90 to 90"),
        ({"rmax": 0}, "rmax", "> 0"),
        ({"colour": "red"}, "colour", "unknown parameter"),
        ({"ntimes": "5"}, "ntimes", "expected an integer"),
        ({"ntimes": 5.0}, "ntimes", "expected an integer"),
        ({"add_noise": 1}, "add_noise", "true or false"),
        ({"n_workers": True}, "n_workers", "expected an integer"),
        ({"freq_max": float("nan")}, "freq_max", "not allowed"),
        ({"buffer_vis": "../escape"}, "buffer_vis", "safe directory name"),
        ({"buffer_img": "a/b"}, "buffer_img", "safe directory name"),
        ({"buffer_img": ""}, "buffer_img", "safe directory name"),
        ({"prefix": "field1\n"}, "prefix", "no path"),
        ({"prefix": "../field1"}, "prefix", "no path"),
        ({"buffer_img": SEED_EXAMPLE["buffer_vis"]}, "buffer_img", "differ"),
        ({"scales": [0, -3]}, "scales", "0 to 1000"),
        ({"scales": "0,3"}, "scales", "list of integers"),
        ({"npixel": 1023}, "npixel", "even"),
        ({"weighting": "robust"}, "weighting", "natural, uniform, briggs"),
        ({"calibration_context": "GT"}, "calibration_context", "TGB"),
    ],
)
def test_bad_parameters_name_the_field(raw, field, words):
    with pytest.raises(ParameterError) as err:
        parse_parameters(raw)
    assert err.value.field == field
    assert f"'{field}'" in str(err.value)
    assert words in str(err.value)


def test_single_window_may_have_equal_frequencies():
    params = parse_parameters({"nfreqwin": 1, "freq_min": 1e8, "freq_max": 1e8})
    assert params.nfreqwin == 1


def test_integers_are_accepted_as_floats_and_optional_null():
    params = parse_parameters({"ra": 10, "npixel": None, "cellsize": None})
    assert isinstance(params.ra, float) and params.npixel is None and params.cellsize is None


def test_an_invalid_parameters_cannot_be_constructed():
    with pytest.raises(ParameterError) as err:
        Parameters(ntimes=0, dec=91.0, weighting="robust", scales=[-1])
    assert err.value.fields == ["ntimes", "dec", "weighting", "scales"]
    with pytest.raises(ParameterError, match="expected an integer"):
        Parameters(n_workers="4")
    with pytest.raises(ParameterError, match="below freq_max"):
        Parameters(freq_min=2e8)
    assert Parameters(ra=10).ra == 10.0 and isinstance(Parameters(ra=10).ra, float)


def test_the_schema_is_the_one_source_of_defaults():
    """The dataclass takes its defaults from the schema: change one there, it changes here."""
    text = inspect.getsource(Parameters)
    body = text[text.index("class Parameters:") : text.index("def __post_init__")]
    annotated = [line.strip() for line in body.splitlines() if ": " in line and " = " in line]
    assert len(annotated) == len(SCHEMA)
    assert all(line.endswith(f'_default("{line.split(":")[0]}")') for line in annotated)


def test_every_problem_of_a_file_is_reported_at_once(tmp_path: Path):
    path = tmp_path / "p.json"
    path.write_text(
        json.dumps({"ntimes": "5", "dec": -95, "colour": "red", "freq_min": 2e8, "npixel": 1023})
    )
    with pytest.raises(ParameterError) as err:
        load_parameters(path)
    assert sorted(err.value.fields) == ["colour", "dec", "freq_min", "npixel", "ntimes"]
    text = str(err.value)
    assert "\n" not in text and text.startswith(f"{path}: 5 problems: ")
    for words in ("'ntimes'", "'dec'", "'colour'", "'npixel'", "below freq_max", "even"):
        assert words in text


def test_unknown_names_get_a_suggestion():
    with pytest.raises(ParameterError, match="did you mean 'ntimes'"):
        parse_parameters({"ntime": 5})


def test_replace_validates():
    params = Parameters()
    assert params.replace(ntimes=3).ntimes == 3
    with pytest.raises(ParameterError):
        params.replace(ntimes=0)


def test_load_parameters_errors_and_relative_paths(tmp_path: Path):
    bad = tmp_path / "bad.json"
    bad.write_text('{"ntimes": 5,')
    with pytest.raises(ParameterError, match="not valid JSON"):
        load_parameters(bad)
    with pytest.raises(ParameterError, match="cannot read"):
        load_parameters(tmp_path / "missing.json")
    listed = tmp_path / "list.json"
    listed.write_text("[1, 2]")
    with pytest.raises(ParameterError, match="JSON object"):
        load_parameters(listed)
    sub = tmp_path / "cfg"
    sub.mkdir()
    good = sub / "p.json"
    good.write_text(json.dumps({"layout": "stations.txt", "sky_model": "sky.txt"}))
    params = load_parameters(good)
    assert params.layout == str(sub / "stations.txt")
    assert params.sky_model == str(sub / "sky.txt")


def test_every_field_has_help():
    assert all(f.help for f in FIELDS.values())


def test_parameter_docs_match_the_schema():
    """docs/parameters.md is its introduction, then exactly the table ``sdpbatch params``
    prints (defaults, ical's own defaults included)."""
    page = (ROOT / "docs" / "parameters.md").read_text()
    introduction, table = page.split("\n| parameter | flag |", 1)
    assert "| parameter | flag |" + table == describe_parameters() + "\n", (
        "docs/parameters.md is out of date: put the output of `sdpbatch params` after its "
        "introduction"
    )
    assert "default" not in introduction  # the defaults are the table's


README_DEFAULTS = {  # field: (where the README states its default, the value as the schema's)
    "channel_blocks": (r"`channel_blocks`, default (auto)\)", lambda v: None),
    "catalogue_flux_error": (r"by default ([\d.]+) % in flux", lambda v: float(v) / 100),
    "catalogue_position_error": (r"% in flux and ([\d.]+)″ in position", float),
    "prefix": (r"`prefix` parameter \(`-name`; by default `([\w.-]+)`\)", str),
    "pb_correct": (r"`pb_correct`, default (auto):", lambda v: None),
}


def test_defaults_stated_in_the_readme_are_the_schemas():
    """Every line of the README that states a default is one of README_DEFAULTS, and each
    states the schema's value."""
    text = (ROOT / "README.md").read_text().replace("\n  ", " ")  # a list item is one line
    for name, (pattern, value) in README_DEFAULTS.items():
        found = re.search(pattern, text)
        assert found, f"README no longer states {name}'s default as {pattern!r}"
        assert value(found.group(1)) == FIELDS[name].default, name
    stating = [line for line in text.splitlines() if re.search(r"\bdefault\b", line)]
    unchecked = [
        line
        for line in stating
        if not any(re.search(p, line) for p, _ in README_DEFAULTS.values())
        and "JSON name, flag, default" not in line  # `sdpbatch params` lists them
    ]
    assert not unchecked, f"a default the test does not check: {unchecked}"
