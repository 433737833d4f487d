"""Weight summaries, the figures built from them, the explorers driven through their widgets, and the verbs."""

from __future__ import annotations

import itertools
import re

import numpy as np
import pytest
import torch
from helpers import TinyCNN, make_b_nonzero, tiny_bert, tiny_gpt2, tiny_llama, tiny_mlp, wait_until
from IPython.core.error import UsageError
from torch import nn

import lora_nb
from lora_nb.core import find
from lora_nb.core.adapters.factors import lora_layers
from lora_nb.core.analysis.learned.weights import matrices, split_name, weights
from lora_nb.viz.spectra import base_spectrum_figure, effective_rank_figure, similarity_figure, spectrum_figure
from lora_nb.viz.weights import histogram_figure, module_figures, norm_map_figure
from lora_nb.widgets.explorers import SimilarityView, SpectrumExplorer, WeightsExplorer


def _llama(*names: str):
    model = tiny_llama()
    for i, name in enumerate(names or ("default",)):
        lora_nb.attach(model, r=4 + 4 * i, name=name)
        make_b_nonzero(model, name)
    return model


def test_weight_summary_norms_are_exact():
    model = tiny_gpt2()
    lora_nb.attach(model, r=4)
    assert all(w.delta_norm == 0.0 for w in weights(model).values())  # B = 0: "the adapter did nothing"
    assert "ΔW = 0 in 8 of 8 modules" in repr(weights(model))
    make_b_nonzero(model)
    summary = weights(model)
    for name, layer in lora_layers(find(model), "default"):
        w = summary[name]
        delta = layer.get_delta_weight("default").detach()
        base = layer.get_base_layer().weight.detach()
        assert w.delta_norm == pytest.approx(float(delta.norm()), rel=1e-5)
        assert w.base_norm == pytest.approx(float(base.norm()), rel=1e-5)
        assert w.ratio == pytest.approx(float(delta.norm() / base.norm()), rel=1e-5)
        assert w.a_norm == pytest.approx(float(layer.lora_A["default"].weight.detach().norm()), rel=1e-6)
        b = layer.lora_B["default"].weight.detach()
        assert w.b_range == (float(b.min()), float(b.max()))
        assert w.shape == (delta.shape[1], delta.shape[0])  # Conv1D stores ΔW as in × out


def test_layer_and_module_kind_from_names():
    assert split_name("model.layers.3.self_attn.q_proj") == ("model.layers.3", 3, "self_attn.q_proj")
    assert split_name("transformer.h.0.attn.c_attn") == ("transformer.h.0", 0, "attn.c_attn")
    assert split_name("bert.encoder.layer.1.attention.self.query") == ("bert.encoder.layer.1", 1,
                                                                       "attention.self.query")
    assert split_name("4", "Linear") == ("4", 4, "Linear")
    assert split_name("conv1") == ("", None, "conv1")
    nm = weights(_llama()).norm_map()
    assert nm.rows == ["0", "1"] and nm.cols[0] == "self_attn.q_proj" and len(nm.cols) == 7
    bert = tiny_bert()
    lora_nb.attach(bert, r=2)
    nm = weights(bert).norm_map()
    assert {"attention.self.query", "attention.output.dense", "output.dense"} <= set(nm.cols)
    assert np.isnan(nm.z).sum() == nm.z.size - 13  # 12 in layers + the pooler in a row of its own
    cnn = TinyCNN()
    lora_nb.attach(cnn, r=2)
    nm = weights(cnn).norm_map()
    assert nm.rows == ["(model)"] and nm.cols == ["conv1", "conv2", "head"]
    mlp = tiny_mlp()
    lora_nb.attach(mlp, r=2)
    assert weights(mlp).norm_map().rows == ["0", "2", "4"]


