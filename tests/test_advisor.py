"""Rank advice: the advisor recovers the rank each layer's update really has, and a new adapter starts with it."""

from __future__ import annotations

import pytest
import torch
from helpers import tiny_mlp

import lora_nb
from lora_nb.core import find
from lora_nb.core.analysis.learned.advisor import advise
from lora_nb.errors import OptionError
from lora_nb.viz.svg import render

TRUE_RANKS = {"0": 1, "2": 2, "4": 4}  # the update each layer needs: rank 1, 2 and 4


def _adapter_with_known_ranks(noise=1e-2):
    """An r=5 adapter whose ΔW per layer is a known rank-k update (k equal singular values) plus tiny noise."""
    torch.manual_seed(0)
    model = tiny_mlp()
    lora_nb.attach(model, r=5)
    with torch.no_grad():
        for name, k in TRUE_RANKS.items():
            layer = model.get_submodule(name)
            a, b = layer.lora_A["default"].weight, layer.lora_B["default"].weight  # 5 × in, out × 5
            u = torch.linalg.qr(torch.randn(b.shape[0], 5))[0]
            v = torch.linalg.qr(torch.randn(a.shape[1], 5))[0]
            a.copy_(v.T * noise)
            b.copy_(u * noise)
            a[:k] = v[:, :k].T
            b[:, :k] = u[:, :k]
    return model


def test_advisor_recovers_the_rank_of_each_layers_update():
    model = _adapter_with_known_ranks()
    advice = advise(model, energy=0.9)
    assert advice.rank_pattern == TRUE_RANKS
    assert advice.global_r == 4
    sizes = {"0": 16 + 32, "2": 32 + 32, "4": 32 + 5}
    assert advice.params("now") == sum(5 * s for s in sizes.values())
    assert advice.params("pattern") == sum(TRUE_RANKS[n] * s for n, s in sizes.items())
    assert "global r=4" in repr(advice) and f"{advice.params('now') - advice.params('pattern'):,} saved" in repr(advice)
    assert advise(model, energy=1.0).rank_pattern == {"0": 5, "2": 5, "4": 5}  # the noise fills every direction


def test_attach_with_the_advised_rank_pattern_starts_an_adapter_of_those_ranks():
    model = _adapter_with_known_ranks()
    with pytest.raises(OptionError, match="no rank advice"):
        lora_nb.attach(model, name="lean", rank_pattern="advised")
    advise(model, energy=0.9)
    lora_nb.attach(model, name="lean", rank_pattern="advised")
    ranks = {n: model.get_submodule(n).lora_A["lean"].weight.shape[0] for n in TRUE_RANKS}
    assert ranks == TRUE_RANKS
    assert find(model).active == "lean"
    lora_nb.attach(model, name="manual", r=5, rank_pattern="0:3,2:4")
    assert model.get_submodule("0").lora_A["manual"].weight.shape[0] == 3
    assert model.get_submodule("4").lora_A["manual"].weight.shape[0] == 5  # not in the pattern: r
    with pytest.raises(OptionError, match="rank_pattern must be"):
        lora_nb.attach(model, name="bad", rank_pattern="0=3")
    with pytest.raises(OptionError, match="energy must be"):
        advise(model, energy=1.5)


def test_advise_and_attach_with_the_advice_from_the_magics(ip):
    ip.user_ns["model"] = model = _adapter_with_known_ranks()
    report = ip.run_line_magic("lora", "advise model --energy 0.9")
    assert "global r=4" in repr(report)
    bars = report.figures[0].data
    assert list(bars[0].x) == [5, 5, 5] and list(bars[1].x) == [1, 2, 4]  # one row per module
    svg = render(report.specs[0])
    assert svg.count("advised rank") == 3 and svg.count(": r = 5</title>") == 3  # a bar per module and measure
    shown = report._repr_html_()  # the notebook shows the chart, how to apply it, then the table
    assert shown.index("<svg") < shown.index("--rank-pattern advised") < shown.index("<table")
    ip.run_line_magic("lora", "attach model --name lean --rank-pattern advised")
    assert {n: model.get_submodule(n).lora_A["lean"].weight.shape[0] for n in TRUE_RANKS} == TRUE_RANKS
