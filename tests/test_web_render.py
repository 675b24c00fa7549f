"""The figures of the product page against direct computations: a source drawn where its sky
position falls (RA to the left), the beam drawn to scale, the gains and the per-cycle figures
plotted as the files hold them, the data root's confinement and the log reader."""

from __future__ import annotations

import os

import numpy as np
import pytest
from matplotlib.patches import Ellipse

from sdpbatch.io.qa import read_qa
from sdpbatch.web import render
from sdpbatch.web.files import LOG_CHUNK, DataRoot, OutsideDataRoot, list_directory, read_log
from sdpbatch.web.products import (
    GainTerm,
    NoProduct,
    beam_of,
    gain_series,
    product_set,
    product_view,
    read_plane,
)
from web_fixture import make_product


def _sky_of_pixel(ix: int, iy: int, *, n: int, cell: float, centre: tuple[float, float]):
    """(ra, dec) degrees of science pixel [ix, iy]: l, m from the science convention, then the
    inverse SIN (orthographic) projection about the phase centre."""
    ra0, dec0 = centre
    l, m = (ix - n // 2) * cell, (iy - n // 2) * cell
    n_term = np.sqrt(1 - l * l - m * m)
    dec = np.arcsin(m * np.cos(dec0) + n_term * np.sin(dec0))
    ra = ra0 + np.arctan2(l, n_term * np.cos(dec0) - m * np.sin(dec0))
    return np.degrees(ra) % 360, np.degrees(dec)


def test_image_shows_the_source_at_its_sky_position_with_the_beam(tmp_path):
    p = make_product(tmp_path / "img")
    plane = read_plane(p.path("restored"))
    fig = render.image_figure(plane, title="t", beam=beam_of(plane.header))
    ax = fig.axes[0]
    shown = np.asarray(ax.images[0].get_array())
    y, x = np.unravel_index(np.argmax(shown), shown.shape)
    world = ax.wcs.pixel_to_world(x, y)
    ra, dec = _sky_of_pixel(*p.source_pixel, n=p.npixel, cell=p.cellsize, centre=p.phase_centre)
    assert world.ra.deg == pytest.approx(ra, abs=1e-6)
    assert world.dec.deg == pytest.approx(dec, abs=1e-6)
    assert x < p.npixel // 2  # 11 px east: left of the centre on the page
    assert "Right ascension" in ax.coords[0].get_axislabel()
    assert "Declination" in ax.coords[1].get_axislabel()

    [ellipse] = [a for a in _artists(ax) if isinstance(a, Ellipse)]
    cell_deg = np.degrees(p.cellsize)
    assert ellipse.height == pytest.approx(np.degrees(p.beam[0]) / cell_deg, rel=1e-9)
    assert ellipse.width == pytest.approx(np.degrees(p.beam[1]) / cell_deg, rel=1e-9)
    assert ellipse.angle == pytest.approx(np.degrees(p.beam[2]), rel=1e-9)
    assert fig.axes[1].get_ylabel() == "Jy/beam"  # the colour bar, in BUNIT
    residual = render.image_figure(read_plane(p.path("residual")), title="r", beam=None,
                                   symmetric=True)  # fmt: skip
    norm = residual.axes[0].images[0].norm
    assert norm.vmin == -norm.vmax and norm.vmax > 0  # linear about zero


def _artists(ax):
    stack, found = list(ax.artists), []
    while stack:
        artist = stack.pop()
        found.append(artist)
        stack.extend(artist.get_children())
    return found


def test_renders_follow_the_files_and_stay_cached(tmp_path):
    p = make_product(tmp_path / "img")
    restored, residual = p.path("restored"), p.path("residual")
    first = render.image_png(residual, title="residual", beam_source=restored)
    assert first[:8] == b"\x89PNG\r\n\x1a\n"
    assert render.image_png(residual, title="residual", beam_source=restored) is first
    stat = residual.stat()
    os.utime(residual, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))  # rewritten in place
    assert render.image_png(residual, title="residual", beam_source=restored) is not first
    for k in range(render.CACHE_ENTRIES + 5):
        render.cached_png("test", [restored], lambda k=k: bytes([k]))
        os.utime(restored, ns=(stat.st_atime_ns, stat.st_mtime_ns + (k + 2) * 10**9))
    assert len(render._CACHE) <= render.CACHE_ENTRIES


def test_gain_figure_plots_each_station_as_solved(tmp_path):
    p = make_product(tmp_path / "img")
    fig = render.gains_figure(p.path("gains"))
    phase_ax, amp_ax = fig.axes[0], fig.axes[1]
    assert len(phase_ax.lines) == len(amp_ax.lines) == len(p.stations)
    for s, (phase, amp) in enumerate(zip(phase_ax.lines, amp_ax.lines, strict=True)):
        flagged = p.weights[:, s, 0] == 0
        want = np.degrees(np.angle(p.gains[:, s, 0]))
        np.testing.assert_allclose(phase.get_xdata(), (p.times - p.times[0]) / 60.0)
        np.testing.assert_allclose(np.asarray(phase.get_ydata())[~flagged], want[~flagged])
        assert np.isnan(np.asarray(phase.get_ydata())[flagged]).all()
        np.testing.assert_allclose(
            np.asarray(amp.get_ydata())[~flagged], np.abs(p.gains[~flagged, s, 0])
        )


