"""Faults a training run must survive (G10, G15–G17, G21): the adapter ends at its last good state."""

from __future__ import annotations

import gc
import math
import weakref

import pytest
import torch
from helpers import classification_pairs, lora_params, mlp_with_lora, tiny_mlp
from torch.utils.data import Dataset

import lora_nb
from lora_nb.core.training.callbacks import Callback
from lora_nb.errors import TrainingError


class Snapshots(Callback):
    """The adapter's parameters after every completed step (index 0: before training)."""

    def __init__(self, model):
        self.model = model
        self.states = [lora_params(model)]

    def on_step_end(self, run, record):
        self.states.append(lora_params(self.model))


def same(a, b):
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_only_adapter_params_change_at_a_large_lr():  # G10
    model = tiny_mlp()
    lora_nb.attach(model, r=4)
    base = {n: p.detach().clone() for n, p in model.named_parameters() if "lora_" not in n}
    flags = {n: p.requires_grad for n, p in model.named_parameters()}
    model.train()
    run = lora_nb.train(model, classification_pairs(), steps=3, lr=1.0)
    assert run.state == "finished"
    assert all(torch.equal(p, base[n]) for n, p in model.named_parameters() if n in base)
    assert {n: p.requires_grad for n, p in model.named_parameters()} == flags
    assert model.training and all(m.training for m in model.modules())  # train mode kept as it was
    assert all(p.grad is None for p in model.parameters())


def test_huge_lr_fails_with_a_finite_adapter():  # G15 with lr=1e9
    model = mlp_with_lora()
    snaps = Snapshots(model)
    run = lora_nb.train(model, classification_pairs(), steps=50, lr=1e9, callbacks=[snaps])
    assert run.state == "failed" and 1 <= run.step < 50
    assert " became " in run.message and "lower the learning rate (lr=1e+09)" in run.message
    assert all(math.isfinite(r["loss"]) for r in run.history)
    after = lora_params(model)
    assert all(torch.isfinite(p).all() for p in after.values())
    # a non-finite loss undoes the last update (and its record); a non-finite gradient is never applied
    assert same(after, snaps.states[run.step])


def test_nan_loss_restores_the_weights_before_the_last_update():  # G15, documented policy
    model = mlp_with_lora()
    snaps = Snapshots(model)
    calls = {"n": 0}

    def loss_fn(model, batch):
        calls["n"] += 1
        loss = torch.nn.functional.cross_entropy(model(batch[0]), batch[1])
        return loss * float("nan") if calls["n"] == 3 else loss

    run = lora_nb.train(model, classification_pairs(), loss_fn=loss_fn, steps=10, lr=1e-2, callbacks=[snaps])
    assert run.state == "failed" and run.step == 1  # step 2's update was undone, and its record with it
    assert run.message.startswith("loss became nan (run failed; the adapter was restored to its weights before "
                                  "the last update) at step 3")
    assert same(lora_params(model), snaps.states[1])


def test_poisoned_batch_fails_without_touching_the_adapter():  # G15, a NaN in the data
    model = mlp_with_lora()
    x, y = classification_pairs(16)
    x[:] = float("nan")
    before = lora_params(model)
    run = lora_nb.train(model, (x, y), steps=5)
    assert run.state == "failed" and run.step == 0 and "loss became nan" in run.message
    assert same(lora_params(model), before)


class _Boom:
    """A forward hook that raises ``exc`` on call number ``at`` and keeps a weakref to a tensor it made."""

    def __init__(self, exc, at):
        self.exc, self.at, self.calls, self.ref = exc, at, 0, None

    def __call__(self, module, inputs, output):
        self.calls += 1
        if self.calls == self.at:
            activation = torch.ones(256, 256) * output.sum()  # memory only the failed step holds
            self.ref = weakref.ref(activation)
            raise self.exc


class HookFromStart(Callback):
    """Registers a forward hook once the run begins, so its call count is the training forwards' only
    (a run measures its memory plan with a few forwards before that)."""

    def __init__(self, module, hook):
        self.module, self.hook = module, hook

    def on_train_begin(self, run):
        self.module.register_forward_hook(self.hook)


