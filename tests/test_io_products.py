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
    path = write_preview_png(
        tmp_path / "p.png", image, cellsize=0.001, phase_centre=(0.0, -0.5), title="t"
    )
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
        write_preview_png(
            tmp_path / "q.png", np.zeros((2, 4, 4)), cellsize=0.001, phase_centre=(0, 0), title="t"
        )


def test_preview_has_radec_axes_the_clean_beam_and_the_centre(tmp_path):
    """The axes' WCS puts a pixel where the FITS products' WCS does (RA/Dec of a source off
    the centre, computed independently by the textbook SIN inverse), the beam is drawn with
    its size and position angle, and the phase centre is marked."""
    from astropy.visualization.wcsaxes import WCSAxes
    from matplotlib.patches import Ellipse

    from sdpbatch.io.preview import preview_figure

    n, cell, centre = 128, 0.001, (np.deg2rad(150.0), np.deg2rad(-45.0))
    image = np.zeros((n, n))
    ix, iy = n // 2 + 20, n // 2 - 11  # 20 px east, 11 px south
    image[ix, iy] = 1.0
    beam = (8 * cell, 4 * cell, np.deg2rad(30.0))
    fig = preview_figure(image, cellsize=cell, phase_centre=centre, title="t", beam=beam)
    ax = fig.axes[0]
    assert isinstance(ax, WCSAxes)
    assert ax.coords[0].get_axislabel() == "RA (J2000)"
    assert ax.coords[1].get_axislabel() == "Dec (J2000)"
    shown = ax.images[0].get_array()
    py, px = np.unravel_index(np.argmax(shown), shown.shape)
    l, m = (ix - n / 2) * cell, (iy - n / 2) * cell
    nn = np.sqrt(1 - l * l - m * m)
    dec = np.arcsin(m * np.cos(centre[1]) + nn * np.sin(centre[1]))
    ra = centre[0] + np.arctan2(l, nn * np.cos(centre[1]) - m * np.sin(centre[1]))
    world = ax.wcs.pixel_to_world(px, py)
    assert world.ra.deg == pytest.approx(np.degrees(ra), abs=1e-6)
    assert world.dec.deg == pytest.approx(np.degrees(dec), abs=1e-6)
    (ellipse,) = [p for p in ax.patches if isinstance(p, Ellipse)]
    assert (float(ellipse.width), float(ellipse.height)) == pytest.approx((8.0, 4.0))
    assert ellipse.angle == pytest.approx(120.0)  # PA 30 deg from north through east (left)
    (cross,) = ax.lines
    # Values, not types: world_to_pixel_values gives 0-d arrays with some astropy versions.
    centre_px = ax.wcs.world_to_pixel_values(np.degrees(centre[0]), np.degrees(centre[1]))
    np.testing.assert_allclose(
        np.asarray(cross.get_xydata()[0], dtype=float),
        np.asarray(centre_px, dtype=float).ravel(),
        rtol=0,
        atol=1e-9,
    )
