"""The memory plan: measured estimates within ±25% of a real training step's peak, and advice when it won't fit."""

from __future__ import annotations

import pytest
import torch
from helpers import classification_pairs, ragged_token_items, tiny_gpt2, tiny_llama, tiny_mlp

import lora_nb
from lora_nb.core.training.memory import plan as memory_plan
from lora_nb.core.training.memory.allocations import TrackedAllocations
from lora_nb.core.training.memory.plan import weight_bytes
from lora_nb.core.training.memory.recompute import is_checkpointing
from lora_nb.errors import OptionError


def token_data(n=32, width=48):
    return ragged_token_items(n, width)


def pairs():
    x, y = classification_pairs(256)
    return list(zip(x, y))


def with_lora(build):
    torch.manual_seed(0)
    model = build()
    lora_nb.attach(model, r=4)
    return model


def measured_run(model, data, batch_size, **options):
    """The run of two real training steps, and weights plus the most tensor memory alive at once during it
    (every allocation tracked)."""
    with TrackedAllocations() as tracked:
        run = lora_nb.train(model, data, steps=2, batch_size=batch_size, background=False, **options)
    assert run.state == "finished"
    return run, weight_bytes(model) + tracked.peak


def measured_peak(model, data, batch_size, **options):
    return measured_run(model, data, batch_size, **options)[1]


@pytest.mark.parametrize("build, data, batch_size", [(tiny_gpt2, token_data, 16), (tiny_llama, token_data, 16),
                                                     (tiny_mlp, pairs, 64)])
def test_the_estimate_is_within_a_quarter_of_the_measured_peak(build, data, batch_size):
    model = with_lora(build)
    plan = lora_nb.plan_memory(model, data(), batch_size=batch_size, device="cpu")
    measured = measured_peak(model, data(), batch_size)
    assert 0.75 <= plan.total / measured <= 1.25, (plan.total, measured)
    assert plan.activations > plan.optimizer > 0 and plan.fits  # a tiny model fits; activations dominate
    params = sum(p.numel() for n, p in model.named_parameters() if "lora_" in n)
    assert plan.gradients == 4 * params  # fp32 gradients of the adapter, exactly


@pytest.mark.parametrize("build", [tiny_gpt2, tiny_llama])
def test_a_cpu_runs_own_plan_costs_no_extra_forward_and_holds_the_same_bound(build):
    """With plenty of free RAM a CPU run measures its plan on its own first step (saved tensors, scaled to the
    widest batch): no forward of its own."""
    model, forwards = with_lora(build), []
    decoder = getattr(model, model.base_model_prefix)  # runs in every forward (also the LM head on selected rows)
    decoder.register_forward_pre_hook(lambda module, args, kwargs: forwards.append(
        (kwargs.get("input_ids") if "input_ids" in kwargs else args[0]).shape), with_kwargs=True)
    run, measured = measured_run(model, token_data(), 16)
    plan = run.memory_plan
    assert forwards == [(16, 48), (16, 48)]  # the two training steps only
    assert plan.measured_on.startswith("the first step") and "16 × 48 tokens" in plan.measured_on
    assert plan.batch_size == 16 and not plan.pending
    assert 0.75 <= plan.total / measured <= 1.25, (plan.total, measured)


def test_with_little_free_ram_the_plan_is_measured_before_the_first_step(monkeypatch):
    model, forwards = with_lora(tiny_gpt2), []
    decoder = getattr(model, model.base_model_prefix)  # runs in every forward (also the LM head on selected rows)
    decoder.register_forward_pre_hook(lambda module, args, kwargs: forwards.append(
        (kwargs.get("input_ids") if "input_ids" in kwargs else args[0]).shape), with_kwargs=True)
    monkeypatch.setattr(memory_plan, "free_bytes", lambda device: 2**30)  # 1 GiB: the plan can matter
    run, measured = measured_run(model, token_data(), 16)
    assert forwards[0] == (1, 48) and len(forwards) == 3  # the plan's one sample, then the two steps
    assert run.memory_plan.measured_on.startswith("1 sample of 48 tokens")
    assert 0.75 <= run.memory_plan.total / measured <= 1.25


def test_gradient_checkpointing_is_planned_and_trained_with_less_memory():
    data = token_data(16, width=64)
    model = with_lora(tiny_llama)
    plain = lora_nb.plan_memory(model, data, batch_size=16, device="cpu")
    planned = lora_nb.plan_memory(model, data, batch_size=16, device="cpu", grad_checkpointing=True)
    assert planned.activations < 0.8 * plain.activations
    measured = measured_peak(model, data, 16, grad_checkpointing=True)
    assert 0.75 <= planned.total / measured <= 1.25, (planned.total, measured)
    assert not is_checkpointing(model) and not getattr(model, "_require_grads_hooks", None)  # off again after
    with pytest.raises(OptionError, match="gradient checkpointing needs a transformers model"):
        lora_nb.train(with_lora(tiny_mlp), pairs(), steps=1, grad_checkpointing=True, background=False)


def test_a_plan_that_does_not_fit_says_what_to_change(ip, monkeypatch):
    ip.user_ns.update(model=with_lora(tiny_gpt2), items=token_data())
    text = ip.run_line_magic("lora", "plan model --data items --batch-size 16 --device cpu")
    assert "fits:" in text and "activations (measured, scaled)" in text
    plan = lora_nb.plan_memory(ip.user_ns["model"], token_data(), batch_size=16, device="cpu")
    room = int(plan.total - plan.resident - plan.activations * 0.6)  # room for fewer than half the activations
    monkeypatch.setattr(memory_plan, "free_bytes", lambda device: room)
    text = ip.run_line_magic("lora", "plan model --data items --batch-size 16 --device cpu")
    assert "does NOT fit" in text
    assert "try: `--batch-size 4 --grad-accum 4` (same effective batch)" in text
    assert "--grad-checkpointing" in text and "4-bit base" in text


def test_every_run_starts_with_its_plan_line(ip, capsys):
    ip.user_ns.update(model=with_lora(tiny_gpt2), items=token_data(8))
    run = ip.run_line_magic("lora", "train model --data items --steps 1 --batch-size 4")
    out = capsys.readouterr().out
    assert run.memory_plan is not None and run.memory_plan.activations > 0
    assert "memory plan on cpu: ~" in out and "fits" in out
