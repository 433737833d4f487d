"""Spectra, similarity, amplification and intruders: exact answers on tiny real models and built cases."""

from __future__ import annotations

import threading
import time
import warnings

import numpy as np
import pytest
import torch
from helpers import TinyCNN, TinyEmbedder, make_b_nonzero, minilm_dir, tiny_bert, tiny_gpt2, tiny_llama, tiny_mlp
from torch import nn

import lora_nb
from lora_nb.core import find
from lora_nb.core.adapters.factors import lora_layers, read
from lora_nb.core.analysis.learned import spectra as S
from lora_nb.errors import AdapterError, LoraNBError, TargetError


def _minilm():
    from transformers import AutoModel

    return AutoModel.from_pretrained(minilm_dir()).eval()


def _dense_values(layer, adapter: str = "default") -> np.ndarray:
    delta = layer.get_delta_weight(adapter).detach().double()
    return torch.linalg.svdvals(delta.reshape(delta.shape[0], -1)).numpy()


def _check_against_peft(model, adapter: str = "default") -> int:
    result = lora_nb.spectra(model, adapter)
    layers = dict(lora_layers(find(model), adapter))
    assert set(result) == set(layers)
    for name, layer in layers.items():
        values, dense = result[name], _dense_values(layer, adapter)
        out, inp, r = result.shapes[name]
        assert len(values) == min(r, out, inp)
        assert np.all(np.diff(values) <= 0), "descending"
        np.testing.assert_allclose(values, dense[: len(values)], rtol=1e-4, atol=1e-4 * dense[0])
        assert dense[len(values):].max(initial=0.0) <= 1e-4 * dense[0]  # nothing beyond the rank
    return len(result)


@pytest.mark.parametrize("build, kwargs, count", [
    (tiny_gpt2, {"r": 4}, 8),  # transformers Conv1D, fan_in_fan_out
    (tiny_llama, {"r": 4}, 14),
    (tiny_bert, {"r": 4}, 13),  # 2 layers × 6 + the pooler
    (TinyCNN, {"r": 4, "targets": "conv1,conv2"}, 2),  # Conv2d: kernel flattened
    (_minilm, {"r": 4, "targets": "query,value"}, 12),  # real pretrained weights
])
def test_spectra_equal_dense_svd_of_peft_delta(build, kwargs, count):
    model = build()
    lora_nb.attach(model, **kwargs)
    make_b_nonzero(model)
    assert _check_against_peft(model) == count


def test_batched_low_rank_values_match_dense_float64_in_every_case():
    """One same-shaped group holding full-rank, rank-deficient and zero factors (the Cholesky path and its
    eigen-root fallback), float32 and bfloat16 factors: each ΔW's values within 1e-9·σ₁ of a dense float64 SVD."""
    from lora_nb.core import lowrank

    g = torch.Generator().manual_seed(0)
    r, out, inp = 8, 300, 200
    full = [(torch.randn(r, inp, generator=g), torch.randn(out, r, generator=g)) for _ in range(3)]
    low = torch.randn(out, r, generator=g)
    low[:, 3:] = low[:, :1]  # B of rank 3 exactly (repeated columns)
    cases = [*full, (torch.randn(r, inp, generator=g), low), (torch.randn(r, inp, generator=g), torch.zeros(out, r)),
             (full[0][0].bfloat16(), full[0][1].bfloat16())]
    pairs = [lowrank.Pair(a, b, 0.5) for a, b in cases]
    values = lowrank.svdvals_many(pairs)
    for (a, b), v in zip(cases, values):
        dense = torch.linalg.svdvals(0.5 * b.double() @ a.double())[:r]
        rank = int((dense > 1e-12 * dense[0]).sum()) if dense[0] > 0 else 0
        assert v.dtype == torch.float64 and v.shape == (r,)
        assert float((v[:rank] - dense[:rank]).abs().sum()) <= 1e-9 * float(dense[0]) * rank, (v, dense)
        # values that are 0 in exact arithmetic come out at rounding level (≈ 1e-8·σ₁ through the Gram)
        assert float(v[rank:].sum()) <= 1e-7 * float(dense[0]) * (r - rank), (v, dense)
    assert [int((v > 1e-6 * v[0]).sum()) for v in values[:4]] == [8, 8, 8, 3] and float(values[4].max()) == 0.0


def test_embedding_adapter_and_rank_above_min_dim():
    emb = TinyEmbedder()
    lora_nb.attach(emb, r=4, targets="emb")
    make_b_nonzero(emb)  # embeddings start with A = 0
    assert _check_against_peft(emb) == 1
    tiny = nn.Sequential(nn.Linear(20, 2))
    with pytest.warns(UserWarning, match="exceeds"):
        lora_nb.attach(tiny, r=8)  # G7
    make_b_nonzero(tiny)
    _check_against_peft(tiny)
    assert len(lora_nb.spectra(tiny)["0"]) == 2


