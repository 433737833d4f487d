"""Models dispatched by accelerate (device_map, hooks, disk offload): attach, train, inspect and detach them
where they are, never moving them to one device; offloaded base weights are refused for training (G21)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from accelerate import dispatch_model
from helpers import make_b_nonzero, run, sample_inputs, tiny_llama

import lora_nb
from lora_nb.core.adapters.offload import execution_device, offloaded
from lora_nb.errors import LoraNBError, TrainingError

BLOCKS = ["model.embed_tokens", "model.layers.0", "model.layers.1", "model.norm", "model.rotary_emb", "lm_head"]


def token_data(n=32):
    g = torch.Generator().manual_seed(4)
    return [{"input_ids": (ids := torch.randint(1, 100, (10,), generator=g)), "labels": ids} for _ in range(n)]


def hooked(model):
    """Modules carrying an accelerate hook, by the user's names (a LoRA wrapper's base layer keeps its hook)."""
    return {n.replace(".base_layer", "") for n, m in model.named_modules() if hasattr(m, "_hf_hook")}


def test_a_dispatched_model_goes_through_attach_train_spectra_toggle_detach():
    torch.manual_seed(0)
    model = tiny_llama()
    inputs = sample_inputs(model)
    before, reference = {k: v.clone() for k, v in model.state_dict().items()}, run(model, inputs)
    # every block gets accelerate's AlignDevicesHook, as with device_map="auto" over several devices
    model = dispatch_model(model, device_map=dict.fromkeys(BLOCKS, "cpu"), main_device="cpu", force_hooks=True)
    hooks = hooked(model)
    assert len(hooks) >= len(BLOCKS)
    lora_nb.attach(model, r=4)
    assert torch.equal(run(model, inputs), reference)  # fresh adapter: B = 0
    base = {n: p.detach().clone() for n, p in model.named_parameters() if "lora_" not in n}
    result = lora_nb.train(model, token_data(), steps=6, lr=1e-2, batch_size=4, device="cpu")
    assert result.state == "finished", result.message
    assert all(torch.equal(p, base[n]) for n, p in model.named_parameters() if n in base)
    assert hooked(model) == hooks and model.hf_device_map == dict.fromkeys(BLOCKS, "cpu")
    # inspect on the layer's own device: ΔW spectra exact, W spectra from the layer's weight
    spectra = lora_nb.spectra(model, base=True)
    layer = model.model.layers[1].self_attn.q_proj
    delta = layer.get_delta_weight("default").detach()
    np.testing.assert_allclose(spectra["model.layers.1.self_attn.q_proj"],
                               torch.linalg.svdvals(delta.double()).numpy()[:4], rtol=1e-4, atol=1e-9)
    np.testing.assert_allclose(spectra.base["model.layers.1.self_attn.q_proj"].w,
                               torch.linalg.svdvals(layer.base_layer.weight.detach()).numpy(), rtol=1e-4)
    assert execution_device(layer) == torch.device("cpu")
    lora_nb.disable(model)
    assert torch.equal(run(model, inputs), reference)
    lora_nb.enable(model)
    assert not torch.equal(run(model, inputs), reference)
    lora_nb.detach(model)
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())
    assert torch.equal(run(model, inputs), reference) and hooked(model) == hooks


def test_disk_offloaded_layers_attach_and_show_but_training_is_refused_with_the_reason(tmp_path):
    torch.manual_seed(0)
    model = tiny_llama()
    inputs = sample_inputs(model)
    reference = run(model, inputs)
    device_map = {**dict.fromkeys(BLOCKS, "cpu"), "model.layers.1": "disk"}
    model = dispatch_model(model, device_map=device_map, main_device="cpu", offload_dir=str(tmp_path))
    assert offloaded(model) and all(n.startswith("model.layers.1.") for n in offloaded(model))
    lora_nb.attach(model, r=4)
    # peft leaves the new factors of an offloaded layer on `meta`; lora_nb gives them real, initialised storage
    factors = [p for n, p in model.named_parameters() if "lora_" in n]
    assert factors and not any(p.is_meta for p in factors)
    assert torch.allclose(run(model, inputs), reference, atol=1e-6)
    adapter = {n: p.detach().clone() for n, p in model.named_parameters() if "lora_" in n}
    with pytest.raises(TrainingError, match=r"cannot train: 9 parameters .* meta device .*offloaded"):
        lora_nb.train(model, token_data(), steps=2, device="cpu")
    assert lora_nb.core.registry.require(model).run is None
    assert all(torch.equal(p, adapter[n]) for n, p in model.named_parameters() if n in adapter)
    make_b_nonzero(model)
    spectra = lora_nb.spectra(model)  # ΔW needs only the factors, which are real
    assert len(spectra) == 14 and spectra["model.layers.1.self_attn.q_proj"][0] > 0
    with pytest.raises(LoraNBError, match="model.layers.1.self_attn.q_proj` is on the meta device"):
        lora_nb.spectra(model, base=True)
    lora_nb.disable(model)
    assert torch.allclose(run(model, inputs), reference, atol=1e-6)
    lora_nb.detach(model)
    assert torch.allclose(run(model, inputs), reference, atol=1e-6) and not offloaded(model) == []


def test_init_false_is_kept_on_offloaded_layers(tmp_path):
    """init=False means no LoRA init (B not zero, as peft leaves it); offloaded layers keep that choice."""
    model = tiny_llama()
    inputs = sample_inputs(model)
    reference = run(model, inputs)
    device_map = {**dict.fromkeys(BLOCKS, "cpu"), "model.layers.1": "disk"}
    model = dispatch_model(model, device_map=device_map, main_device="cpu", offload_dir=str(tmp_path))
    lora_nb.attach(model, r=4, init=False)
    offloaded_b = [p for n, p in model.named_parameters() if n.startswith("model.layers.1.") and "lora_B" in n]
    resident_b = [p for n, p in model.named_parameters() if n.startswith("model.layers.0.") and "lora_B" in n]
    assert offloaded_b and all(torch.isfinite(p).all() and p.abs().sum() > 0 for p in offloaded_b + resident_b)
    assert not torch.allclose(run(model, inputs), reference, atol=1e-6)  # the update is not zero, as asked