def test_pooled_delta_is_the_block_average_without_dense_delta():
    model = nn.Sequential(nn.Linear(768, 600))
    lora_nb.attach(model, r=4)
    make_b_nonzero(model)
    mm = matrices(model, "0")
    layer = find(model).model.get_submodule("0")
    a, b = layer.lora_A["default"].weight.detach().double(), layer.lora_B["default"].weight.detach().double()
    dense = layer.scaling["default"] * b @ a  # formed here only to check against
    assert mm.delta.shape == (200, 256) and mm.pooled
    np.testing.assert_allclose(mm.delta, dense.reshape(200, 3, 256, 3).mean((1, 3)).numpy(), rtol=1e-10)
    assert mm.A.shape == (4, 256) and mm.B.shape == (200, 4)
    assert mm.a_values.size == 4 * 768 and mm.b_values.size == 600 * 4
    small = tiny_llama()
    lora_nb.attach(small, r=4)
    make_b_nonzero(small)
    mm = matrices(small, "model.layers.0.mlp.down_proj")
    layer = find(small).model.get_submodule("model.layers.0.mlp.down_proj")
    np.testing.assert_allclose(mm.delta, layer.get_delta_weight("default").detach().numpy(), rtol=1e-5, atol=1e-6)
    with pytest.raises(lora_nb.LoraNBError, match="did you mean `model.layers.0.mlp.down_proj`"):
        matrices(small, "model.layers.0.mlp.down_prj")


def test_figures_carry_the_core_numbers():
    model = _llama("first", "second")
    result = lora_nb.spectra(model, "first", base=True, layers="layers.1")
    name = "model.layers.1.mlp.up_proj"
    bars = spectrum_figure(result, name)
    assert len(bars.data[0].y) == len(result[name]) == 4
    np.testing.assert_array_equal(bars.data[0].y, result[name])
    base = base_spectrum_figure(result, name)
    assert base.layout.yaxis.type == "log"
    np.testing.assert_allclose(base.data[0].y, result.base[name].w)
    np.testing.assert_allclose(base.data[1].y, result.base[name].w_delta)
    ranks = effective_rank_figure(result)
    assert list(ranks.data[0].x) == pytest.approx([result.stats[n].effective_rank for n in result])  # a row each
    sim = lora_nb.similarity(model, "first", "second")
    phi = similarity_figure(sim, name)
    np.testing.assert_array_equal(phi.data[0].z, sim[name])
    assert np.asarray(phi.data[0].z).shape == (4, 8)
    summary = weights(model, "second")
    heat = norm_map_figure(summary)
    nm = summary.norm_map()
    i, j = nm.rows.index("1"), nm.cols.index("mlp.up_proj")
    assert heat.data[0].z[i][j] == pytest.approx(summary[name].delta_norm)
    assert heat.data[0].customdata[i][j] == name
    mm = matrices(model, name, "second")
    figs = module_figures(mm)
    assert np.asarray(figs["ΔW"].data[0].z).shape == (64, 32)
    np.testing.assert_array_equal(figs["B"].data[0].z, mm.B)
    hist = histogram_figure(mm)
    assert len(hist.data[1].x) == 60 and sum(hist.data[1].y) == 64 * 8  # 60 bars, every value of B counted


def test_weights_explorer_follows_its_dropdowns_and_clicks():
    model = _llama()
    ex = WeightsExplorer(model)
    first = ex.module.value
    assert first == "model.layers.0.self_attn.q_proj"
    np.testing.assert_array_equal(ex.heatmaps["A"].figure.data[0].z, matrices(model, first).A)
    ex.module.value = "model.layers.1.mlp.down_proj"
    mm = matrices(model, "model.layers.1.mlp.down_proj")
    np.testing.assert_array_equal(ex.heatmaps["ΔW"].figure.data[0].z, mm.delta)
    assert np.asarray(ex.heatmaps["ΔW"].figure.data[0].z).shape == (32, 64)
    ex.color_by.value = "ratio"
    nm = ex.summary.norm_map("ratio")
    np.testing.assert_allclose(np.asarray(ex.norm.figure.data[0].z, dtype=float), nm.z)
    ex.layer.value, ex.kind.value = "1", "mlp.gate_proj"  # row and column of the norm map pick the module
    assert ex.module.value == "model.layers.1.mlp.gate_proj"
    ex.select(0, "self_attn.v_proj")
    assert ex.module.value == "model.layers.0.self_attn.v_proj" and ex.layer.value == "0"  # pickers follow
    ex.select("1", "mlp.gate_proj")
    assert "model.layers.1.mlp.gate_proj" in ex.histogram.figure.layout.title.text
    state = ex.module.get_state()
    assert state["index"] == list(ex.module.options).index("model.layers.1.mlp.gate_proj")