def test_stats_fresh_adapter_and_layer_filter():
    model = tiny_llama()
    lora_nb.attach(model, r=4)
    fresh = lora_nb.spectra(model, layers=r"layers\.0\.self_attn")
    assert len(fresh) == 4 and all(v.max() == 0 for v in fresh.values())
    assert "zero everywhere" in repr(fresh)
    make_b_nonzero(model)
    result = lora_nb.spectra(model, layers="q_proj")
    name = "model.layers.1.self_attn.q_proj"
    v, st = result[name], result.stats[name]
    p = v / v.sum()
    assert st.effective_rank == pytest.approx(np.exp(-(p * np.log(p)).sum()))
    assert st.stable_rank == pytest.approx((v ** 2).sum() / v[0] ** 2)
    assert st.energy_top(1) == pytest.approx(v[0] ** 2 / (v ** 2).sum())
    assert st.energy_top(4) == pytest.approx(1.0)
    assert name in repr(result) and "<table>" in result._repr_html_()
    with pytest.raises(TargetError, match="matches none.*q_proj"):
        lora_nb.spectra(model, layers="nothing_here")
    with pytest.raises(AdapterError, match="did you mean `default`"):
        lora_nb.spectra(model, adapter="defualt")


def test_base_spectra_values_cache_topk_and_merge():
    model = tiny_llama()
    lora_nb.attach(model, r=4)
    make_b_nonzero(model)
    session = find(model)
    seen = []
    result = lora_nb.spectra(model, base=True, layers="layers.0", progress=lambda *a: seen.append(a))
    assert [s[:2] for s in seen] == [(i, 7) for i in range(1, 8)]
    layer = session.model.get_submodule("model.layers.0.mlp.up_proj")
    w = layer.get_base_layer().weight.detach()
    b = result.base["model.layers.0.mlp.up_proj"]
    np.testing.assert_allclose(b.w, torch.linalg.svdvals(w).numpy(), rtol=1e-5)
    np.testing.assert_allclose(b.w_delta, torch.linalg.svdvals(w + layer.get_delta_weight("default")).detach(),
                               rtol=1e-5)
    calls = []
    real = S._svdvals
    S._svdvals = lambda m, k: calls.append(m.shape) or real(m, k)
    try:
        again = lora_nb.spectra(model, base=True, layers="layers.0")
        assert calls == []  # cached: nothing changed
        with torch.no_grad():
            layer.lora_B["default"].weight.mul_(2.0)  # in place: the version counter moves
        changed = lora_nb.spectra(model, base=True, layers="layers.0")
        assert calls == [(64, 32)]  # only W+ΔW of the changed layer
    finally:
        S._svdvals = real
    np.testing.assert_array_equal(again.base["model.layers.0.mlp.up_proj"].w, b.w)
    np.testing.assert_allclose(changed.base["model.layers.0.mlp.up_proj"].w, b.w)
    session.lora.merge_adapter()  # the stored weight is now W+ΔW: W is still reported as W
    merged = lora_nb.spectra(model, base=True, layers="layers.0.mlp.up_proj")
    np.testing.assert_allclose(merged.base["model.layers.0.mlp.up_proj"].w, b.w, rtol=1e-5)
    session.lora.unmerge_adapter()
    top = lora_nb.spectra(model, base=True, layers="layers.0.mlp.up_proj", top_k=3)
    assert len(top.base["model.layers.0.mlp.up_proj"].w) == 3 and not top.base["model.layers.0.mlp.up_proj"].exact
    assert "randomized" in repr(top)
    np.testing.assert_allclose(top.base["model.layers.0.mlp.up_proj"].w, b.w[:3], rtol=1e-3)


def test_meta_device_base_and_meta_factors():
    with torch.device("meta"):
        model = tiny_mlp()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        lora_nb.attach(model, r=2)
    with pytest.raises(LoraNBError, match="meta device"):
        lora_nb.spectra(model)
    for _, layer in lora_layers(find(model), "default"):
        for part in (layer.lora_A["default"], layer.lora_B["default"]):
            part.weight = nn.Parameter(torch.randn(part.weight.shape))
    assert len(lora_nb.spectra(model)) == 3  # ΔW needs only the factors
    with pytest.raises(LoraNBError, match="base weight of `0` is on the meta device"):
        lora_nb.spectra(model, base=True)


