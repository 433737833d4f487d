"""One precision policy: bf16 on native-bf16 GPUs, fp16 with loss scaling on older ones, fp32 on the CPU — said in
the run's first line. The fp16 path runs here on the CPU (torch autocasts to float16 there and has a CPU
``GradScaler``), with the device's compute capability set through the one seam, ``device_capability``."""

from __future__ import annotations

import io

import pytest
import torch
from helpers import StopAt, gpt2_lora, lm_loss, lora_params, token_items

import lora_nb
from lora_nb.core.training import precision as policy
from lora_nb.core.training.longrun import checkpoint_files as checkpoint
from lora_nb.core.training.reporting import ConsoleReporter
from lora_nb.errors import OptionError

CPU = torch.device("cpu")
OPTIONS = dict(steps=12, batch_size=4, lr=1e-2, background=False, device="cpu")


def play_gpu(monkeypatch, capability):
    """The CPU answers as a CUDA GPU of ``capability`` would (what ``auto`` decides from)."""
    monkeypatch.setattr(policy, "device_capability", lambda device: capability)


class Weights(lora_nb.Callback):
    """The adapter's weights after every step."""

    def __init__(self):
        self.after = {}

    def on_step_end(self, run, record):
        self.after[record["step"]] = {n: p.detach().clone() for n, p in lora_params(run.model).items()}


def test_auto_picks_by_compute_capability_and_says_why(monkeypatch):
    assert policy.choose_precision(CPU).describe() == "fp32 (no autocast on CPU unless asked)"
    assert policy.choose_precision(torch.device("mps")).name == "fp32"
    play_gpu(monkeypatch, (7, 5))  # T4
    t4 = policy.choose_precision(CPU)
    assert (t4.name, t4.dtype, t4.scaled) == ("fp16", torch.float16, True)
    assert t4.describe() == "fp16 autocast + loss scaling (compute capability 7.5 has no native bf16)"
    assert isinstance(t4.scaler(), torch.amp.GradScaler)
    bf16 = policy.choose_precision(CPU, "bf16")  # asked on an old GPU: done, and said to be slow there
    assert bf16.name == "bf16" and "emulated on compute capability 7.5" in bf16.reason and bf16.scaler() is None
    play_gpu(monkeypatch, (8, 0))  # A100
    a100 = policy.choose_precision(CPU)
    assert a100.describe() == "bf16 autocast (native bf16 on compute capability 8.0)" and not a100.scaled
    assert policy.choose_precision(CPU, "FP32").describe() == "fp32 (asked)"
    with pytest.raises(OptionError, match="precision must be one of auto, fp32, bf16, fp16"):
        policy.choose_precision(CPU, "fp8")
    with pytest.raises(OptionError, match="precision must be one of"):
        lora_nb.train(gpt2_lora(), token_items(), precision="half", **OPTIONS)


def test_fp16_on_an_older_gpu_trains_keeps_fp32_adapters_and_counts_a_skipped_overflow(monkeypatch):
    play_gpu(monkeypatch, (7, 5))
    model, out, weights = gpt2_lora(dropout=0.0), io.StringIO(), Weights()
    run = lora_nb.train(model, token_items(), loss_fn=lm_loss(at_call=5), seed=0,
                        callbacks=[ConsoleReporter(file=out, interval=0), weights], **OPTIONS)
    assert run.state == "finished", run.message  # an overflow is not a failure
    lines = out.getvalue().splitlines()
    assert lines[0].startswith("training adapter `default` on cpu, fp16 autocast + loss scaling (compute "
                               "capability 7.5 has no native bf16)")
    skipped = [r["step"] for r in run.history if r["grad_norm"] is None]
    assert 5 in skipped and run.history[-1]["skipped_steps"] == len(skipped)
    assert all(torch.equal(weights.after[4][n], weights.after[5][n]) for n in weights.after[4])  # not applied
    scale = {r["step"]: r["loss_scale"] for r in run.history}
    assert scale[5] == scale[4] / 2  # the scaler backed off
    assert f"· {len(skipped)} skipped (fp16 overflow)" in lines[-2]  # the last progress line
    assert run.history[-1]["loss"] < run.history[0]["loss"]
    assert all(p.dtype == torch.float32 for p in lora_params(model).values())


def test_the_nan_policy_still_holds_for_real_divergence_and_fp32_fails_on_an_overflow(monkeypatch):
    play_gpu(monkeypatch, (7, 5))
    model = gpt2_lora(dropout=0.0)
    diverged = lora_nb.train(model, token_items(), loss_fn=lm_loss(nan_at=4), **OPTIONS)
    assert diverged.state == "failed" and diverged.step == 2 and diverged.message.startswith("loss became nan")
    assert "at step 4" in diverged.message  # step 3's update was undone: its record went with it
    fp32 = lora_nb.train(gpt2_lora(dropout=0.0), token_items(), loss_fn=lm_loss(at_call=4), precision="fp32",
                         **OPTIONS)
    assert fp32.state == "failed" and fp32.step == 3 and "gradient norm became" in fp32.message
    assert "skipped_steps" not in fp32.history[-1] and fp32.where == "cpu, fp32 (asked)"


def test_a_checkpoint_keeps_the_scaler_and_a_resumed_fp16_run_repeats_the_uninterrupted_one(monkeypatch, tmp_path):
    play_gpu(monkeypatch, (7, 5))
    full = lora_nb.train(gpt2_lora(), token_items(), loss_fn=lm_loss(at_call=3), **OPTIONS)
    first = lora_nb.train(gpt2_lora(), token_items(), loss_fn=lm_loss(at_call=3), save_every=3,
                          save_dir=tmp_path, callbacks=[StopAt(6)], **OPTIONS)
    _, state, _, _, _ = checkpoint.read_checkpoint(tmp_path)
    assert state["step"] == 6 and state["scaler"]["scale"] == first.history[-1]["loss_scale"] < 65536.0
    resumed = lora_nb.train(gpt2_lora(), token_items(), loss_fn=lm_loss(), resume=tmp_path, **OPTIONS)
    assert resumed.state == "finished" and resumed.step == 12
    assert resumed.history[6]["loss_scale"] == full.history[6]["loss_scale"]  # not a fresh 65536
    assert resumed.history[-1]["skipped_steps"] == full.history[-1]["skipped_steps"] >= 1
    assert max(abs(a["loss"] - b["loss"]) for a, b in zip(resumed.history, full.history)) <= 1e-6


def test_precision_is_an_option_of_train_with_its_choices_on_tab(ip):
    from IPython.core.completer import provisionalcompleter

    text = "%lora train model --precision "
    with provisionalcompleter():
        offered = [c.text for c in ip.Completer.completions(text, len(text))]
    assert sorted(offered) == ["auto", "bf16", "fp16", "fp32"]
    ip.user_ns.update(model=gpt2_lora(), items=token_items())
    run = ip.run_line_magic("lora", "train model --data items --steps 2 --precision FP16 --device cpu --ui text")
    assert run.state == "finished" and run.where.startswith("cpu, fp16 autocast + loss scaling (asked)")
    assert "loss_scale" in run.history[-1]