def test_spectrum_explorer_and_similarity_view_follow_dropdowns():
    model = _llama("first", "second")
    ex = SpectrumExplorer(model, "first", base=True)
    ex.module.value = "model.layers.1.mlp.gate_proj"
    expected = lora_nb.spectra(model, "first", base=True, layers="layers.1.mlp.gate_proj")
    np.testing.assert_allclose(ex.bars.figure.data[0].y, expected["model.layers.1.mlp.gate_proj"])
    np.testing.assert_allclose(ex.base_fig.figure.data[0].y, expected.base["model.layers.1.mlp.gate_proj"].w)
    assert len(ex.ranks.figure.data[0].y) == 14
    view = SimilarityView(model, "first", "second")
    view.module.value = "model.layers.0.self_attn.v_proj"
    sim = lora_nb.similarity(model, "first", "second")
    np.testing.assert_allclose(view.heatmap.figure.data[0].z, sim["model.layers.0.self_attn.v_proj"])


class StubRun:
    """What an explorer needs of a TrainRun: a state and add_callback."""

    def __init__(self) -> None:
        self.state = "running"
        self.callbacks = []

    def add_callback(self, cb) -> None:
        self.callbacks.append(cb)


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_live_refresh_is_throttled_and_budgeted():
    model = _llama()
    session = find(model)
    run = session.run = StubRun()
    clock = FakeClock()
    ex = SpectrumExplorer(model, clock=clock)
    assert run.callbacks == [ex]  # attached itself to the running training
    layer = session.model.get_submodule(ex.module.value)
    before = list(ex.bars.figure.data[0].y)

    def train_step(factor: float) -> None:
        with torch.no_grad():
            layer.lora_B["default"].weight.mul_(factor)
        clock.now += 0.5
        ex.on_step_end(run, {"step": 1})

    train_step(2.0)  # first step: refresh
    assert ex.live_refreshes == 1
    np.testing.assert_allclose(ex.bars.figure.data[0].y, 2 * np.asarray(before))
    for _ in range(4):  # 2 s later: throttled (interval 3 s)
        train_step(1.0)
    assert ex.live_refreshes == 1
    clock.now += 1.0  # 3.5 s after the last refresh
    train_step(1.5)
    assert ex.live_refreshes == 2
    np.testing.assert_allclose(ex.bars.figure.data[0].y, 3 * np.asarray(before))
    slow = ex.refresh
    ex.refresh = lambda: (slow(), setattr(clock, "now", clock.now + 1.0))  # a refresh costing 1 s
    clock.now += 10
    train_step(1.0)
    assert ex.live_refreshes == 3
    clock.now += 15  # 1 s of refresh allows one per 20 s (5% budget), not one per 3 s
    train_step(1.0)
    assert ex.live_refreshes == 3
    clock.now += 5
    train_step(1.0)
    assert ex.live_refreshes == 4
    session.run = None


def test_explorers_follow_adapter_changes_and_show_errors():
    model = _llama()
    ex = WeightsExplorer(model)
    lora_nb.attach(model, r=2, name="extra", targets="q_proj")
    assert len(ex.module.options) == 14  # still the explorer's own adapter
    narrow = WeightsExplorer(model, "extra")
    assert list(narrow.module.options) == ["model.layers.0.self_attn.q_proj", "model.layers.1.self_attn.q_proj"]
    lora_nb.enable(model, "default")
    lora_nb.delete(model, "extra")
    assert "no adapter <code>extra</code>" in narrow.message.value
    with torch.no_grad():
        find(model).model.get_submodule(ex.module.value).lora_B["default"].weight.zero_()
    lora_nb.disable(model)  # any change notifies the views: the zero B shows up
    assert np.abs(np.asarray(ex.heatmaps["B"].figure.data[0].z)).max() == 0