def test_read_copies_under_the_session_lock():
    model = tiny_llama()
    lora_nb.attach(model, r=4)
    session = find(model)
    done = threading.Event()
    session.lock.acquire()
    try:
        threading.Thread(target=lambda: (read(model), done.set()), daemon=True).start()
        time.sleep(0.3)
        assert not done.is_set()  # waits for the training step to finish
    finally:
        session.lock.release()
    assert done.wait(5)
    _, fs = read(model)
    with torch.no_grad():
        session.model.get_submodule(fs[0].name).lora_A["default"].weight.zero_()
    assert fs[0].A.abs().max() > 0  # a copy, not a view


def _set(layer, adapter: str, a: torch.Tensor, b: torch.Tensor) -> None:
    with torch.no_grad():
        layer.lora_A[adapter].weight.copy_(a)
        layer.lora_B[adapter].weight.copy_(b / layer.scaling[adapter])


def test_similarity_self_independent_and_across_ranks():
    model = nn.Sequential(nn.Linear(2048, 64))
    lora_nb.attach(model, r=2, name="one")
    lora_nb.attach(model, r=2, name="two")
    lora_nb.attach(model, r=8, name="r8")
    lora_nb.attach(model, r=64, name="r64")
    same = lora_nb.similarity(model, "one", "one")["0"]
    np.testing.assert_allclose(np.diag(same), 1.0, atol=1e-10)
    assert lora_nb.similarity(model, "one", "two")["0"].mean() < 0.01  # independent random 2-dim subspaces
    layer = find(model).model.get_submodule("0")
    with torch.no_grad():  # r64's row space contains r8's: φ(8, 64) = 1
        layer.lora_A["r64"].weight[:8] = layer.lora_A["r8"].weight
    sim = lora_nb.similarity(model, "r8", "r64")
    phi = sim["0"]
    assert phi.shape == (8, 64) and phi[-1, -1] == pytest.approx(1.0)
    assert np.all((phi >= -1e-12) & (phi <= 1 + 1e-9))
    assert "φ(1,1)" in repr(sim)
    other = nn.Sequential(nn.Linear(2048, 64))
    lora_nb.attach(other, r=2, name="one")
    _set(find(other).model.get_submodule("0"), "one", layer.lora_A["one"].weight.detach(), torch.zeros(64, 2))
    across = lora_nb.similarity(model, "one", "one", other=other)["0"]
    np.testing.assert_allclose(across, same, atol=1e-10)


def test_amplification_known_answers():
    model = nn.Sequential(nn.Linear(8, 8, bias=False))
    with torch.no_grad():
        model[0].weight.copy_(torch.diag(torch.arange(8.0, 0.0, -1.0)))  # W = diag(8, 7, …, 1)
    lora_nb.attach(model, r=2)
    assert lora_nb.core.analysis.learned.spectra.amplification(model)["0"] == 0.0  # fresh: ΔW = 0
    layer = find(model).model.get_submodule("0")
    e = torch.eye(8)
    _set(layer, "default", e[[0, 6]], 5.0 * e[:, [0, 6]])  # ΔW = 5 (e0 e0ᵀ + e6 e6ᵀ)
    # U_rᵀ W V_r = diag(8, 2): amplification = ‖ΔW‖ / ‖diag(8, 2)‖ = 5√2 / √68
    amp = lora_nb.core.analysis.learned.spectra.amplification(model)
    assert amp["0"] == pytest.approx(5 * 2 ** 0.5 / 68 ** 0.5, rel=1e-9)
    assert "amplification" in repr(amp)


def test_intruder_dimensions_known_answers():
    n = 64
    model = nn.Sequential(nn.Linear(n, n, bias=False))
    with torch.no_grad():
        model[0].weight.copy_(torch.diag(torch.linspace(2.0, 1.0, n)))  # singular vectors: the standard basis
    lora_nb.attach(model, r=1)
    layer = find(model).model.get_submodule("0")
    x = torch.ones(1, n) / n ** 0.5  # |cos| with every basis vector = 1/8
    _set(layer, "default", x, 10.0 * x.T)  # ΔW = 10 x xᵀ: a new top direction
    found = lora_nb.core.analysis.learned.spectra.intruders(model, k=1)
    assert found["0"] == 1
    assert found.detail["0"][0] == pytest.approx(1 / 8, abs=0.02)
    e0 = torch.eye(n)[:1]
    _set(layer, "default", e0, 3.0 * e0.T)  # ΔW along W's own top direction
    assert lora_nb.core.analysis.learned.spectra.intruders(model, k=5)["0"] == 0


def test_analysis_modules_import_no_notebook_stack():
    import subprocess
    import sys

    code = ("import sys, lora_nb.core.analysis.learned.spectra, lora_nb.core.analysis.learned.weights, lora_nb.core.adapters.factors; "
            "print([m for m in ('IPython', 'ipywidgets', 'plotly') if m in sys.modules])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
