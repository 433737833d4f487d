"""Multi-process training from the notebook: `train(..., processes=2)` forks two CPU workers (gloo) from the
kernel's own model, streams rank 0's records to the run live, and brings the trained adapter back."""

from __future__ import annotations

import os
import threading
import time

import psutil
import pytest
import torch
from helpers import classification_pairs, forks_cpu_workers, mlp_with_lora, wait_until

import lora_nb
from lora_nb.core.training.callbacks import Callback
from lora_nb.errors import OptionError, TrainingError

pytestmark = pytest.mark.timeout(120)


def adapted_mlp():
    torch.manual_seed(0)
    return mlp_with_lora()


def pairs(n=128):
    return classification_pairs(n)


def snapshot(model, lora: bool):
    return {n: p.detach().clone() for n, p in model.named_parameters() if ("lora_" in n) == lora}


def no_workers_left():
    deadline = time.time() + 5
    while psutil.Process().children(recursive=True) and time.time() < deadline:
        time.sleep(0.1)
    return psutil.Process().children(recursive=True) == []


class Recorder(Callback):
    def __init__(self):
        self.live = []  # (step, whether the run had ended when the record arrived)
        self.ended = None

    def on_step_end(self, run, record):
        self.live.append((record["step"], run.done))

    def on_train_end(self, run):
        self.ended = run.state


@forks_cpu_workers
def test_two_processes_train_the_notebook_model_like_one_process_with_twice_the_batch():
    model, twin = adapted_mlp(), adapted_mlp()
    base, adapter = snapshot(model, lora=False), snapshot(model, lora=True)
    seen = Recorder()
    run = lora_nb.train(model, pairs(), steps=40, lr=3e-2, batch_size=8, processes=2, device="cpu",
                        callbacks=[seen])
    assert run.state == "finished", run.message
    assert run.where == "2 processes × CPU (gloo)" and run.step == 40
    # the records reached the kernel's run while the workers were still training
    assert [s for s, _ in seen.live] == list(range(1, 41)) and not any(done for _, done in seen.live)
    assert seen.ended == "finished" and all(r["processes"] == 2 for r in run.history)
    losses = [r["loss"] for r in run.history]
    assert sum(losses[-5:]) < 0.8 * sum(losses[:5])
    # the adapter came back into the user's own object; the base did not move by a bit
    assert all(torch.equal(p, base[n]) for n, p in model.named_parameters() if n in base)
    assert any(not torch.equal(p, adapter[n]) for n, p in model.named_parameters() if n in adapter)
    # DDP over 2 shards of 8 = one process over the same 16 samples per step (same order, averaged gradients)
    single = lora_nb.train(twin, pairs(), steps=40, lr=3e-2, batch_size=16, device="cpu")
    assert [round(r["loss"], 4) for r in run.history] == [round(r["loss"], 4) for r in single.history]
    ours, theirs = dict(model.named_parameters()), dict(twin.named_parameters())
    assert max((ours[n] - theirs[n]).abs().max().item() for n in adapter) < 1e-5
    session = lora_nb.core.registry.require(model)
    assert session.records["default"]["runs"][-1]["processes"] == 2
    assert no_workers_left() and not session.training


@forks_cpu_workers
def test_stop_and_pause_reach_every_process_and_leave_nothing_behind():
    model = adapted_mlp()
    adapter = snapshot(model, lora=True)
    run = lora_nb.train(model, pairs(), steps=100_000, lr=1e-2, batch_size=8, processes=2, device="cpu",
                        background=True)
    wait_until(lambda: run.step >= 3, 60, "3 steps over 2 processes")
    run.pause()
    time.sleep(0.5)
    held = run.step
    time.sleep(0.7)
    assert run.state == "paused" and run.step == held  # every process waits at the step boundary
    run.resume()
    wait_until(lambda: run.step >= held + 3, 60, "3 steps after resume")
    run.stop()
    run.wait(60)
    assert run.state == "stopped" and held + 3 <= run.step < 100_000, run.message
    assert "stopped at step" in run.message
    assert any(not torch.equal(p, adapter[n]) for n, p in model.named_parameters() if n in adapter)
    assert not any(t.name.startswith("lora_nb-processes") and t.is_alive() for t in threading.enumerate())
    assert no_workers_left()


@forks_cpu_workers
def test_an_exception_in_a_worker_ends_the_run_with_one_line_saying_where():
    model = adapted_mlp()
    adapter = snapshot(model, lora=True)
    calls = {"n": 0}

    def loss_fn(model, batch):
        calls["n"] += 1  # counted per process (each has its own copy)
        if os.environ.get("RANK") == "1" and calls["n"] == 3:
            raise ValueError("label out of range in batch 3")
        x, y = batch
        return torch.nn.functional.cross_entropy(model(x), y)

    run = lora_nb.train(model, pairs(), loss_fn=loss_fn, steps=50, batch_size=8, processes=2, device="cpu")
    assert run.state == "failed"
    assert "\n" not in run.message
    assert run.message.startswith("ValueError in loss_fn at step 3: label out of range in batch 3")
    assert "in process 2 of 2" in run.message
    assert "label out of range" in run.traceback and isinstance(run.error, TrainingError)
    # rank 0 was stopped mid-collective: what the kernel holds is still coherent (before, or rank 0's last step)
    changed = any(not torch.equal(p, adapter[n]) for n, p in model.named_parameters() if n in adapter)
    assert changed == ("keeps the steps rank 0 completed" in run.message)
    assert no_workers_left()


@forks_cpu_workers
def test_the_magic_trains_on_two_processes(ip):
    ip.user_ns.update(model=adapted_mlp(), data=pairs())
    run = ip.run_line_magic("lora", "train model --data data --steps 6 --processes 2 --device cpu --wait")
    assert run.state == "finished" and run.step == 6 and run.processes == 2
    assert ip.user_ns["model"] is run.model


def test_refusals_say_why_in_one_line(monkeypatch):
    model = adapted_mlp()
    with pytest.raises(OptionError, match="processes must be ≥ 1"):
        lora_nb.train(model, pairs(), steps=2, processes=0)
    with pytest.raises(OptionError, match="one process per GPU"):
        lora_nb.train(model, pairs(), steps=2, processes=2, device="mps")
    gpus = torch.cuda.device_count()
    if gpus < 2:
        with pytest.raises(OptionError, match=f"2 processes need 2 GPUs; this machine has {gpus}"):
            lora_nb.train(model, pairs(), steps=2, processes=2, device="cuda")
    from accelerate.state import AcceleratorState

    monkeypatch.setitem(AcceleratorState._shared_state, "device", torch.device("cpu"))
    with pytest.raises(TrainingError, match="Accelerator was already created in this kernel"):
        lora_nb.train(model, pairs(), steps=2, processes=2, device="cpu")
    assert lora_nb.core.registry.require(model).run is None  # nothing started