def test_verbs_in_a_terminal_and_in_a_kernel(ip, monkeypatch):
    model = _llama("first", "second")
    ip.user_ns["model"] = model
    report = ip.run_line_magic("lora", "weights model --layers layers.0")
    assert "weights of 7 modules" in repr(report) and len(report.figures) == 5
    report = ip.run_line_magic("lora", "spectrum model --adapter first --layers q_proj --base")
    assert "σ₁(W+ΔW)" in repr(report)
    assert list(report.figures[1].data[0].y) == pytest.approx(
        list(lora_nb.spectra(model, "first")["model.layers.0.self_attn.q_proj"]))
    report = ip.run_line_magic("lora", "similarity model --adapter first --other second")
    assert np.asarray(report.figures[0].data[0].z).shape == (4, 8)
    with pytest.raises(UsageError, match="no adapter `frist`.*did you mean `first`"):
        ip.run_line_magic("lora", "spectrum model --adapter frist")
    with pytest.raises(UsageError, match="matches none of the 14 modules.*q_proj"):
        ip.run_line_magic("lora", "weights model --layers nope")
    with pytest.raises(UsageError, match="--other"):
        ip.run_line_magic("lora", "similarity model --adapter first")
    monkeypatch.setattr(ip, "kernel", object(), raising=False)  # a Jupyter kernel: widgets
    assert isinstance(ip.run_line_magic("lora", "spectrum model --base"), SpectrumExplorer)
    assert isinstance(ip.run_line_magic("lora", "weights model"), WeightsExplorer)
    assert isinstance(ip.run_line_magic("lora", "similarity model --adapter first --other second"), SimilarityView)


def test_spectrum_explorer_live_on_a_real_background_run():
    pytest.importorskip("lora_nb.core.training.run")
    model = tiny_mlp()
    lora_nb.attach(model, r=4)
    make_b_nonzero(model)
    g = torch.Generator().manual_seed(3)
    x = torch.randn(64, 16, generator=g)
    run = lora_nb.train(model, (x, x[:, :5].argmax(1)), steps=100000, lr=1e-2, background=True)
    reads = itertools.count()  # a clock that ticks once per reading: a refresh (two readings) costs 1 tick
    ex = SpectrumExplorer(model, clock=lambda: next(reads))
    ex.interval = 0.0  # refresh as often as the 5% budget allows: once per 1 / 0.05 = 20 ticks
    wait_until(lambda: ex.live_refreshes >= 2, what="two live refreshes")
    run.stop()
    run.wait(10)
    assert run.state == "stopped" and ex.live_refreshes >= 2 and ex in run.callbacks
    assert ex.live_seconds == ex.live_refreshes and ex.live_seconds <= 0.05 * next(reads) + 1  # the last in reserve
    final = lora_nb.spectra(model)  # on_train_end redrew the trained adapter
    np.testing.assert_allclose(ex.bars.figure.data[0].y, final[ex.module.value])


def test_explorer_opened_before_a_run_follows_it():
    model = tiny_mlp()
    lora_nb.attach(model, r=4)
    ex = SpectrumExplorer(model)  # opened first: it learns of the run from the session's notice
    x = torch.randn(64, 16, generator=torch.Generator().manual_seed(4))
    run = lora_nb.train(model, (x, x[:, :5].argmax(1)), steps=100000, lr=1e-2, background=True)
    try:
        assert ex in run.callbacks and ex.live_run is run
    finally:
        run.stop()
        run.wait(10)
    assert run.state == "stopped"


def test_explorers_carry_a_static_picture_for_saved_notebooks():
    model = tiny_mlp()
    lora_nb.attach(model, r=4, name="first")
    lora_nb.attach(model, r=2, name="second")
    make_b_nonzero(model, "second")
    for view, expect in [(SpectrumExplorer(model), "<rect"), (WeightsExplorer(model), "<image"),
                         (SimilarityView(model, "first", "second"), "<image")]:
        bundle = view._repr_mimebundle_()
        assert "application/vnd.jupyter.widget-view+json" in bundle  # widget front ends show the live widget
        static = bundle["image/svg+xml"]  # tools without widgets show this picture
        assert static.startswith("<svg") and expect in static and len(static) < 50_000
    spectrum = SpectrumExplorer(model)
    svg = spectrum._repr_mimebundle_()["image/svg+xml"]
    values = lora_nb.spectra(model)[spectrum.module.value]
    shown = [float(v) for v in re.findall(r"<title>σ\d+ = ([^<]+)</title>", svg)]
    np.testing.assert_allclose(shown, values, rtol=1e-3)  # one bar per singular value, its value as hover text
