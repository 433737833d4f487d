"""nn.MultiheadAttention, exact: its base weights are never written by an adapted forward, so off, detach and
unmerge give the base model bit for bit, and the spectra are those of each projection's ΔW."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

import lora_nb
from lora_nb.core import find
from lora_nb.errors import InjectionError, LoraNBWarning, OptionError, TargetError


class Toy(nn.Module):
    def __init__(self, kdim=None):
        super().__init__()
        self.emb = nn.Linear(8, 16)
        self.attn = nn.MultiheadAttention(16, 2, batch_first=True)
        self.cross = nn.MultiheadAttention(16, 2, batch_first=True, kdim=kdim, vdim=kdim) if kdim else None
        self.head = nn.Linear(16, 3)

    def forward(self, x):
        h = self.emb(x)
        a, _ = self.attn(h, h, h)
        if self.cross is not None:
            a, _ = self.cross(a, x, x)
        return self.head(a.mean(1))


def toy(**kwargs):
    torch.manual_seed(0)
    return Toy(**kwargs).eval()


X = torch.randn(2, 5, 8, generator=torch.Generator().manual_seed(1))


def randomize_b(model, adapter="default", seed=3):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for n, p in model.named_parameters():
            if f".lora_B.{adapter}." in n:
                p.copy_(torch.randn(p.shape, generator=g) * 0.05)


def adapted_toy():
    model = toy()
    params = dict(model.named_parameters())
    originals = {n: p.detach().clone() for n, p in params.items()}
    with torch.no_grad():
        base_out = model(X)
    lora_nb.attach(model, r=2)
    randomize_b(model)
    return model, params, originals, base_out


def untouched(model, params, originals):
    """The same parameter objects as before attach, holding the same bits."""
    now = {n.replace(".base_layer", ""): p for n, p in model.named_parameters() if "lora_" not in n}
    return now.keys() == params.keys() and all(now[n] is params[n] and torch.equal(p, originals[n])
                                               for n, p in now.items())


def test_multihead_attention_base_weights_never_drift_over_many_adapted_forwards():
    model, params, originals, base_out = adapted_toy()
    assert find(model).records["default"]["options"]["targets"] == ["emb", "attn", "head"]
    model.train()
    optimizer = torch.optim.SGD([p for n, p in model.named_parameters() if "lora_" in n], lr=1e-3)
    for _ in range(20):  # training steps: every forward used to merge into in_proj_weight and subtract again
        optimizer.zero_grad()
        nn.functional.cross_entropy(model(X), torch.tensor([0, 2])).backward()
        optimizer.step()
    model.eval()
    with torch.no_grad():
        outs = [model(X) for _ in range(30)]
    assert torch.isfinite(outs[0]).all() and (outs[0] - base_out).abs().max() > 1e-2
    assert all(torch.equal(outs[0], o) for o in outs)
    assert untouched(model, params, originals)
    assert model.attn.lora_A["default"].weight.grad.abs().sum() > 0  # in_proj's factors learn
    assert model.attn.out_proj.lora_A["default"].weight.grad.abs().sum() > 0  # and out_proj's
    lora_nb.disable(model)
    with torch.no_grad():
        assert torch.equal(model(X), base_out)
    lora_nb.enable(model)
    lora_nb.detach(model)
    assert untouched(model, params, originals)
    assert type(model.attn) is nn.MultiheadAttention and type(model.attn.out_proj).__name__.startswith("NonDynamic")


def test_multihead_attention_merge_and_unmerge_restore_the_base_bit_identically():
    model, params, originals, base_out = adapted_toy()
    with torch.no_grad():
        adapted = model(X)
        lora_nb.merge(model)
        assert not torch.equal(model.attn.in_proj_weight, originals["attn.in_proj_weight"])
        torch.testing.assert_close(model(X), adapted, rtol=1e-4, atol=1e-4)
        lora_nb.unmerge(model)
        assert untouched(model, params, originals) and torch.equal(model(X), adapted)
        lora_nb.merge(model)
        lora_nb.disable(model)  # off unmerges first: exactly the base
        assert torch.equal(model(X), base_out) and untouched(model, params, originals)
        lora_nb.merge(model)
    lora_nb.detach(model)
    assert untouched(model, params, originals)


def test_multihead_attention_spectra_equal_dense_svd_of_each_projection_update():
    model, *_ = adapted_toy()
    spectra = lora_nb.spectra(model, base=True)
    assert list(spectra) == ["emb", "attn", "attn.out_proj", "head"]
    assert spectra.shapes["attn"] == (48, 16, 2) and spectra.shapes["attn.out_proj"] == (16, 16, 2)
    for name, delta in [("attn", model.attn.get_delta_weight("default")),
                        ("attn.out_proj", model.attn.out_proj.get_delta_weight("default"))]:
        dense = torch.linalg.svdvals(delta.detach().double()).numpy()
        np.testing.assert_allclose(spectra[name], dense[:2], rtol=1e-5)
        assert dense[2] < 1e-6 * dense[0]
    w = model.attn.get_base_layer().in_proj_weight.detach().double()
    np.testing.assert_allclose(spectra.base["attn"].w, torch.linalg.svdvals(w).numpy(), rtol=1e-5)


def test_multihead_attention_adapters_save_load_and_stack(tmp_path):
    model, *_ = adapted_toy()
    lora_nb.attach(model, r=3, name="second")
    randomize_b(model, "second", seed=4)
    paths = {name: lora_nb.save(model, tmp_path / name, adapter=name) for name in ("default", "second")}
    fresh = toy()
    for name, path in paths.items():
        lora_nb.load(fresh, path, name=name)
    for name in paths:
        lora_nb.enable(model, name)
        lora_nb.enable(fresh, name)
        with torch.no_grad():
            assert torch.equal(fresh(X), model(X))


def test_out_proj_alone_dora_and_attention_with_other_key_size_are_refused_or_skipped_with_one_note():
    model = toy(kdim=8)
    with pytest.raises(TargetError, match=r"^`attn.out_proj` is the output projection of nn.MultiheadAttention "
                                          r"`attn`, which reads its weight directly"):
        lora_nb.attach(model, targets="attn.out_proj")
    with pytest.raises(TargetError, match=r"^LoRA cannot adapt `cross` \(MultiheadAttention\) exactly: separate"):
        lora_nb.attach(model, targets="cross")
    with pytest.raises(OptionError, match=r"^`dora=True` cannot adapt `attn` \(MultiheadAttention\)"):
        lora_nb.attach(model, targets="attn", dora=True)
    with pytest.warns(LoraNBWarning, match=r"^skipped 1 layer\(s\) of class MultiheadAttention") as notes:
        lora_nb.attach(model, r=2)
    assert len(notes) == 1 and find(model).records["default"]["options"]["targets"] == ["emb", "attn", "head"]


def test_peft_failing_inside_multihead_attention_unwraps_its_out_proj_too(monkeypatch):
    from lora_nb.core.adapters.mha import ExactMultiheadAttention

    model = toy()
    params = dict(model.named_parameters())
    originals = {n: p.detach().clone() for n, p in params.items()}
    lora_nb.attach(model, r=2, targets="emb")

    def no_room(self, *args, **kwargs):  # fails after peft already wrapped attn.out_proj
        raise RuntimeError("no room for the factors")

    monkeypatch.setattr(ExactMultiheadAttention, "update_layer", no_room)
    with pytest.raises(InjectionError, match=r"^peft cannot adapt `attn` \(MultiheadAttention\): no room"):
        lora_nb.attach(model, r=2, targets="attn,head", name="second")
    assert type(model.attn) is nn.MultiheadAttention and type(model.attn.out_proj).__name__.startswith("NonDynamic")
    assert find(model).adapters == ["default"] and list(model.emb.lora_A) == ["default"]
    lora_nb.detach(model)
    with pytest.raises(InjectionError, match=r"^peft cannot adapt `attn`"):
        lora_nb.attach(model, r=2)  # a new session: nothing is left either
    assert find(model) is None and untouched(model, params, originals)
    assert type(model.attn.out_proj).__name__.startswith("NonDynamic")
