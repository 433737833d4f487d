"""View modes (widget / static / text) and the SVG renderer every view draws with."""

from __future__ import annotations

import base64
import re
import struct
import sys
import zlib

import numpy as np
import pytest
from helpers import classification_pairs, mlp_with_lora, open_widgets

from lora_nb.errors import OptionError
from lora_nb.frontend import VSCODE_VARIABLES, resolve_ui
from lora_nb.viz.png import LEVELS, indexed_png, palette
from lora_nb.viz.svg import render
from lora_nb.widgets.ui import Pictures


def test_auto_mode_follows_the_front_end(monkeypatch):
    for name in VSCODE_VARIABLES:  # (VS Code's own cases: test_frontends.py)
        monkeypatch.delenv(name, raising=False)
    assert resolve_ui("auto", kernel=False) == "text"  # terminal IPython, scripts
    assert resolve_ui(None, kernel=True) == "widget"  # JupyterLab, Notebook 7
    monkeypatch.setitem(sys.modules, "google.colab", object())
    assert resolve_ui("auto", kernel=True) == "static"  # Colab: pictures updated in place
    assert resolve_ui("widget", kernel=True) == "widget"  # asked for explicitly
    with pytest.raises(OptionError, match="ui must be one of auto, widget, static, text, not `fancy`"):
        resolve_ui("fancy")


