"""QA JSON and PNG preview products."""

from __future__ import annotations

import json

import numpy as np
import pytest
from matplotlib import image as mpimg

from sdpbatch.io.preview import write_preview_png
from sdpbatch.io.qa import read_qa, write_qa


def test_qa_json_sorted_plain_and_atomic(tmp_path, monkeypatch):
    path = tmp_path / "qa.json"
    write_qa(path, {"b": np.float32(1.5), "a": {"z": np.arange(3), "y": float("inf")}})
    text = path.read_text()
    assert text.index('"a"') < text.index('"b"') and text.index('"y"') < text.index('"z"')
    assert read_qa(path) == {"a": {"y": None, "z": [0, 1, 2]}, "b": 1.5}
    with pytest.raises(TypeError):
        write_qa(path, {"bad": object()})
    assert json.loads(path.read_text())["b"] == 1.5  # the older file is kept
    assert [p.name for p in tmp_path.iterdir()] == ["qa.json"]


def test_preview_puts_east_on_the_left(tmp_path):
    n = 128
    image = np.random.default_rng(0).normal(0, 0.01, (n, n))
    image[n // 2 + 30 - 2 : n // 2 + 30 + 3, n // 2 - 2 : n // 2 + 3] = 5.0  # 30 px east
    path = write_preview_png(tmp_path / "p.png", image, cellsize=0.001, title="t")
    rgb = mpimg.imread(path)[..., :3]
    rgb = rgb[:, : int(0.76 * rgb.shape[1])]  # leave out the colour bar on the right
    yellow = (rgb[..., 0] > 0.95) & (rgb[..., 1] > 0.9) & (rgb[..., 2] < 0.8)  # inferno's top
    painted = (rgb.sum(axis=-1) < 2.9).mean(axis=0) > 0.5  # columns filled by the image
    cols = np.flatnonzero(painted)
    centre, width = 0.5 * (cols.min() + cols.max()), cols.max() - cols.min()
    source_col = np.argwhere(yellow)[:, 1].mean()
    # 30 px east of centre in a 128 px image: left of the centre by ~30/128 of the width
    assert (centre - source_col) / width == pytest.approx(30 / 128, abs=0.03)
    with pytest.raises(ValueError, match="N, N"):
        write_preview_png(tmp_path / "q.png", np.zeros((2, 4, 4)), cellsize=0.001, title="t")
