"""Every way a run or a model operation can end keeps its result: a failing view is reported once and detached,
a multi-process run whose weights cannot come back is marked done (failed), and nothing waits forever."""

from __future__ import annotations

import pytest
import torch
from helpers import classification_pairs, lora_params, mlp_with_lora, tiny_mlp

import lora_nb
from lora_nb.core import registry
from lora_nb.core.training.callbacks import Callback
from lora_nb.errors import LoraNBWarning


class Broken(Callback):
    """A view that crashes on a chosen hook (and counts how often it was called)."""

    def __init__(self, hook: str, at_step: int = 0):
        self.hook, self.at_step, self.calls = hook, at_step, 0

    def on_step_end(self, run, record):
        self.calls += 1
        if self.hook == "on_step_end" and record["step"] == self.at_step:
            raise RuntimeError("view crashed")

    def on_train_end(self, run):
        if self.hook == "on_train_end":
            raise RuntimeError("view crashed at the end")


def test_a_view_failing_mid_run_is_detached_and_training_goes_on():
    model, view = mlp_with_lora(), Broken("on_step_end", at_step=2)
    with pytest.warns(LoraNBWarning, match=r"Broken.on_step_end raised RuntimeError: view crashed") as caught:
        run = lora_nb.train(model, classification_pairs(), steps=10, callbacks=[view])
    assert len(caught) == 1 and "Traceback" in str(caught[0].message)
    assert run.state == "finished" and run.step == 10 and run.error is None
    assert view.calls == 2 and view not in run.callbacks


def test_a_view_failing_at_the_end_leaves_a_finished_run_finished():
    model = mlp_with_lora()
    with pytest.warns(LoraNBWarning, match="on_train_end raised RuntimeError"):
        run = lora_nb.train(model, classification_pairs(), steps=3, callbacks=[Broken("on_train_end")])
    assert run.state == "finished" and run.done and run.message.startswith("3/3 steps")


class BrokenListener:
    def __init__(self):
        self.calls = 0

    def on_model_change(self, session, what):
        self.calls += 1
        raise ValueError(f"cannot redraw after {what}")


def test_a_failing_listener_neither_undoes_nor_hides_a_model_change():
    model = tiny_mlp()
    lora_nb.attach(model, r=4, name="one")
    listener = BrokenListener()
    registry.find(model).listeners.add(listener)
    with pytest.warns(LoraNBWarning, match="BrokenListener.on_model_change raised ValueError: cannot redraw after "
                                            "attach"):
        lora_nb.attach(model, r=2, name="two")  # the change stands; the listener is reported once and detached
    assert registry.find(model).adapters == ["one", "two"] and registry.find(model).active == "two"
    assert listener not in registry.find(model).listeners
    lora_nb.detach(model)  # no second report: the listener is gone
    assert listener.calls == 1 and registry.find(model) is None


@pytest.mark.timeout(120)
def test_a_process_run_whose_weights_cannot_come_back_is_marked_done(monkeypatch):
    from lora_nb.core.training.processes import worker

    def corrupt_result(job, session, run):  # rank 0 leaves garbage where the adapter's weights belong
        from pathlib import Path

        out = Path(job.out)
        out.mkdir(parents=True, exist_ok=True)
        (out / worker.WEIGHTS).write_bytes(b"\x00not a safetensors file")

    monkeypatch.setattr(worker, "write_result", corrupt_result)  # the forked workers inherit the patch
    model = mlp_with_lora()
    before = lora_params(model)
    run = lora_nb.train(model, classification_pairs(), steps=4, batch_size=8, processes=2, device="cpu")
    assert run.wait(timeout=60).done and run.state == "failed"
    assert "could not be loaded back" in run.message and "as it was before the run" in run.message
    assert all(torch.equal(p, before[n]) for n, p in model.named_parameters() if n in before)
    # the model is usable again: the next run starts and finishes
    again = lora_nb.train(model, classification_pairs(), steps=2)
    assert again.state == "finished"