def read_png(data: bytes) -> tuple[np.ndarray, np.ndarray]:
    """(palette indices, palette) of an indexed PNG written by lora_nb (one IDAT chunk, filter 0)."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    chunks, pos = {}, 8
    while pos < len(data):
        (n,), tag = struct.unpack(">I", data[pos:pos + 4]), data[pos + 4:pos + 8]
        body = data[pos + 8:pos + 8 + n]
        assert struct.unpack(">I", data[pos + 8 + n:pos + 12 + n])[0] == zlib.crc32(tag + body) & 0xFFFFFFFF
        chunks[tag], pos = body, pos + 12 + n
    w, h = struct.unpack(">II", chunks[b"IHDR"][:8])
    rows = np.frombuffer(zlib.decompress(chunks[b"IDAT"]), np.uint8).reshape(h, w + 1)
    assert not rows[:, 0].any()
    return rows[:, 1:], np.frombuffer(chunks[b"PLTE"], np.uint8).reshape(-1, 3)


def test_heatmap_is_an_embedded_png_of_a_few_kilobytes():
    z = np.random.default_rng(0).normal(size=(64, 64))
    z[3, 5] = np.nan
    spec = {"data": [{"type": "heatmap", "z": z, "colorscale": "RdBu", "zmid": 0.0}], "layout": {"height": 300}}
    svg = render(spec)
    assert len(svg) < 10_000  # 64 × 64 noise-like cells: ~5 KB of PNG (base64), the rest axes and colour bar
    uri = re.search(r"href='data:image/png;base64,([^']+)'", svg).group(1)
    indices, colors = read_png(base64.b64decode(uri))
    assert indices.shape == (64, 64) and indices[63 - 3, 5] == LEVELS  # NaN: transparent (row 0 drawn at the top)
    lo, hi = -np.nanmax(np.abs(z)), np.nanmax(np.abs(z))
    expected = np.round((z[::-1] - lo) / (hi - lo) * (LEVELS - 1))
    ok = ~np.isnan(expected)
    np.testing.assert_array_equal(indices[ok], expected[ok])
    np.testing.assert_array_equal(colors[:LEVELS], palette("RdBu"))
    assert indexed_png(np.zeros((1, 1), np.uint8), palette("Viridis", 2))[:8] == b"\x89PNG\r\n\x1a\n"


def test_svg_has_axes_legend_hover_text_and_gaps():
    spec = {"data": [{"type": "scatter", "x": [1, 2, 3, 4], "y": [1.0, None, 3.0, 4.0], "name": "loss",
                      "mode": "lines+markers"},
                     {"type": "bar", "x": ["a", "b"], "y": [2, 5], "name": "counts", "xaxis": "x2", "yaxis": "y2",
                      "hovertemplate": "%{x} has %{y:.1f}<extra></extra>"}],
            "layout": {"title": {"text": "two <panels>"}, "xaxis": {"domain": [0, 0.45], "title": {"text": "step"}},
                       "xaxis2": {"domain": [0.55, 1]}, "yaxis2": {"anchor": "x2"}}}
    svg = render(spec)
    assert "two &lt;panels&gt;" in svg and ">step</text>" in svg
    assert svg.count("<circle") == 3 + 1  # the None is a gap, not a point (+ the legend's marker of "loss")
    assert re.search(r"<path d='M[-\d.]+ [-\d.]+l0 0M", svg)  # the line breaks at the gap
    assert "<title>a has 2.0</title>" in svg and "<title>b has 5.0</title>" in svg
    assert ">loss</text>" in svg and ">counts</text>" in svg  # legend entries


def test_category_axes_keep_their_labels_readable():
    """Long module names on a heatmap's y axis get the left margin they need; many step columns on its x axis
    are labelled every few columns, upright, without overlapping."""
    names = [f"{i}.self_attn.q_proj" for i in range(12)]
    steps = [str(s) for s in range(100, 3100, 30)]  # 100 columns of 3–4 digit labels
    spec = {"data": [{"type": "heatmap", "z": np.ones((12, 100)), "x": steps, "y": names}],
            "layout": {"width": 720, "xaxis": {"type": "category", "title": {"text": "step"}},
                       "yaxis": {"type": "category", "title": {"text": "module"}}}}
    svg = render(spec)
    ys = [(float(x), label) for x, label in re.findall(r"<text x='([\d.]+)' y='[\d.]+' text-anchor='end'>([^<]+)<", svg)]
    assert {label for _, label in ys} == set(names)
    assert min(x - 6.5 * len(label) for x, label in ys) >= 0  # every module name starts inside the picture
    xs = [float(x) for x, label in re.findall(r"<text x='([\d.]+)' y='[\d.]+' text-anchor='middle'>(\d+)<", svg)]
    assert 8 <= len(xs) <= 20 and "rotate(-35)" not in svg
    assert min(b - a for a, b in zip(xs, xs[1:])) >= 6.5 * 4 + 4  # room for a 4-digit label between ticks
    # a bar per module with long names: every bar keeps its name, slanted
    bars = render({"data": [{"type": "bar", "x": names + ["12.mlp.up_proj", "13.mlp.up_proj"], "y": list(range(14))}],
                   "layout": {"width": 720}})
    assert bars.count("rotate(-35)") == 14


def test_static_mode_verbs_show_svg_pictures_and_no_widgets(ip, monkeypatch):
    shown = []
    monkeypatch.setattr("IPython.display.display", lambda obj, raw=False, display_id=None: shown.append(obj))
    ip.user_ns.update(model=mlp_with_lora(), pairs=classification_pairs())
    before = len(open_widgets())
    report = ip.run_line_magic("lora", "spectrum model --ui static")
    assert isinstance(report, Pictures) and "eff. rank" in repr(report)
    report._ipython_display_()
    assert shown[0]["text/html"] == report.html
    assert [s["image/svg+xml"][:4] for s in shown[1:]] == ["<svg"] * 2  # effective ranks, first module's bars
    run = ip.run_line_magic("lora", "train model --data pairs --steps 6 --ui static")  # blocking in a terminal
    live, picture = shown[3], shown[4:]
    assert live["image/svg+xml"].startswith("<svg") and not picture  # shown when the run began…
    assert run.state == "finished" and len(open_widgets()) == before  # …with no widget anywhere
    text = ip.run_line_magic("lora", "toggle model --ui text")
    assert "strength of `default`: 1.00" in text