def test_a_bandpass_is_plotted_over_frequency():
    freqs = np.linspace(1e8, 1.2e8, 5)
    gains = np.exp(1j * np.linspace(0, 1, 2 * 5)).reshape(1, 2, 5)
    term = GainTerm(
        "B", np.array([5e9]), freqs, ["A", "B"], np.angle(gains), np.abs(gains), np.ones((1, 2, 5))
    )
    series = gain_series(term)
    assert series["axis"] == "frequency" and series["x"] == pytest.approx(freqs / 1e6)
    np.testing.assert_allclose(series["phase_deg"][1], np.degrees(np.angle(gains[0, 1])))


def test_qa_figure_plots_the_cycles(tmp_path):
    p = make_product(tmp_path / "img")
    fig = render.qa_figure(read_qa(p.path("qa")))
    peak_ax, rms_ax = fig.axes[0], fig.axes[1]
    np.testing.assert_allclose(peak_ax.lines[0].get_ydata(), [c["peak"] for c in p.cycles])
    np.testing.assert_allclose(rms_ax.lines[0].get_ydata(), [c["rms"] for c in p.cycles])
    labels = [t.get_text() for t in peak_ax.get_xticklabels()]
    assert labels == ["0", "1", "final"]
    notes = [t.get_text() for t in peak_ax.texts]
    assert notes == ["solved T", "solved T"]  # the terms solved in each cycle
    components = [bar.get_height() for bar in fig.axes[2].patches]
    assert components == [c["components"] for c in p.cycles]


def test_a_product_set_is_the_one_its_qa_record_names(tmp_path):
    """Any prefix: the files of the set ``qa.json`` names (moved in last: a complete set); an
    earlier set under another prefix in the same buffer is not what is shown."""
    root = DataRoot.at(tmp_path)
    make_product(tmp_path / "buff-a", prefix="field1")
    assert product_set(root, "buff-a").prefix == "field1"
    view = product_view(root, "buff-a")
    assert view["prefix"] == "field1" and set(view["images"]) == {"restored", "residual"}
    assert view["images"]["restored"]["file"] == "field1_restored.fits"
    assert view["gains"] and view["qa"]["cycles"] == 3
    make_product(tmp_path / "buff-a", prefix="field2.v2", seed=4)  # a later run, renamed
    assert product_view(root, "buff-a")["images"]["residual"]["file"] == "field2.v2_residual.fits"
    qa = tmp_path / "buff-a" / "qa.json"
    for record in ('{"parameters": {"prefix": "../buff-b/x"}}', '{"parameters": {}}', "[1]", "{"):
        qa.write_text(record)
        with pytest.raises(NoProduct):
            product_set(root, "buff-a")
    qa.write_text('{"parameters": {"prefix": "field3"}}')  # names a set that is not there
    with pytest.raises(NoProduct, match="field3_restored.fits"):
        product_set(root, "buff-a")


def test_the_data_root_lets_out_only_buffers_and_logs(tmp_path):
    data = tmp_path / "data"
    (data / "buff-a" / "x.ms").mkdir(parents=True)
    (data / "buff-a" / "x.ms" / "table.dat").write_bytes(b"1234567")
    (data / "buff-a" / "f.txt").write_text("hello")
    (data / "logs").mkdir()
    (data / "etcd").mkdir()
    (tmp_path / "outside.txt").write_text("no")
    (data / "buff-a" / "out").symlink_to(tmp_path / "outside.txt")
    (data / "buff-b").symlink_to(tmp_path)
    root = DataRoot.at(data)
    assert root.file("buff-a/f.txt") == (data / "buff-a" / "f.txt").resolve()
    refused = [
        "",
        "/",
        "/etc/passwd",
        "..",
        "../outside.txt",
        "buff-a/../../outside.txt",
        "buff-a/./f.txt",
        "buff-a//f.txt",
        "buff-a/out",
        "buff-b/outside.txt",
        "etcd",
        "tango/x",
        "system.json",
        "buff-a\\..\\f.txt",
        "buff-a/f.txt\x00",
        "a b/c",
    ]
    for path in refused:
        with pytest.raises(OutsideDataRoot):
            root.file(path)
    entries = {e["name"]: e for e in list_directory(root, "buff-a")}
    assert entries["x.ms"] == {
        "name": "x.ms", "path": "buff-a/x.ms", "kind": "directory", "size_bytes": 7
    }  # fmt: skip
    assert entries["f.txt"]["size_bytes"] == 5


def test_the_log_reader_gives_whole_lines_in_bounded_pieces(tmp_path):
    log = tmp_path / "w.log"
    assert read_log(log, 0) == ([], 0)
    log.write_bytes(b"one\ntwo\nthr")
    assert read_log(log, 0) == (["one", "two"], 8)
    assert read_log(log, 8) == ([], 8)  # the third line is still being written
    long = b"x" * (LOG_CHUNK + 10) + b"\n"
    log.write_bytes(long)
    lines, offset = read_log(log, 0)
    assert offset == LOG_CHUNK and len(lines[0]) == LOG_CHUNK
    assert read_log(log, offset) == (["x" * 10], len(long))
    log.write_bytes(b"new\n")  # truncated (rotated): read from the start again
    assert read_log(log, len(long)) == (["new"], 4)
