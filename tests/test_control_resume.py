"""A batch block taken up from its checkpoint through the control plane: its workflow
SIGKILLed in a cycle, then the system stopped by `down` in a later one, each time
`sdpbatch resume PB_ID`; it ends FINISHED with the uninterrupted run's images."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import numpy as np
import pytest
from astropy.io import fits

from sdpbatch.cli import main
from sdpbatch.control.configdb import Config
from sdpbatch.parameters import FIELDS
from sdpbatch.vocabulary import log_file_name, workflow_deployment_id
from small_runs import SMALL_BATCH
from system_fixture import *  # noqa: F403  (fixture system)
from system_fixture import sdpbatch
from waiting import wait_until

PARAMS = {**SMALL_BATCH, "nmajor": 5, "niter": 300, "calibration_context": "TG",
          "first_selfcal_G": 2}  # fmt: skip
IMAGES = [f"ska_pipeline_ical_{k}.fits" for k in ("restored", "residual", "deconvolved")]


@pytest.fixture
def short_lease(monkeypatch):
    """A 2 s lease for the system `up` starts next: a killed owner is noticed in seconds."""
    monkeypatch.setenv("SDP_CONFIG_LEASE_TTL", "2")


def _state(pb_id: str) -> dict:
    with Config() as config:
        for txn in config.txn():
            state = txn.get_pb_state(pb_id) or {}
            owner = txn.get_pb_owner(pb_id)
    return {**state, "owner": owner}


def _log(data_dir, pb_id) -> str:
    path = data_dir / "logs" / log_file_name(workflow_deployment_id(pb_id))
    return path.read_text() if path.exists() else ""


def _status(pb_id, *statuses):
    return lambda: _state(pb_id).get("status") in statuses


def _resumed_after(line: str) -> int:
    """The cycle a resumed run took up after ("its last pass": after the last cycle)."""
    if "ICAL resumed after its last pass" in line:
        return PARAMS["nmajor"]
    return int(line.split("ICAL resumed after cycle ")[1].split(":")[0])


def _resume(pb_id, env) -> None:
    wait_until(f"{pb_id}'s processes removed", lambda: _can_resume(pb_id, env), timeout=30)


def _can_resume(pb_id, env) -> bool:
    done = subprocess.run([sys.executable, "-m", "sdpbatch.cli", "resume", pb_id], env=env,
                          capture_output=True, text=True, timeout=60)  # fmt: skip
    assert done.returncode == 0 or "still being removed" in done.stderr, done.stderr
    return done.returncode == 0


def test_a_block_killed_then_stopped_by_down_resumes_to_the_same_images(
    short_lease, system, tmp_path
):
    data_dir, env = system
    (tmp_path / "p.json").write_text(json.dumps(PARAMS))
    pb_id = sdpbatch("process", "batch:batch_imaging:0.1.0", str(tmp_path / "p.json"),
                     env=env).strip()  # fmt: skip
    # 1. the workflow is SIGKILLed once cycle 1 is done: FAILED, owner lost
    wait_until("cycle 1", lambda: "ICAL cycle 1: peak" in _log(data_dir, pb_id), timeout=240)
    os.kill(_state(pb_id)["owner"]["pid"], signal.SIGKILL)
    wait_until("FAILED", _status(pb_id, "FAILED"), timeout=30)
    assert _state(pb_id)["reason"].startswith("owner lost")
    seen = len(_log(data_dir, pb_id))
    _resume(pb_id, env)
    # 2. the system goes down in a later cycle of the resumed run, then up again
    wait_until("cycle 3", lambda: "ICAL cycle 3: peak" in _log(data_dir, pb_id)[seen:], 240)
    sdpbatch("down", "--data-dir", str(data_dir), env=env)
    sdpbatch("up", "--data-dir", str(data_dir), env=env)
    assert _state(pb_id)["reason"] == "stopped by sdpbatch down"
    _resume(pb_id, env)
    wait_until("FINISHED", _status(pb_id, "FINISHED", "FAILED"), timeout=240)
    state = _state(pb_id)
    assert state["status"] == "FINISHED" and state["resumed"] == 2, state
    log = _log(data_dir, pb_id)
    assert log.count("Resuming from the checkpoint beside") == 2
    assert log.count("Reusing the simulation in") == 2
    resumed = [_resumed_after(line) for line in log.splitlines() if "ICAL resumed after" in line]
    assert len(resumed) == 2 and resumed[0] >= 1 and resumed[1] >= 3
    img = data_dir / f"buff-{pb_id}-img"
    assert not (data_dir / f"buff-{pb_id}-img.checkpoint").exists()
    manifest = json.loads((img / "provenance.json").read_text())
    assert manifest["resumed_from"] == resumed
    assert main(["verify", str(img)]) == 0

    # the uninterrupted run of the same parameters on the same layout (2 Dask workers)
    whole = tmp_path / "whole"
    sdpbatch("run", str(tmp_path / "p.json"), "--out", str(whole), "--no-progress", env=env)
    for name in IMAGES:
        expected = fits.getdata(whole / FIELDS["buffer_img"].default / name)
        got = fits.getdata(img / name)
        peak = np.abs(expected).max()
        assert np.abs(got - expected).max() <= 1e-6 * peak, name
