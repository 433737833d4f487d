"""LoRA vs full fine-tuning in directions: which subspaces their updates span, and the step-0 gradient."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from lora_nb.core.adapters.factors import Factors
from lora_nb.core.analysis.shortrun.directions import FactorWatch, WeightWatch, compare, overlap
from lora_nb.core.analysis.shortrun.vs_full import vs_full
from lora_nb.viz.analysis import directions_spec
from lora_nb.viz.svg import render


def _rank_one_task(n=256, d=16, seed=0):
    """A linear layer whose target is W + u·vᵀ: the task needs exactly one new direction."""
    g = torch.Generator().manual_seed(seed)
    model = nn.Sequential(nn.Linear(d, d, bias=False))
    with torch.no_grad():
        model[0].weight.copy_(torch.randn(d, d, generator=g) / d ** 0.5)
    u, v = torch.randn(d, generator=g), torch.randn(d, generator=g)
    u, v = u / u.norm(), v / v.norm()
    x = torch.randn(n, d, generator=g)
    y = x @ (model[0].weight.detach() + 2.0 * torch.outer(u, v)).T
    return model, (x, y), u, v


def test_both_arms_find_the_one_direction_the_task_needs():
    model, data, u, v = _rank_one_task()
    result = vs_full(model, data, steps=60, r=1, alpha=1, lr_lora=5e-2, lr_full=5e-2, batch_size=64,
                     loss_fn=nn.MSELoss(), device="cpu")
    d = result.directions["0"]
    assert d.k == 1 and d.random_left == pytest.approx(1 / 16)
    assert overlap(d.left) > 0.95 and overlap(d.right) > 0.95  # LoRA's ΔW and full FT's ΔW: the same line
    assert d.grad_b > 0.95  # the trained B points where the first full gradient's top left vector does
    assert d.grad_a0 < 0.5  # A₀ (random init) does not know v yet: that is what gradient-aligned inits fix
    row = result.rows()[-1]
    assert row.aspect == "directions" and float(row.lora) == pytest.approx(overlap(d.left), abs=5e-4)
    assert "directions of LoRA vs full fine-tuning in 1 layers" in repr(result.directions)
    svg = render(directions_spec(result.directions))
    bars = [f"<title>0: {overlap(d.left):.3f}</title>", f"<title>0: {overlap(d.right):.3f}</title>",
            f"<title>0: {d.grad_a0:.3f}</title>", f"<title>0: {d.grad_b:.3f}</title>"]
    assert all(bar in svg for bar in bars) and ">overlap (1 = same subspace)</text>" in svg
    assert svg.count("<circle") == 2 + 2  # a random subspace on each side, and their legend marks


def _factors(a, b):
    return Factors("lin", "linear", a, b, 1.0, False, (b.shape[0], a.shape[1]))


def test_overlaps_of_constructed_subspaces():
    g = torch.Generator().manual_seed(1)
    q_out = torch.linalg.qr(torch.randn(12, 12, generator=g))[0]
    q_in = torch.linalg.qr(torch.randn(10, 10, generator=g))[0]
    lora, full = FactorWatch("x"), WeightWatch(["lin"])
    b, a = q_out[:, :2] * torch.tensor([3.0, 2.0]), q_in[:, :2].T  # ΔW_lora spans out-dirs 0,1 and in-dirs 0,1
    lora.initial = {"lin": _factors(q_in[:, 2:4].T, torch.zeros(12, 2))}
    lora.final = {"lin": _factors(a, b)}
    # full FT: output directions 0 and 2 (one shared), input directions 0 and 1 (both shared), smaller rest
    full.delta = {"lin": q_out[:, [0, 2]] @ torch.diag(torch.tensor([5.0, 4.0])) @ q_in[:, :2].T
                  + 0.01 * q_out[:, 5:7] @ q_in[:, 5:7].T}
    gradient = {"lin": q_out[:, :2] @ q_in[:, 2:4].T}  # top right vectors of ∇ = A₀'s rows
    d = compare(lora, full, gradient)["lin"]
    np.testing.assert_allclose(d.left, [1.0, 0.0], atol=1e-6)
    np.testing.assert_allclose(d.right, [1.0, 1.0], atol=1e-6)
    assert overlap(d.left) == pytest.approx(0.5, abs=1e-6)
    assert d.grad_a0 == pytest.approx(1.0, abs=1e-6) and d.grad_b == pytest.approx(1.0, abs=1e-6)


@pytest.mark.parametrize("shape", [(48, 20), (20, 48), (24, 24)])
def test_top_subspaces_without_a_dense_svd_equal_the_svds(shape):
    """The full update's top-k subspaces come from the smaller Gram matrix: the same subspaces as a dense float64
    SVD's (a decaying spectrum, as trained updates have), orthonormal, on either orientation."""
    from lora_nb.core.analysis.shortrun.directions import principal_cosines, top_vectors

    g = torch.Generator().manual_seed(3)
    u, _, vh = torch.linalg.svd(torch.randn(*shape, generator=g, dtype=torch.float64), full_matrices=False)
    m = (u * torch.logspace(0, -4, min(shape), dtype=torch.float64)) @ vh
    left, right = top_vectors(m.float(), 5)
    u_ref, _, vh_ref = torch.linalg.svd(m.float().double(), full_matrices=False)
    assert left.shape == (shape[0], 5) and right.shape == (shape[1], 5)
    assert np.allclose(principal_cosines(left, u_ref[:, :5]), 1, atol=1e-10)
    assert np.allclose(principal_cosines(right, vh_ref[:5].T), 1, atol=1e-10)
    assert torch.allclose(left.T @ left, torch.eye(5, dtype=torch.float64), atol=1e-12)
