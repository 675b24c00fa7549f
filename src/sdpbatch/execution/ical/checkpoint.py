"""Checkpoints of an ICAL run at every major-cycle boundary, and the resume from one.

A checkpoint holds what the cycles changed (:class:`~.state.CycleState`) without any
visibilities: the model, the increment not yet predicted, the increments already predicted
into the model visibilities (in order), the gains, the sky-model anchors, the best cycle,
the cycle records, the terms undone; the D term's centres, gains and the model it was solved
against (its facets are predicted again from it).  Models and increments are kept sparse (the
pixels any Taylor term uses), so a checkpoint is a few MB.

Resuming reads the data again, makes the PSF again (one gridding pass), then predicts the
stored increments one after the other, exactly as the run did: the model visibilities, and so
everything after, are the same numbers as those of the run that was stopped.  A checkpoint is
used only for the same inputs and the same parameters, but for those that do not change the
results (:data:`sdpbatch.parameters.RESULT_NEUTRAL`): a run may resume on another number of workers.
"""

from __future__ import annotations

import json
import logging
from typing import Any

import numpy as np

from sdpbatch.execution.ical.combine import pack, psf_beam, unpack
from sdpbatch.execution.ical.cycles import make_psf, predict
from sdpbatch.execution.ical.directions import DirectionState
from sdpbatch.execution.ical.finish import Ending
from sdpbatch.execution.ical.results import CycleRecord
from sdpbatch.execution.ical.state import CycleState, Imaging, Run
from sdpbatch.execution.ical.tasks import BlockImages
from sdpbatch.io.checkpoint import Checkpoint
from sdpbatch.io.provenance import metadata_identity
from sdpbatch.io.qa import json_ready
from sdpbatch.parameters import RESULT_NEUTRAL, ParameterError, Parameters
from sdpbatch.science.beam import CleanBeam

LOG = logging.getLogger("sdpbatch.execution.ical")


def fingerprint(params: Parameters, infos) -> dict[str, Any]:
    """What must be the same for a checkpoint to be taken up: the parameters that decide the
    results and the inputs' identities."""
    decisive = {k: v for k, v in params.to_dict().items() if k not in RESULT_NEUTRAL}
    found = {"parameters": decisive, "inputs": [metadata_identity(i) for i in infos]}
    return json.loads(json.dumps(json_ready(found)))  # as a stored one reads back


def check_fingerprint(checkpoint: Checkpoint, params: Parameters, infos, where: str) -> None:
    """Refuse (``ParameterError`` naming ``resume``) a checkpoint made for another run."""
    now = fingerprint(params, infos)
    then = checkpoint.meta["fingerprint"]
    if now["inputs"] != then["inputs"]:
        raise ParameterError("resume", f"the checkpoint {where} is of other MeasurementSets")
    changed = sorted(
        k for k in set(now["parameters"]) | set(then["parameters"])
        if now["parameters"].get(k) != then["parameters"].get(k)
    )  # fmt: skip
    if changed:
        shown = ", ".join(
            f"{k} {then['parameters'].get(k)!r} there, {now['parameters'].get(k)!r} now"
            for k in changed
        )
        raise ParameterError("resume", f"the checkpoint {where} was made with {shown}")


# --- save and restore -------------------------------------------------------------------------


def _put(arrays: dict, name: str, packed) -> None:
    index, values, shape = packed
    arrays[f"{name}.index"], arrays[f"{name}.values"] = index, values
    arrays[f"{name}.shape"] = np.asarray(shape, dtype=np.int64)


def _take(arrays: dict, name: str) -> np.ndarray:
    values = arrays[f"{name}.values"]
    return unpack(arrays[f"{name}.index"], values, arrays[f"{name}.shape"], values.dtype)


