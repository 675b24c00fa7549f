"""Command-line conventions: --version, -v/-q/--log-file anywhere, timestamped log lines, one
output flag, exit codes, progress that suits where it is shown, WSClean-style flags."""

from __future__ import annotations

import json
import math
import os
import pty
import re
import subprocess
import sys
from pathlib import Path

import pytest

from sdpbatch.cli import build_parser, main, version
from sdpbatch.cli.options import parameters_from
from sdpbatch.parameters import SCHEMA, ParameterError

SMALL_SIM = {"n_workers": 1, "rmax": 300.0, "ntimes": 3, "nfreqwin": 3}
STAMP = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d (DEBUG|INFO|WARNING|ERROR) [\w.]+: ")
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


def _sdpbatch(*args, **kw) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "sdpbatch.cli", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=300,
        **kw,
    )


def _params_file(tmp_path: Path, **values) -> Path:
    path = tmp_path / "params.json"
    path.write_text(json.dumps(values))
    return path


def test_version():
    result = _sdpbatch("--version")
    assert result.returncode == 0
    assert result.stdout.strip().startswith(f"sdpbatch {version()}")


@pytest.mark.parametrize(
    "argv",
    [
        ["-q", "--log-file", "L", "params"],
        ["params", "-q", "--log-file", "L"],
        ["-v", "status", "--json", "--log-file", "L"],
        ["run", "p.json", "--out", "d", "-v", "-q"],
        ["simulate", "p.json", "--out", "d", "--log-file", "L"],
    ],
)
def test_logging_options_before_or_after_any_command(argv):
    args = build_parser().parse_args(argv)
    assert {"verbose", "quiet", "log_file"} <= vars(args).keys()
    if "--log-file" in argv:
        assert args.log_file == Path("L")
    assert args.quiet == ("-q" in argv)
    assert args.verbose == argv.count("-v")


def test_every_command_takes_the_logging_options():
    sub = next(a for a in build_parser()._actions if a.dest == "command")
    for name, parser in sub.choices.items():
        options = {s for a in parser._actions for s in a.option_strings}
        assert {"-v", "-q", "--log-file"} <= options, name


def test_run_takes_out_and_keeps_data_dir_as_alias():
    parser = build_parser()
    assert parser.parse_args(["run", "p.json", "--out", "d"]).out == Path("d")
    assert parser.parse_args(["run", "p.json", "--data-dir", "d"]).out == Path("d")
    for command in ("simulate p.json", "ical a.ms"):
        assert parser.parse_args([*command.split(), "--out", "d"]).out == Path("d")


def test_redirected_output_has_timestamped_lines_progress_lines_and_a_log_file(tmp_path):
    log = tmp_path / "run.log"
    params = _params_file(tmp_path, **SMALL_SIM)
    result = _sdpbatch("simulate", params, "--out", tmp_path / "out", "--log-file", log)
    assert result.returncode == 0, result.stderr
    lines = result.stderr.splitlines()
    assert lines and all(STAMP.match(line) for line in lines), result.stderr
    progress = [line for line in lines if " sdpbatch.progress: " in line]
    assert progress[0].endswith("simulate: 0/3 started")
    assert progress[-1].endswith("simulate: 3/3 done")
    assert "\r" not in result.stderr
    logged = log.read_text().splitlines()
    assert logged == lines  # the same lines, timestamped, in the file
    quiet = _sdpbatch("simulate", params, "--out", tmp_path / "q", "-q")
    assert quiet.returncode == 0 and quiet.stderr == ""


def test_terminal_shows_a_bar_that_ends_at_100_percent_and_logs_above_it(tmp_path):
    params = _params_file(tmp_path, **SMALL_SIM)
    primary, secondary = pty.openpty()
    env = {**os.environ, "COLUMNS": "160", "TERM": "xterm"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "sdpbatch.cli", "simulate", str(params), "--out",
         str(tmp_path / "out")],
        stdout=subprocess.PIPE, stderr=secondary, env=env,
    )  # fmt: skip
    os.close(secondary)
    chunks = []
    while True:
        try:
            chunk = os.read(primary, 65536)
        except OSError:  # the child closed the terminal
            break
        if not chunk:
            break
        chunks.append(chunk)
    assert proc.wait(timeout=300) == 0
    os.close(primary)
    screen = ANSI.sub("", b"".join(chunks).decode(errors="replace")).replace("\r", "\n")
    bars = [line for line in screen.splitlines() if "simulate" in line and "/3" in line]
    assert bars and "3/3" in bars[-1] and "100%" in bars[-1]
    logs = [line for line in screen.splitlines() if "sdpbatch.execution.simulate:" in line]
    assert logs  # rich's handler: time, level, logger, message on their own lines
    assert not any("━" in line for line in logs)  # never a log line through the bar


