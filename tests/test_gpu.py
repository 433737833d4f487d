"""On a CUDA GPU: the precision policy (bf16, and the fp16 path with its loss scaler forced by playing an older GPU),
the measured memory plan over six configurations, a real out-of-memory, spectra, toggles, files.

Skipped where no CUDA device is present (CI runs on CPUs); run on a GPU machine with
``python -m pytest tests/test_gpu.py`` (``scripts/gpu_checks.sh`` runs it with the benchmarks).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from helpers import (
    StopAt,
    base_params,
    classification_pairs,
    lm_loss,
    lora_params,
    make_b_nonzero,
    mlp_with_lora,
    sample_inputs,
    tiny_llama,
    token_items,
)

import lora_nb
from lora_nb.core.training import precision as policy
from lora_nb.core.training.memory.plan import weight_bytes

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]


def on_gpu(build=tiny_llama, **attach):
    torch.manual_seed(0)
    model = build().cuda()
    lora_nb.attach(model, r=4, **attach)
    return model


def test_a_run_trains_on_the_gpu_with_bf16_autocast_and_leaves_the_base_bit_identical():
    model = on_gpu()
    before = base_params(model)
    run = lora_nb.train(model, token_items(32), steps=40, lr=1e-2, batch_size=8, background=False, seed=0,
                        precision="bf16")
    assert run.state == "finished", run.message
    assert run.device.type == "cuda" and "bf16 autocast" in run.where
    assert run.history[-1]["loss"] < run.history[0]["loss"]
    assert all("peak_memory_mb" in h for h in run.history)
    after = base_params(model)
    assert all(torch.equal(before[n], after[n]) for n in before)
    assert all(p.dtype == torch.float32 and p.is_cuda for p in lora_params(model).values())


def test_auto_precision_follows_the_gpus_compute_capability():
    capability = torch.cuda.get_device_capability()
    run = lora_nb.train(on_gpu(), token_items(16), steps=3, batch_size=8, background=False)
    native = capability >= (8, 0)
    assert run.state == "finished", run.message
    assert ("bf16 autocast (native bf16" if native else "fp16 autocast + loss scaling") in run.where, run.where
    assert ("loss_scale" in run.history[-1]) is not native


def test_fp16_forced_on_the_gpu_learns_counts_skipped_steps_and_resumes_with_its_scaler(monkeypatch, tmp_path):
    """Playing a T4 (compute capability 7.5): fp16 autocast with a CUDA GradScaler; step 10 overflows."""
    monkeypatch.setattr(policy, "device_capability", lambda device: (7, 5))
    data, options = token_items(64), dict(steps=40, lr=1e-2, batch_size=8, background=False, seed=0)
    model = on_gpu()
    full = lora_nb.train(model, data, loss_fn=lm_loss(at_call=10), **options)
    assert full.state == "finished", full.message
    assert "fp16 autocast + loss scaling (compute capability 7.5 has no native bf16)" in full.where
    skipped = [r["step"] for r in full.history if r["grad_norm"] is None]
    assert 10 in skipped and full.history[-1]["skipped_steps"] == len(skipped)
    losses = [r["loss"] for r in full.history]
    assert sum(losses[-5:]) < 0.8 * sum(losses[:5])
    first = lora_nb.train(on_gpu(), data, loss_fn=lm_loss(at_call=10), save_every=10, save_dir=tmp_path,
                          callbacks=[StopAt(15)], **options)
    assert first.state == "stopped" and first.step == 15
    resumed = lora_nb.train(on_gpu(), data, loss_fn=lm_loss(), resume=tmp_path, **options)
    assert resumed.state == "finished" and resumed.step == 40
    assert resumed.history[15]["loss_scale"] == full.history[15]["loss_scale"]  # the scaler came back
    assert resumed.history[-1]["skipped_steps"] == full.history[-1]["skipped_steps"]
    assert abs(resumed.history[-1]["loss"] - full.history[-1]["loss"]) <= 0.02 * full.history[-1]["loss"]
    assert all(p.dtype == torch.float32 and p.is_cuda for p in lora_params(model).values())


def llama(hidden=256, layers=4, vocab=4000):
    from transformers import LlamaConfig, LlamaForCausalLM

    cfg = LlamaConfig(num_hidden_layers=layers, hidden_size=hidden, intermediate_size=4 * hidden,
                      num_attention_heads=8, num_key_value_heads=4, vocab_size=vocab, max_position_embeddings=1024,
                      bos_token_id=0, eos_token_id=0, pad_token_id=0)
    return LlamaForCausalLM(cfg).eval()


def four_bit_llama():
    """``llama()`` with every decoder projection an nf4 ``bitsandbytes`` layer (QLoRA's base), on the GPU."""
    bnb = pytest.importorskip("bitsandbytes")
    model = llama()
    for layer in model.model.layers:
        for parent in (layer.self_attn, layer.mlp):
            for name, lin in list(parent.named_children()):
                if isinstance(lin, torch.nn.Linear):
                    q = bnb.nn.Linear4bit(lin.in_features, lin.out_features, bias=lin.bias is not None,
                                          quant_type="nf4", compute_dtype=torch.bfloat16)
                    q.load_state_dict(lin.state_dict())
                    setattr(parent, name, q)
    return model.cuda()


MEMORY_CONFIGS = {  # name: (model builder, rank, tokens per sequence, batch, gradient checkpointing)
    "r=4, 128 tokens, batch 16": (llama, 4, 128, 16, False),
    "r=64, 128 tokens, batch 16": (llama, 64, 128, 16, False),
    "r=8, 512 tokens, batch 8": (llama, 8, 512, 8, False),
    "r=8, 64 tokens, batch 64": (llama, 8, 64, 64, False),
    "r=8, 512 tokens, batch 8, gradient checkpointing": (llama, 8, 512, 8, True),
    "r=8, 128 tokens, batch 16, 4-bit base": (four_bit_llama, 8, 128, 16, False),
}


@pytest.mark.parametrize("name", MEMORY_CONFIGS)
def test_the_memory_plan_is_within_ten_percent_of_the_allocators_peak(name):
    build, r, length, batch, recompute = MEMORY_CONFIGS[name]
    torch.manual_seed(0)
    model = build().cuda()
    lora_nb.attach(model, r=r)
    ids = torch.randint(1, 4000, (4 * batch, length), generator=torch.Generator().manual_seed(0))
    data = [{"input_ids": row, "labels": row} for row in ids]
    options = dict(batch_size=batch, device="cuda", max_length=length, grad_checkpointing=recompute)
    plan = lora_nb.plan_memory(model, data, **options)
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    before = torch.cuda.memory_allocated()  # the weights, and the CUDA libraries' workspaces (once per process)
    run = lora_nb.train(model, data, steps=2, background=False, **options)
    peak = weight_bytes(model) + torch.cuda.max_memory_allocated() - before
    assert run.state == "finished", run.message
    print(f"memory plan, {name}: plan {plan.total / 2**20:,.1f} MiB, peak {peak / 2**20:,.1f} MiB, "
          f"ratio {plan.total / peak:.3f}")
    assert plan.fits and 0.9 <= plan.total / peak <= 1.1, (plan.table(), peak)


def test_spectra_recording_on_the_gpu_stays_within_two_percent_of_the_run():
    model = on_gpu()
    run = lora_nb.train(model, token_items(32), steps=300, lr=1e-2, batch_size=8, background=False, seed=0)
    history = run.spectra_history
    assert run.state == "finished" and history.steps[0] == 1 and history.steps[-1] == 300
    assert history.seconds / run.seconds <= 0.02, f"recording took {history.seconds / run.seconds:.1%} of the run"


def test_a_real_out_of_memory_fails_the_run_in_one_line_and_gives_the_memory_back():
    """A batch whose logits need terabytes: the allocator refuses, the step is undone, the memory released."""
    from transformers import LlamaConfig, LlamaForCausalLM

    cfg = LlamaConfig(num_hidden_layers=1, hidden_size=32, intermediate_size=64, num_attention_heads=4,
                      num_key_value_heads=2, vocab_size=32000, max_position_embeddings=8192)
    model = on_gpu(lambda: LlamaForCausalLM(cfg))
    trained = lora_params(model)
    ids = torch.randint(1, 32000, (4096, 8192))
    data = [{"input_ids": row, "labels": row} for row in ids]
    torch.cuda.synchronize()
    start = torch.cuda.memory_allocated()
    run = lora_nb.train(model, data, steps=2, batch_size=4096, background=False)
    assert run.state == "failed" and run.step == 0
    assert run.message.startswith("out of memory at step 1 with batch_size=4096"), run.message
    assert "batch_size=2048" in run.message and "\n" not in run.message
    assert torch.cuda.memory_allocated() <= start + 2**20
    now = lora_params(model)
    assert all(torch.equal(trained[n], now[n]) for n in trained)


def test_spectra_of_gpu_factors_equal_those_of_the_same_factors_on_the_cpu():
    model = on_gpu()
    make_b_nonzero(model)
    on_cuda = lora_nb.spectra(model)
    model.cpu()
    on_cpu = lora_nb.spectra(model)
    assert set(on_cuda) == set(on_cpu) and len(on_cpu) == 14
    for name in on_cpu:
        np.testing.assert_allclose(on_cuda[name], on_cpu[name], rtol=1e-9, atol=1e-12 * on_cpu[name][0])


def test_off_is_the_base_bit_for_bit_and_on_comes_back_exactly_on_the_gpu():
    torch.manual_seed(0)
    model = tiny_llama().cuda()
    inputs = {k: v.cuda() for k, v in sample_inputs(model).items()}
    with torch.no_grad():
        base = model(**inputs).logits
    lora_nb.attach(model, r=4)
    make_b_nonzero(model)
    with torch.no_grad():
        adapted = model(**inputs).logits
        lora_nb.disable(model)
        off = model(**inputs).logits
        lora_nb.enable(model)
        again = model(**inputs).logits
    assert torch.equal(off, base) and torch.equal(again, adapted) and not torch.equal(adapted, base)


def test_an_adapter_saved_from_the_gpu_loads_on_the_cpu_with_the_same_update(tmp_path):
    model = on_gpu()
    make_b_nonzero(model)
    lora_nb.save(model, tmp_path / "adapter")
    saved = {n: p.cpu() for n, p in lora_params(model).items()}
    torch.manual_seed(0)
    cpu_model = tiny_llama()
    lora_nb.load(cpu_model, tmp_path / "adapter")
    loaded = lora_params(cpu_model)
    assert set(loaded) == set(saved) and all(torch.equal(saved[n], loaded[n]) for n in saved)


def test_cpu_worker_processes_after_a_backward_here_fail_in_one_line_saying_what_to_do():
    """torch cannot run autograd in processes forked after a backward pass on a machine with a GPU."""
    gpu_model = on_gpu()
    assert lora_nb.train(gpu_model, token_items(8), steps=1, background=False).state == "finished"
    model = mlp_with_lora()
    before = lora_params(model)
    x, y = classification_pairs(64)
    run = lora_nb.train(model, list(zip(x, y)), steps=2, processes=2, device="cpu", background=False)
    assert run.state == "failed" and "restart the kernel" in run.message and "\n" not in run.message, run.message
    after = lora_params(model)
    assert all(torch.equal(before[n], after[n]) for n in before)