def capture(
    run: Run,
    state: CycleState,
    *,
    next_cycle: int,
    identity: dict,
    resumed_from: list[int],
    ending: Ending | None = None,
) -> Checkpoint:
    """The checkpoint of ``state`` before major cycle ``next_cycle`` (past ``nmajor``: only
    the finish is left), with the last pass's ``ending`` once it is done."""
    best_is_model = state.best.get("model") is state.model
    handles = [
        *state.predicted,
        run.one(pack, "checkpoint-increment", state.increment),
        run.one(pack, "checkpoint-model", state.model),
        None if best_is_model else run.one(pack, "checkpoint-best", state.best["model"]),
    ]
    packed = run.runner.gather([h for h in handles if h is not None])
    arrays: dict[str, np.ndarray] = {}
    for k, item in enumerate(packed[: len(state.predicted)]):
        _put(arrays, f"predicted{k}", item)
    _put(arrays, "increment", packed[len(state.predicted)])
    _put(arrays, "model", packed[len(state.predicted) + 1])
    if not best_is_model:
        _put(arrays, "best", packed[-1])
    for prefix, gains in (("gains", state.gains), ("anchors", state.anchors)):
        arrays.update({f"{prefix}.{t}": g for t, g in gains.items()})
    arrays.update({f"best_gains.{t}": g for t, g in state.best["gains"].items()})
    stats = {
        prefix: _put_directions(run, arrays, prefix, found)
        for prefix, found in (("directions", state.directions),
                              ("best_directions", state.best.get("directions")))
        if found is not None
    }  # fmt: skip
    meta = {
        "directions": stats,
        "fingerprint": identity,
        "resumed_from": resumed_from,
        "next_cycle": next_cycle,
        "predicted": len(state.predicted),
        "cycles": [r.to_dict() for r in state.cycles],
        "disabled": sorted(state.disabled),
        "undone": state.undone,
        "best": {"cycle": state.best["cycle"], "dynamic_range": state.best["dynamic_range"]},
        "best_is_model": best_is_model,
        "plan": _plan(run),
    }
    if ending is not None:
        meta["ending"] = _put_ending(arrays, ending)
    return Checkpoint(meta=meta, arrays=arrays)


def _put_ending(arrays: dict, ending: Ending) -> dict[str, Any]:
    """Store the arrays of ``ending``; its small part, for the meta."""
    arrays["ending.psf"], arrays["ending.moments"] = ending.psf, ending.moments
    for b, image in ending.residual.images.items():
        arrays[f"ending.residual.{b}"] = image
    for term, (boundaries, centres) in ending.intervals.items():
        arrays[f"ending.boundaries.{term}"], arrays[f"ending.centres.{term}"] = boundaries, centres
    return {
        "beam": [ending.beam.bmaj, ending.beam.bmin, ending.beam.bpa],
        "weights": {str(b): w for b, w in ending.residual.weights.items()},
        "cellsize": ending.cellsize,
        "npixel": ending.npixel,
        "reference_frequency": ending.reference_frequency,
    }


def restore_ending(run: Run, checkpoint: Checkpoint) -> tuple[CycleState, Ending] | None:
    """The state and the last pass a checkpoint holds, when it was taken after the last pass
    (only the products were left); else None."""
    meta, arrays = checkpoint.meta, checkpoint.arrays
    if "ending" not in meta:
        return None
    small = meta["ending"]
    residual = BlockImages(
        {int(b): arrays[f"ending.residual.{b}"] for b in small["weights"]},
        {int(b): w for b, w in small["weights"].items()},
    )
    terms = _named(arrays, "ending.boundaries")
    ending = Ending(
        model=_take(arrays, "model"),
        psf=arrays["ending.psf"],
        beam=CleanBeam(*small["beam"]),
        residual=residual,
        moments=arrays["ending.moments"],
        intervals={t: (terms[t], arrays[f"ending.centres.{t}"]) for t in terms},
        cellsize=small["cellsize"],
        npixel=small["npixel"],
        reference_frequency=small["reference_frequency"],
    )
    state = CycleState(psf=None, beam=ending.beam, model=ending.model)
    _restore_records(state, meta, arrays)
    state.directions = _take_directions(run, checkpoint, "directions")
    return state, ending