def test_user_errors_exit_2_with_one_line_internal_errors_exit_1(tmp_path, capsys, monkeypatch):
    afile = tmp_path / "a-file"
    afile.write_text("")
    params = _params_file(tmp_path, **SMALL_SIM)
    assert main(["simulate", str(params), "--out", str(afile)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--out" in err and "not a directory" in err
    assert main(["run", str(params), "--out", str(afile), "-q"]) == 2
    assert "not a directory" in capsys.readouterr().err

    import sdpbatch.cli.science as science

    def broken(args):
        raise RuntimeError("a bug")

    monkeypatch.setattr(science, "_cmd_params", broken)
    assert main(["params"]) == 1
    err = capsys.readouterr().err
    assert err == "sdpbatch params: internal error: RuntimeError: a bug (run again with -v for " \
        "the traceback)\n"  # fmt: skip
    assert main(["params", "-v"]) == 1
    assert "Traceback" in capsys.readouterr().err


def test_params_lists_json_names_and_flags(capsys):
    assert main(["params"]) == 0
    out = capsys.readouterr().out
    for f in SCHEMA:
        assert f"| `{f.name}` | `{f.usage}` |" in out
    for flag in ("-size N", "-scale ANGLE", "-niter N", "-weight natural|uniform|briggs R",
                 "-mgain M", "-gain G", "-auto-threshold SIGMA", "-j N", "-name PREFIX",
                 "--data-column NAME", "--field ID", "--spw ID", "--write-model",
                 "--write-corrected", "--sky-model FILE"):  # fmt: skip
        assert f"`{flag}`" in out


def _ical_args(*flags: str):
    return build_parser().parse_args(["ical", "a.ms", "--out", "img", *flags])


def test_wsclean_flags_map_onto_the_schema_and_win_over_the_file(tmp_path):
    path = _params_file(tmp_path, npixel=256, niter=10, weighting="uniform", nmajor=2)
    args = _ical_args(
        "--params", str(path), "-size", "512", "512", "-scale", "20asec", "-niter", "300",
        "-weight", "briggs", "-0.5", "-mgain", "0.8", "-gain", "0.1", "-threshold", "5mJy",
        "-auto-threshold", "3", "-j", "2", "-name", "field1", "-multiscale-scales", "0,4",
        "-fit-spectral-pol", "3", "--data-column", "CORRECTED_DATA", "--field", "1",
        "--spw", "0", "--write-model", "--no-write-corrected",
    )  # fmt: skip
    params = parameters_from(args, args.params)
    assert params.npixel == 512 and params.niter == 300 and params.nmajor == 2  # file kept
    assert params.cellsize == pytest.approx(math.radians(20 / 3600), rel=1e-12)
    assert (params.weighting, params.robust) == ("briggs", -0.5)
    assert params.fractional_threshold == pytest.approx(0.2)
    assert params.clean_gain == 0.1 and params.threshold == pytest.approx(0.005)
    assert params.auto_threshold == 3.0 and params.threads_per_worker == 2
    assert params.prefix == "field1" and params.scales == [0, 4] and params.nmoment == 3
    assert (params.data_column, params.field, params.spw) == ("CORRECTED_DATA", 1, 0)
    assert params.write_model is True and params.write_corrected is False
    for scale, rad in (("1amin", math.radians(1 / 60)), ("0.01", math.radians(0.01)),
                       ("0.01deg", math.radians(0.01)), ("2e-4rad", 2e-4)):  # fmt: skip
        assert parameters_from(_ical_args("-scale", scale), None).cellsize == pytest.approx(rad)
    auto = parameters_from(_ical_args("-size", "auto", "-scale", "auto"), None)
    assert auto.npixel is None and auto.cellsize is None


def test_flag_errors_name_the_flag_and_all_are_reported_at_once(tmp_path):
    path = _params_file(tmp_path, dec=-95.0, ntimes="5")
    args = _ical_args(
        "--params", str(path), "-size", "1023", "-scale", "2furlongs", "-weight", "briggs",
        "-mgain", "1.5", "--sky-model", "none ", "--data-column", "data",
    )  # fmt: skip
    with pytest.raises(ParameterError) as err:
        parameters_from(args, args.params)
    text = str(err.value)
    assert text.startswith("7 problems: ")
    for words in ("-size 1023: 1023 is not allowed", "-scale 2furlongs: expected an angle",
                  "-weight briggs: expected natural, uniform or briggs R", "-mgain 1.5: ",
                  "--data-column data: ", "parameter 'dec' (params.json)",
                  "parameter 'ntimes' (params.json)"):  # fmt: skip
        assert words in text
    assert "npixel" not in text and "cellsize" not in text  # the user typed neither


def test_sky_model_flag_names_itself(tmp_path, capsys):
    code = main(["ical", str(tmp_path / "a.ms"), "--out", str(tmp_path / "img"),
                 "--sky-model", str(tmp_path / "missing.txt"), "-size", "100001"])  # fmt: skip
    assert code == 2
    err = capsys.readouterr().err
    assert "-size 100001" in err and "npixel" not in err


def test_a_file_flag_found_bad_later_is_named_as_typed(tmp_path, capsys):
    """Files named by flags are read after the parameters are valid (before any worker): their
    errors still name the flag, not the parameter behind it."""
    params = _params_file(tmp_path, **SMALL_SIM)
    missing = tmp_path / "no-such-stations.txt"
    assert main(["simulate", str(params), "--out", str(tmp_path / "o"), "--layout",
                 str(missing)]) == 2  # fmt: skip
    err = capsys.readouterr().err
    assert f"--layout {missing}:" in err and "'layout'" not in err
    sky = tmp_path / "no-such-sky.txt"
    assert main(["run", str(params), "--out", str(tmp_path / "d"), "--sky-model", str(sky)]) == 2
    err = capsys.readouterr().err
    assert f"--sky-model {sky}:" in err and "parameter 'calibration_model'" not in err
    assert not (tmp_path / "o").exists() and not (tmp_path / "d").exists()