def test_out_of_memory_in_forward_is_caught_and_memory_released():  # G16
    model = mlp_with_lora()
    snaps = Snapshots(model)
    boom = _Boom(RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB"), at=3)
    run = lora_nb.train(model, classification_pairs(), steps=10, batch_size=8,
                        callbacks=[HookFromStart(model[2], boom), snaps])
    assert run.state == "failed" and run.step == 2
    assert run.message.startswith("out of memory at step 3 with batch_size=8")
    assert "try batch_size=4 with grad_accum=2" in run.message
    assert same(lora_params(model), snaps.states[2])
    gc.collect()
    assert boom.ref() is None  # the failed step's tensors are gone
    assert all(p.grad is None for p in model.parameters())


def test_out_of_memory_inside_the_optimizer_step_is_undone():  # G16, half-applied update
    from torch.optim.optimizer import register_optimizer_step_post_hook

    model = mlp_with_lora()
    snaps = Snapshots(model)
    count = {"n": 0}

    def hook(optimizer, args, kwargs):
        count["n"] += 1
        if count["n"] == 3:
            raise torch.OutOfMemoryError("CUDA out of memory (simulated inside AdamW.step)")

    handle = register_optimizer_step_post_hook(hook)
    try:
        run = lora_nb.train(model, classification_pairs(), steps=10, lr=1e-2, callbacks=[snaps])
    finally:
        handle.remove()
    assert run.state == "failed" and run.step == 2 and "out of memory" in run.message
    assert same(lora_params(model), snaps.states[2])  # the third update was applied, then undone


class _Interrupt(Callback):
    def on_step_end(self, run, record):
        if record["step"] == 3:
            raise KeyboardInterrupt


def test_ctrl_c_in_a_blocking_run_stops_at_a_step_boundary():  # G17
    model = mlp_with_lora()
    snaps = Snapshots(model)
    run = lora_nb.train(model, classification_pairs(), steps=20, callbacks=[snaps, _Interrupt()])
    assert run.state == "stopped" and run.step == 3 and len(run.history) == 3
    assert "interrupted at step 3/20" in run.message
    assert same(lora_params(model), snaps.states[3])
    assert lora_nb.train(model, classification_pairs(), steps=2).state == "finished"  # usable afterwards


def test_ctrl_c_mid_step_keeps_the_last_complete_step():  # G17, interrupt inside the forward
    model = mlp_with_lora()
    snaps = Snapshots(model)
    run = lora_nb.train(model, classification_pairs(), steps=20,
                        callbacks=[HookFromStart(model[0], _Boom(KeyboardInterrupt(), at=4)), snaps])
    assert run.state == "stopped" and run.step == 3
    assert same(lora_params(model), snaps.states[3])


def test_exception_in_user_loss_fn_fails_with_that_error():
    model = mlp_with_lora()
    calls = {"n": 0}

    def my_loss(model, batch):
        calls["n"] += 1
        if calls["n"] == 3:
            raise ValueError("labels out of range")
        return torch.nn.functional.cross_entropy(model(batch[0]), batch[1])

    run = lora_nb.train(model, classification_pairs(), loss_fn=my_loss, steps=10)
    assert run.state == "failed" and run.step == 2
    assert run.message == "ValueError in loss_fn at step 3: labels out of range"
    assert isinstance(run.error, ValueError) and "my_loss" in run.traceback


class _BadDataset(Dataset):
    def __len__(self):
        return 32

    def __getitem__(self, i):
        if i == 5:
            raise KeyError("row 5 is corrupt")
        return torch.randn(16), 1


def test_exception_in_the_data_fails_with_that_error():
    model = mlp_with_lora()
    run = lora_nb.train(model, _BadDataset(), steps=10, batch_size=4, seed=1)
    assert run.state == "failed" and run.message.startswith("KeyError in reading data at step")
    assert "row 5 is corrupt" in run.message and "__getitem__" in run.traceback


def test_meta_device_base_is_refused():  # G21
    from accelerate import init_empty_weights

    with init_empty_weights():
        model = tiny_mlp()
    lora_nb.attach(model, r=4)
    with pytest.raises(TrainingError, match=r"cannot train: \d+ parameters .* are on the meta device"):
        lora_nb.train(model, classification_pairs(), steps=2)


def test_adapter_off_or_merged_is_refused():
    model = mlp_with_lora()
    lora_nb.disable(model)
    with pytest.raises(TrainingError, match="adapters are off"):
        lora_nb.train(model, classification_pairs(), steps=2)
    lora_nb.enable(model)
    lora_nb.core.find(model).lora.merge_adapter()
    with pytest.raises(TrainingError, match="merged"):
        lora_nb.train(model, classification_pairs(), steps=2)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_precision_base_trains_fp32_adapter_and_merges(dtype):  # G20
    model = tiny_mlp().to(dtype)
    lora_nb.attach(model, r=4)
    base = {n: p.detach().clone() for n, p in model.named_parameters() if "lora_" not in n}
    x, y = classification_pairs()
    run = lora_nb.train(model, (x.to(dtype), y), steps=20, lr=1e-2, batch_size=16, device="cpu")
    losses = [r["loss"] for r in run.history]
    assert run.state == "finished" and all(math.isfinite(v) for v in losses)
    assert sum(losses[-5:]) < sum(losses[:5])
    assert {p.dtype for n, p in model.named_parameters() if "lora_" in n} == {torch.float32}
    assert all(torch.equal(p, base[n]) for n, p in model.named_parameters() if n in base)
    with torch.no_grad():
        adapted = model(x.to(dtype))
        lora_nb.merge(model)
        merged = model(x.to(dtype))
        lora_nb.unmerge(model)
        assert torch.allclose(merged.float(), adapted.float(), atol=5e-2)  # half-precision rounding of W + ΔW
        assert torch.equal(model(x.to(dtype)), adapted)  # unmerge restores the exact base weights
