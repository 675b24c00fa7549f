"""The one block check (admission): workflows, parameters, confined paths, the resource
model; and the reasons a FAILED block gives."""

from __future__ import annotations

import errno
import os

import pytest

from sdpbatch.control.admission import ALLOWED_DIRS_ENV, BlockRefused, admit_block
from sdpbatch.control.resources import Capacity
from sdpbatch.io.space import DiskFull
from sdpbatch.vocabulary import (
    dask_deployment_id,
    pb_of_deployment,
    workflow_deployment_id,
)
from sdpbatch.workflows.reasons import describe_failure

BATCH = {"type": "batch", "id": "batch_imaging", "version": "0.1.0"}
SMALL = Capacity(cores=2, threads=4, memory_bytes=16 * 2**30)
FILE_FIELDS = ("sky_model", "layout", "calibration_model")


@pytest.fixture
def root(tmp_path, monkeypatch):
    monkeypatch.delenv(ALLOWED_DIRS_ENV, raising=False)
    data = tmp_path / "data"
    data.mkdir()
    return data


def admit(root, params, **kw):
    return admit_block("pb-x-1", BATCH, params, data_root=root, capacity=SMALL, **kw)


@pytest.mark.parametrize("field", FILE_FIELDS)
@pytest.mark.parametrize("value", ["/etc/passwd", "/etc/shadow", "../../../../etc/passwd"])
def test_every_file_parameter_is_confined(root, field, value):
    with pytest.raises(BlockRefused) as err:
        admit(root, {field: value})
    assert err.value.field == field
    assert f"parameter '{field}'" in str(err.value) and "outside" in str(err.value)


def test_a_symlink_out_of_the_root_is_refused(root):
    (root / "innocent.txt").symlink_to("/etc/passwd")
    with pytest.raises(BlockRefused, match="parameter 'sky_model'"):
        admit(root, {"sky_model": "innocent.txt"})


def test_all_path_problems_are_reported_at_once(root):
    with pytest.raises(BlockRefused) as err:
        admit(root, {"sky_model": "/etc/passwd", "layout": "/etc/shadow"})
    assert "'sky_model'" in str(err.value) and "'layout'" in str(err.value)


def test_files_under_the_root_or_an_allowed_dir_are_accepted(root, tmp_path, monkeypatch):
    (root / "models").mkdir()
    elsewhere = tmp_path / "shared-models"
    elsewhere.mkdir()
    checked = admit(root, {"sky_model": "models/sky.txt"}).parameters
    assert checked.sky_model == str(root / "models" / "sky.txt")  # relative: from the root
    assert checked.buffer_vis == "buff-pb-x-1-vis" and checked.buffer_img == "buff-pb-x-1-img"
    with pytest.raises(BlockRefused):
        admit(root, {"layout": str(elsewhere / "layout.txt")})
    monkeypatch.setenv(ALLOWED_DIRS_ENV, f"/nonexistent{os.pathsep}{elsewhere}")
    assert admit(root, {"layout": str(elsewhere / "layout.txt")}).parameters.layout == str(
        elsewhere / "layout.txt"
    )
    special = admit(root, {"sky_model": "gleam-like", "calibration_model": "none"}).parameters
    assert (special.sky_model, special.calibration_model) == ("gleam-like", "none")


def test_resources_and_names_are_checked_at_the_door(root):
    with pytest.raises(BlockRefused) as err:
        admit(root, {"n_workers": 200})
    assert err.value.field == "n_workers" and "200 worker threads" in str(err.value)
    assert admit(root, {"n_workers": 4}).request.threads == 4
    with pytest.raises(BlockRefused, match="parameter 'buffer_vis'"):
        admit(root, {"buffer_vis": "logs"})  # one of the data root's own directories
    with pytest.raises(BlockRefused) as err:
        admit_block("pb-x-1", {**BATCH, "id": "nope"}, {}, data_root=root, capacity=SMALL)
    assert err.value.field == "workflow" and "known workflows" in str(err.value)
    plain = {"type": "batch", "id": "test_dask", "version": "0.1.0"}
    with pytest.raises(BlockRefused, match="n_workers"):
        admit_block("pb-x-1", plain, {"n_workers": 0}, data_root=root, capacity=SMALL)


def test_vocabulary_ids_round_trip():
    assert pb_of_deployment(workflow_deployment_id("pb-a-20200101-00001")) == (
        "pb-a-20200101-00001"
    )
    assert pb_of_deployment(dask_deployment_id("pb-b")) == "pb-b"
    assert pb_of_deployment("buff-pb-b-vis") is None


def test_reasons_a_person_understands(tmp_path):
    assert describe_failure(SystemExit("stopped by signal 15")).startswith("stopped by SIGTERM")
    full = DiskFull(tmp_path, needed=50 * 10**6)
    assert describe_failure(full).startswith(f"no space left on device under {tmp_path}")
    assert "needed about 50 MB" in describe_failure(full)
    casacore = RuntimeError("FilebufIO: write error in file x: No space left on device")
    assert describe_failure(casacore).startswith("no space left on device")
    assert describe_failure(OSError(errno.ENOSPC, "No space")).startswith("no space left")

    class FuturesCancelledError(Exception):
        pass

    lost = describe_failure(FuturesCancelledError("1 Future cancelled: scheduler-connection-lost"))
    assert lost.startswith("the block's Dask engine stopped during the run")
    assert describe_failure(RuntimeError("boom")) == "RuntimeError: boom"
    assert len(describe_failure(RuntimeError("x" * 10_000))) <= 400
