"""LoRA+ (``--lr-ratio R``): B matrices learn R times faster than A matrices, through the run's whole schedule."""

from __future__ import annotations

import pytest
from helpers import classification_pairs, lora_params, make_b_nonzero, mlp_with_lora

import lora_nb
from lora_nb.errors import CheckpointError


def first_update(lr_ratio, warmup=0.0):
    """max |ΔA| and max |ΔB| of one step (AdamW's first step moves each weight by about its group's lr)."""
    model = mlp_with_lora()
    make_b_nonzero(model)  # with B = 0, A gets no gradient on the first step
    before = lora_params(model)
    lora_nb.train(model, classification_pairs(64), steps=1, batch_size=64, lr=1e-3, warmup=warmup,
                  lr_ratio=lr_ratio, background=False)
    moved = {n: (p - before[n]).abs().max().item() for n, p in lora_params(model).items()}
    return (max(v for n, v in moved.items() if "lora_A" in n), max(v for n, v in moved.items() if "lora_B" in n))


def test_b_moves_ratio_times_as_far_as_a_and_the_warmup_scales_both():
    a, b = first_update(lr_ratio=16)
    assert abs(a - 1e-3) < 1e-5 and abs(b - 16e-3) < 1.6e-4
    plain_a, plain_b = first_update(lr_ratio=None)
    assert abs(plain_a - 1e-3) < 1e-5 and abs(plain_b - 1e-3) < 1e-5
    warm_a, warm_b = first_update(lr_ratio=16, warmup=2)  # step 1 of a 2-step warmup: half the lr, both groups
    assert abs(warm_a - 0.5e-3) < 5e-6 and abs(warm_b - 8e-3) < 8e-5


def test_loraplus_trains_and_its_checkpoints_resume_only_as_loraplus(tmp_path):
    model = mlp_with_lora()
    run = lora_nb.train(model, classification_pairs(64), steps=20, batch_size=16, lr=3e-3, lr_ratio=8,
                        save_every=10, save_dir=tmp_path, background=False)
    losses = [r["loss"] for r in run.history]
    assert run.state == "finished" and sum(losses[-5:]) < 0.8 * sum(losses[:5])
    again = lora_nb.train(mlp_with_lora(), classification_pairs(64), steps=20, batch_size=16, lr=3e-3, lr_ratio=8,
                          resume=tmp_path / "checkpoint-000010", background=False)
    assert max(abs(x["loss"] - y["loss"]) for x, y in zip(again.history, run.history)) <= 1e-6
    with pytest.raises(CheckpointError, match="LoRA\\+"):
        lora_nb.train(mlp_with_lora(), classification_pairs(64), steps=20, batch_size=16, lr=3e-3,
                      resume=tmp_path / "checkpoint-000010", background=False)
