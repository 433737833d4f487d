"""Interference before combining: overlap maps of several adapters, exactness of combine, overlap warnings."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from helpers import make_b_nonzero, tiny_mlp

import lora_nb
from lora_nb import interference
from lora_nb.core.adapters.combine import combination_error
from lora_nb.errors import LoraNBWarning, OptionError
from lora_nb.viz.svg import render


def _copy_factors(model, source, target, sign=1.0):
    with torch.no_grad():
        for name in ("0", "2", "4"):
            layer = model.get_submodule(name)
            layer.lora_A[target].weight.copy_(layer.lora_A[source].weight)
            layer.lora_B[target].weight.copy_(sign * layer.lora_B[source].weight)


def _three_adapters():
    """`first`; `twin` = first (cos 1); `flipped` = −first (cos −1); `other` independent."""
    torch.manual_seed(0)
    model = tiny_mlp()
    for name in ("first", "twin", "flipped", "other"):
        lora_nb.attach(model, r=2, name=name)
        make_b_nonzero(model, name)
    with torch.no_grad():  # make_b_nonzero gives every adapter the same B; `other` gets its own
        for name in ("0", "2", "4"):
            b = model.get_submodule(name).lora_B["other"].weight
            b.copy_(torch.randn(b.shape) * 0.5)
    _copy_factors(model, "first", "twin")
    _copy_factors(model, "first", "flipped", -1.0)
    return model


def _dense_cos(model, module, a, b):
    layer = model.get_submodule(module)
    da, db = (layer.get_delta_weight(x).detach().double().flatten() for x in (a, b))
    return float(da @ db / (da.norm() * db.norm()))


def test_overlap_map_of_several_adapters_matches_dense_cosines():
    model = _three_adapters()
    result = interference(model, "first,twin,flipped,other")
    assert set(result) == {"0", "2", "4"} and len(result.pairs) == 6
    for module, cos in result.items():
        np.testing.assert_allclose(np.diag(cos), 1.0, atol=1e-12)
        assert cos[0, 1] == pytest.approx(1.0, abs=1e-12) and cos[0, 2] == pytest.approx(-1.0, abs=1e-12)
        assert cos[0, 3] == pytest.approx(_dense_cos(model, module, "first", "other"), abs=1e-6)
        assert abs(cos[0, 3]) < 0.5
        assert result.phi[module][(0, 1)] == pytest.approx(1.0)  # the same input directions
    assert "cos ΔW first·twin" in repr(result)
    with pytest.raises(OptionError, match="two or more"):
        interference(model, "first")


def test_combine_reports_exactness_and_warns_on_strong_overlap():
    model = _three_adapters()
    lora_nb.combine(model, "first,other", "1,1", name="stacked", combination_type="cat")
    assert max(combination_error(model, "stacked").values()) < 1e-6  # cat is exact (float32 rounding)
    lora_nb.combine(model, "first,other", "1,1", name="squeezed", combination_type="svd")
    errors = combination_error(model, "squeezed")  # rank 4 squeezed into rank 2: a real, measured loss
    for module, err in errors.items():
        layer = model.get_submodule(module)
        target = sum(layer.get_delta_weight(a).detach().double() for a in ("first", "other"))
        dense = float((layer.get_delta_weight("squeezed").detach().double() - target).norm() / target.norm())
        assert err == pytest.approx(dense, rel=1e-4) and err > 0.05
    with pytest.warns(LoraNBWarning, match="strongly overlapping adapters are summed: `first` and `twin` in 3 of 3"):
        lora_nb.combine(model, "first,twin", "0.5,0.5", name="doubled", combination_type="cat")
    with pytest.warns(LoraNBWarning, match="`first` and `flipped`"):  # 0.5·ΔW − 0.5·(−ΔW): the same way again
        lora_nb.combine(model, "first,flipped", "0.5,-0.5", name="same_way", combination_type="cat")
    lora_nb.combine(model, "first,flipped", "1,1", name="cancelled", combination_type="cat")  # opposite: no note
    assert max(combination_error(model, "cancelled").values()) == pytest.approx(0.0, abs=1e-6)


def test_similarity_verb_maps_several_adapters_and_combine_says_how_exact(ip):
    ip.user_ns["model"] = _three_adapters()
    report = ip.run_line_magic("lora", "similarity model --adapters first,other,twin")
    assert "interference of adapters `first`, `other`, `twin`" in repr(report)
    heat = report.figures[0].data[0]
    assert list(heat.x) == ["first·other", "first·twin", "other·twin"] and heat.z[0][1] == pytest.approx(1.0)
    svg = render(report.specs[0])
    assert svg.count("<image") == 1 and ">cos ΔW</text>" in svg and "mean φ = " in svg
    blue, red = "rgb(5,48,97)", "rgb(103,0,31)"  # RdBu reversed: +1 (the same update) is red, -1 blue
    assert svg.index(red) > svg.index(blue)  # the colour bar's gradient runs from -1 (first stop) to +1
    text = ip.run_line_magic("lora", "combine model --adapters first,other --weights 1,1 --type svd --name sq")
    assert "relative error" in text and "max" in text
    text = ip.run_line_magic("lora", "combine model --adapters first,other --weights 1,1 --type cat --name ct")
    assert "exact" in text

