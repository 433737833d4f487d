"""4-bit bases (QLoRA) where bitsandbytes runs — on this CPU machine its CPU backend (bitsandbytes ≥ 0.45):
attach and train, W and W+ΔW spectra from the dequantized weight, merge refused unless rounding is accepted."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

import lora_nb
from lora_nb.core.adapters import quantized
from lora_nb.errors import AdapterError

bnb = pytest.importorskip("bitsandbytes", reason="bitsandbytes is the optional `quant` extra")


def four_bit(lin: nn.Linear) -> nn.Module:
    q = bnb.nn.Linear4bit(lin.in_features, lin.out_features, bias=True, quant_type="nf4",
                          compute_dtype=torch.float32)
    q.load_state_dict(lin.state_dict())
    return q.to("cpu")


def test_qlora_trains_inspects_dequantized_and_refuses_a_rounding_merge():
    torch.manual_seed(0)
    reference = nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 5))
    model = nn.Sequential(four_bit(reference[0]), nn.ReLU(), four_bit(reference[2]))
    lora_nb.attach(model, r=4)
    assert all(quantized.is_quantized(model[i]) and quantized.bits(model[i]) == 4 for i in (0, 2))
    packed = {n: p.detach().clone() for n, p in model.named_parameters() if "lora_" not in n}
    x = torch.randn(64, 16)
    run = lora_nb.train(model, (x, x[:, :5].argmax(1)), steps=20, lr=2e-2, batch_size=16, device="cpu")
    losses = [r["loss"] for r in run.history]
    assert run.state == "finished" and sum(losses[-5:]) < 0.8 * sum(losses[:5])
    assert all(torch.equal(p, packed[n]) for n, p in model.named_parameters() if n in packed)
    spectra = lora_nb.spectra(model, base=True)
    w = quantized.dequantized(model[0])
    assert w.shape == (32, 16) and (w - reference[0].weight).abs().max() < 0.1  # nf4 rounding of W
    np.testing.assert_allclose(spectra.base["0"].w, torch.linalg.svdvals(w).numpy(), rtol=1e-4)
    delta = model[0].get_delta_weight("default").detach()
    np.testing.assert_allclose(spectra.base["0"].w_delta, torch.linalg.svdvals(w + delta).numpy(), rtol=1e-4)
    with pytest.raises(AdapterError, match="4-bit quantized base weights: merging re-quantizes W"):
        lora_nb.merge(model)
    assert lora_nb.merge.__module__ and not lora_nb.core.adapters.merge.merged(model)
