"""Science commands: simulate, ical, run, params."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from sdpbatch.cli.common import UsageError, guarded_output, progress_display
from sdpbatch.cli.options import (
    add_parameter_options,
    flag_fields,
    named_as_typed,
    parameters_from,
)
from sdpbatch.parameters import read_parameter_file
from sdpbatch.vocabulary import TRUTH_GAINS_FILE, TRUTH_SKYMODEL_FILE


def add_science_commands(sub: argparse._SubParsersAction) -> None:
    """simulate, ical, params and run."""
    _add_simulate(sub)
    _add_ical(sub)
    p = sub.add_parser(
        "params",
        help="list the workflow parameters: JSON name, flag, default and allowed values",
    )
    p.add_argument("--json", action="store_true", help="the defaults as a parameter JSON file")
    p.set_defaults(handler=_cmd_params)
    _add_run(sub)


def _add_simulate(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "simulate",
        help="simulate SKA1-Low MeasurementSets and their truth",
        description="Simulate SKA1-Low MeasurementSets (one per frequency window) and the "
        "truth beside them.  Parameters come from PARAMS and from flags (flags win).",
    )
    p.add_argument("params", type=Path, help=PARAMS_HELP)
    p.add_argument("--out", type=Path, required=True, metavar="DIR", help=OUT_HELP)
    _add_cluster_options(p)
    add_parameter_options(p, "simulate")
    p.set_defaults(handler=_cmd_simulate)


def _add_ical(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "ical",
        help="self-calibrate and image MeasurementSets",
        description="Self-calibrate and image MeasurementSets (ICAL).  Parameters come from "
        "--params and from flags, WSClean's where it has one (flags win), e.g. "
        "sdpbatch ical A.ms --out img -size 1024 1024 -scale 100asec -niter 1000 "
        "-weight briggs 0 -mgain 0.9 -j 2 -name field1",
    )
    p.add_argument("ms", type=Path, nargs="+", help="MeasurementSets (one or more)")
    p.add_argument("--out", type=Path, required=True, metavar="DIR", help=OUT_HELP)
    p.add_argument("--params", type=Path, metavar="PARAMS", help="parameter JSON file")
    p.add_argument(
        "--truth",
        type=Path,
        help="folder with the simulation's truth files to compare with (default: the "
        "MeasurementSets' folder, when it holds them)",
    )
    p.add_argument("--resume", action="store_true", help=RESUME_HELP)
    _add_cluster_options(p)
    add_parameter_options(p, "ical")
    p.set_defaults(handler=_cmd_ical)


def _add_run(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "run",
        help="run the whole batch imaging workflow: simulate, then ICAL",
        description="Simulate into DIR/<buffer_vis>, then ICAL into DIR/<buffer_img>.  "
        "Parameters come from PARAMS and from flags (flags win).",
    )
    p.add_argument("params", type=Path, help=PARAMS_HELP)
    p.add_argument(
        "--out",
        "--data-dir",
        dest="out",
        type=Path,
        required=True,
        metavar="DIR",
        help="data root that receives the visibility and image buffers (--data-dir is the "
        "older spelling)",
    )
    p.add_argument("--resume", action="store_true", help=RESUME_HELP)
    _add_cluster_options(p)
    add_parameter_options(p, "run")
    p.set_defaults(handler=_cmd_run)


PARAMS_HELP = "parameter JSON file (the seed's format)"
RESUME_HELP = (
    "go on from the checkpoint a stopped run of the same inputs and parameters left beside "
    "the products (its complete major cycles are not made again; the products are the same "
    "as an uninterrupted run's); without one, start from the beginning"
)
OUT_HELP = "directory for the products (created if missing)"


def _add_cluster_options(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--scheduler",
        default=None,
        help="address of an existing Dask scheduler (default: $SDPBATCH_SCHEDULER, else a "
        "LocalCluster of n_workers processes; with n_workers 1 this process, no cluster)",
    )
    p.add_argument(
        "--no-progress",
        action="store_true",
        help="no progress display (default: a bar on a terminal, log lines otherwise)",
    )


def _check_out(path: Path, flag: str = "--out") -> None:
    """A usable output folder: missing (created later) or a directory."""
    if path.exists() and not path.is_dir():
        raise UsageError(f"{flag} {path}: exists and is not a directory")
    if path.exists() and not os.access(path, os.W_OK | os.X_OK):
        raise UsageError(f"{flag} {path}: not writable")


def _cmd_params(args: argparse.Namespace) -> int:
    import json

    from sdpbatch.cli.options import describe_parameters
    from sdpbatch.parameters import Parameters

    print(json.dumps(Parameters().to_dict(), indent=2) if args.json else describe_parameters())
    return 0


def _cmd_simulate(args: argparse.Namespace) -> int:
    from sdpbatch.execution.simulate import prepare_simulation, simulate
    from sdpbatch.io.space import simulation_bytes

    params = parameters_from(args, args.params)
    _check_out(args.out)
    with named_as_typed(args):  # layout, rmax, sky model checked before starting workers
        setup = prepare_simulation(params)
    needed = simulation_bytes(
        nfreqwin=params.nfreqwin, ntimes=params.ntimes, nbaselines=setup.nbaselines
    )
    with guarded_output([(args.out, needed)]), _runner(params, args.scheduler) as runner:
        products = simulate(
            params, args.out, runner=runner, progress=progress_display(args), setup=setup
        )
    for path in [*products.ms_paths, *products.truth_paths]:
        print(path)
    print(
        f"simulated {len(products.ms_paths)} windows, {products.nfreqwin} channels in all x "
        f"{products.ntimes} times x "
        f"{products.nbaselines} baselines ({products.nstations} stations, "
        f"{products.nsources} sources): {products.nvis} visibilities in {products.seconds:.1f} s"
    )
    return 0


def _runner(params, scheduler: str | None):
    """Where a science run works: this process for one worker, else a Dask cluster."""
    from sdpbatch.execution.cluster import open_runner

    return open_runner(
        params.n_workers, threads_per_worker=params.threads_per_worker, scheduler=scheduler
    )


def _print_ical_products(products) -> None:
    for path in products.paths.values():
        print(path)
    qa = products.qa
    print(
        f"restored peak {qa['restored']['peak']:.4g} Jy/beam, residual rms "
        f"{qa['restored']['rms']:.3g} Jy/beam, dynamic range "
        f"{qa['restored']['dynamic_range']:.0f}, {products.seconds:.1f} s"
    )
    truth = qa.get("truth", {})
    if "gain_phase_rms_error_rad" in truth:
        print(f"gain phase error vs truth {truth['gain_phase_rms_error_rad']:.4f} rad rms")
    if "max_flux_error" in truth:
        print(
            f"{len(truth['brightest_sources'])} brightest true sources: flux within "
            f"{100 * truth['max_flux_error']:.2f} %, position within "
            f"{truth['max_offset_pixels']:.3f} px ("
            f"{truth['max_offset_after_common_shift_pixels']:.3f} px after the common shift)"
        )
    if "gradient_shift_pixels" in truth and "common_shift_pixels" in truth:
        measured, predicted = truth["common_shift_pixels"], truth["gradient_shift_pixels"]
        print(
            f"common image shift ({measured[0]:+.3f}, {measured[1]:+.3f}) px; the phase gradient "
            f"self-calibration cannot determine predicts ({predicted[0]:+.3f}, "
            f"{predicted[1]:+.3f}) px"
        )


def _cmd_ical(args: argparse.Namespace) -> int:
    from sdpbatch.execution.pipeline import calibration_model, ical_pipeline, truth_present
    from sdpbatch.execution.primary_beam import beam_to_apply
    from sdpbatch.io.ms_set import check_measurement_sets

    params = _fit_to_machine(parameters_from(args, args.params), args)
    _check_out(args.out)
    missing = [str(p) for p in args.ms if not p.exists()]
    if missing:
        raise UsageError(f"no such MeasurementSet: {', '.join(missing)}")
    infos = check_measurement_sets(  # before starting any worker
        args.ms, data_column=params.data_column, field=params.field, spw=params.spw
    )
    if args.truth and not truth_present(args.truth):
        raise UsageError(
            f"--truth {args.truth}: no {TRUTH_SKYMODEL_FILE} and {TRUTH_GAINS_FILE} there"
        )
    folders = {p.resolve().parent for p in args.ms}
    truth_dir = args.truth or (folders.pop() if len(folders) == 1 else None)  # sdpbatch's own
    with named_as_typed(args):  # a --sky-model file that cannot be read, --pb-correct true
        calibration_model(params, truth_dir)  # before starting any worker
        beam_to_apply(params, args.ms)
    from sdpbatch.execution.ical.plan import resolve_channel_blocks
    from sdpbatch.io.space import image_products_bytes

    planes, _ = resolve_channel_blocks(infos, params.channel_blocks, params.nmoment)
    needed = image_products_bytes(npixel=params.npixel or 1024, nfreqwin=planes)
    with guarded_output([(args.out, needed)]), _runner(params, args.scheduler) as runner:
        products = ical_pipeline(
            args.ms,
            args.out,
            params,
            runner=runner,
            truth_dir=truth_dir,
            progress=progress_display(args),
            infos=infos,
            resume=args.resume,
        )
    _print_ical_products(products)
    return 0


def _fit_to_machine(params, args: argparse.Namespace):
    """Without n_workers (and no scheduler), ``ical`` runs in this process on every core:
    the seed's four single-thread workers would only split one machine's cores (its help and
    ``sdpbatch params`` say so: ``cli.options.COMMAND_DEFAULTS``)."""
    import logging

    given = set(read_parameter_file(args.params)) if args.params else set()
    given |= set(flag_fields(args))  # --n-workers, -j
    if "n_workers" in given or args.scheduler or os.environ.get("SDPBATCH_SCHEDULER"):
        return params
    threads = params.threads_per_worker if "threads_per_worker" in given else os.cpu_count() or 1
    logging.getLogger("sdpbatch").info(
        "n_workers not given: ICAL runs in this process with %d thread(s) (%d core(s) here; "
        "set n_workers for a Dask cluster)",
        threads,
        os.cpu_count() or 1,
    )
    return params.replace(n_workers=1, threads_per_worker=threads)


def _cmd_run(args: argparse.Namespace) -> int:
    from sdpbatch.execution.pipeline import batch_imaging_pipeline, calibration_model
    from sdpbatch.execution.simulate import prepare_simulation
    from sdpbatch.workflows.space import run_space

    params = parameters_from(args, args.params)
    _check_out(args.out)
    vis_dir, img_dir = args.out / params.buffer_vis, args.out / params.buffer_img
    for folder in (vis_dir, img_dir):
        _check_out(folder, f"--out {args.out}: its buffer")
    with named_as_typed(args):  # layout, rmax, sky models checked before starting workers
        prepare_simulation(params)
        calibration_model(params, None)
    needs = run_space(params, vis_dir, img_dir)
    with guarded_output(needs), _runner(params, args.scheduler) as runner:
        products = batch_imaging_pipeline(
            params,
            vis_dir,
            img_dir,
            runner=runner,
            progress=progress_display(args),
            resume=args.resume,
        )
    for path in products.simulation.ms_paths:
        print(path)
    _print_ical_products(products.ical)
    return 0
