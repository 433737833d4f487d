"""Intruder dimensions you can dial: a slider scales them, the user's metrics follow, λ = 1 restores exactly."""

from __future__ import annotations

import pytest
import torch
from helpers import make_b_nonzero, tiny_gpt2
from torch import nn

import lora_nb
from lora_nb.core.analysis.learned.intruders import IntruderDial
from lora_nb.errors import LoraNBError


def _model_with_an_intruder(d=32):
    """W's left singular vectors are the unit axes; ΔW = 3·u·vᵀ with u = (1, …, 1)/√d: |cos| ≤ 0.18 with all."""
    g = torch.Generator().manual_seed(0)
    model = nn.Sequential(nn.Linear(d, d, bias=False))
    q_in = torch.linalg.qr(torch.randn(d, d, generator=g))[0]
    with torch.no_grad():
        model[0].weight.copy_(torch.diag(torch.linspace(1.0, 0.1, d)) @ q_in.T)
    probe = torch.randn(64, d, generator=g)
    base_out = model(probe).detach()
    lora_nb.attach(model, r=2, alpha=2)
    u, v = torch.ones(d) / d ** 0.5, q_in[:, 5]
    with torch.no_grad():
        model[0].lora_A["default"].weight.copy_(torch.stack([v, torch.zeros(d)]))
        model[0].lora_B["default"].weight.copy_(torch.stack([3.0 * u, torch.zeros(d)], dim=1))
    trained_out = model(probe).detach()
    old = lambda m: float(((m(probe).detach() - base_out) ** 2).mean())  # forgetting: off the base
    new = lambda m: float(((m(probe).detach() - trained_out) ** 2).mean())  # off what was learned
    return model, {"old task": old, "new task": new}


def _factors(model):
    layer = model[0]
    return layer.lora_A["default"].weight.detach().clone(), layer.lora_B["default"].weight.detach().clone()


def test_slider_scales_intruders_metrics_follow_and_restore_is_exact():
    from lora_nb.widgets.intruders import IntruderView

    model, metrics = _model_with_an_intruder()
    a0, b0 = _factors(model)
    view = IntruderView(model, metrics, k=4)
    assert view.dial.counts == {"0": 1}
    assert "<td>0</td><td>1</td>" in view.table.value
    assert view.measured["new task"][1.0] == 0.0
    old_trained = view.measured["old task"][1.0]
    first = view.curve.value
    view.slider.value = 0.5
    assert view.curve.value != first and view.curve.draws == 2  # the slider redraws the curve chart
    view.slider.value = 0.0
    old, new = view.measured["old task"], view.measured["new task"]
    assert old[0.0] < old[0.5] < old_trained * 0.6  # removing the intruder brings the base behaviour back
    assert new[0.0] > new[0.5] > 0.0  # at the price of what the adapter learned
    assert "λ = 0.00" in view.readout.value
    fig = view.curve.figure
    assert [t.name for t in fig.data[:2]] == ["old task", "new task"] and list(fig.data[0].x) == [0.0, 0.5, 1.0]
    svg = view.curve.value
    assert svg.count("<circle") == 2 * 3 + 2  # 2 metrics × 3 measured λ, + their legend markers
    assert "<title>new task at λ=0.50: " in svg and "stroke-dasharray='2,3'" in svg  # the current λ: dotted
    view.restore_button.click()
    a1, b1 = _factors(model)
    assert view.slider.value == 1.0 and torch.equal(a0, a1) and torch.equal(b0, b1)
    with pytest.raises(LoraNBError, match=r"in \[0, 1\]"):
        view.dial.set(1.5)


def test_dial_on_transposed_gpt2_layers_matches_peft_delta_and_undoes():
    model = tiny_gpt2()
    lora_nb.attach(model, r=4)
    make_b_nonzero(model, scale=3.0)
    dial = IntruderDial(model, k=8, eps=0.9)
    assert sum(dial.counts.values()) > 0
    name = next(n for n, c in dial.counts.items() if c)
    layer = model.get_submodule(name)
    before = {n: p.detach().clone() for n, p in model.named_parameters() if "lora_" in n}
    dial.set(0.0)
    part = dial.layers[name]
    expected = part.factors.scaling * part.factors.B.double() @ part.factors.A.double() - (part.u * part.s) @ part.v.T
    got = part.factors.from_stored(layer.get_delta_weight("default").detach().double())
    tail = torch.linalg.svdvals(expected)[part.factors.r:]  # rank-r factors: the best rank-r approximation
    assert float((got - expected).norm()) == pytest.approx(float(tail.norm()), abs=1e-5)
    dial.restore()
    assert all(torch.equal(p, before[n]) for n, p in model.named_parameters() if "lora_" in n)


def test_the_view_carries_a_picture_and_closing_restores_the_factors():
    from lora_nb.widgets.intruders import IntruderView

    model, metrics = _model_with_an_intruder()
    a0, b0 = _factors(model)
    view = IntruderView(model, metrics, k=4)
    bundle = view._repr_mimebundle_()
    assert "application/vnd.jupyter.widget-view+json" in bundle
    picture = bundle["text/html"]  # what nbconvert and GitHub show: the table and the curve as SVG
    assert "intruder dimensions of adapter" in picture and "<svg" in picture and "<title>old task</title>" in picture
    assert bundle["image/svg+xml"] == view.curve.value  # what a saved notebook keeps as its picture
    view.slider.value = 0.25
    assert not torch.equal(_factors(model)[1], b0)
    view.close()
    a1, b1 = _factors(model)
    assert torch.equal(a0, a1) and torch.equal(b0, b1) and view.widget.comm is None and view.curve.comm is None


def test_the_table_and_the_dial_count_the_same_intruders_in_float64():
    """`%lora intruders` and `--metric`'s dial find intruders with one computation: in float64 even for a
    bfloat16 model, where W's own precision would blur cosines near ε."""
    from lora_nb.core.analysis.learned.spectra import intruders

    model = tiny_gpt2()
    lora_nb.attach(model, r=4)
    make_b_nonzero(model, scale=3.0)
    model.to(torch.bfloat16)
    table = intruders(model, k=8, eps=0.9)
    dial = IntruderDial(model, k=8, eps=0.9)
    assert dict(table) == dial.counts and sum(dial.counts.values()) > 0
    for name, part in dial.layers.items():
        assert table.detail[name].dtype == part.best_cos.dtype == "float64"
        assert (table.detail[name] == part.best_cos).all()