def _put_directions(run: Run, arrays: dict, prefix: str, found: DirectionState) -> list[dict]:
    """The D term's centres, gains, flags and the model it was solved against (its facets'
    visibilities are predicted again on resume); its statistics for the meta."""
    arrays[f"{prefix}.centres"], arrays[f"{prefix}.gains"] = found.centres, found.gains
    arrays[f"{prefix}.flags"] = found.flags
    packed = run.runner.gather(run.one(pack, f"checkpoint-{prefix}", found.model))
    _put(arrays, f"{prefix}.model", packed)
    return found.stats


def _take_directions(run: Run, checkpoint: Checkpoint, prefix: str) -> DirectionState | None:
    arrays, stats = checkpoint.arrays, checkpoint.meta.get("directions", {})
    if prefix not in stats:
        return None
    model = run.one(np.asarray, f"{prefix}-model-again", _take(arrays, f"{prefix}.model"))
    return DirectionState(
        arrays[f"{prefix}.centres"], arrays[f"{prefix}.gains"], model,
        arrays[f"{prefix}.flags"], None, stats[prefix],
    )  # fmt: skip


def _plan(run: Run) -> dict[str, Any]:
    """The run's plan as it stood (for whoever reads the checkpoint; a resume plans anew on
    its own workers): channel blocks (first channel, channels, Hz) and work items per group."""
    return {
        "channel_blocks": [[b.channels[0], len(b.channels), b.frequency] for b in run.blocks],
        "items_per_group": [len(group) for group in run.groups],
        "workers": len(run.runner.slots),
    }


def _named(arrays: dict, prefix: str) -> dict[str, np.ndarray]:
    """The arrays named ``<prefix>.<name>``, by name."""
    start = prefix + "."
    return {k[len(start) :]: v for k, v in arrays.items() if k.startswith(start)}


def restore(run: Run, imaging: Imaging, checkpoint: Checkpoint) -> tuple[CycleState, int]:
    """The cycle state a checkpoint describes, on this run's workers, and the major cycle to
    go on with.  The PSF is made again and the model visibilities predicted again from the
    stored increments, in their order."""
    meta, arrays = checkpoint.meta, checkpoint.arrays
    state = make_psf(run, imaging)
    state.beam = run.runner.gather(run.one(psf_beam, "beam", state.psf, imaging.setup.cellsize))
    state.model_vis = [None] * run.ngroups
    for k in range(meta["predicted"]):
        state.increment = run.runner.scatter(_take(arrays, f"predicted{k}"))
        predict(run, imaging, state, f"predict-again-{k}")
    state.increment = run.runner.scatter(_take(arrays, "increment"))
    state.model = run.one(np.asarray, "model-again", _take(arrays, "model"))
    _restore_records(state, meta, arrays)
    best_model = state.model if meta["best_is_model"] else run.one(
        np.asarray, "best-again", _take(arrays, "best")
    )  # fmt: skip
    state.best = {**meta["best"], "model": best_model, "gains": _named(arrays, "best_gains")}
    state.directions = _take_directions(run, checkpoint, "directions")
    state.best["directions"] = _take_directions(run, checkpoint, "best_directions")
    run.clock.lap("resume")
    return state, int(meta["next_cycle"])


def _restore_records(state: CycleState, meta: dict, arrays: dict) -> None:
    """Gains, anchors, cycle records, the terms undone, as stored."""
    state.gains = _named(arrays, "gains")
    state.anchors = _named(arrays, "anchors")
    state.cycles = [CycleRecord(**{**r, "solved": tuple(r["solved"])}) for r in meta["cycles"]]
    state.disabled = set(meta["disabled"])
    state.undone = list(meta["undone"])
