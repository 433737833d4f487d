"""Early stopping: a run that stops improving on its eval data ends by itself, and can put its best adapter back."""

from __future__ import annotations

import pytest
import torch
from helpers import classification_pairs, lora_params, mlp_with_lora

import lora_nb
from lora_nb.core.training.data.batches import cross_entropy
from lora_nb.errors import OptionError


class Snapshots(lora_nb.Callback):
    """The adapter's weights at every evaluation, and what ``run.best`` was after the first step."""

    def __init__(self, model):
        self.model, self.at_eval, self.best_after_step_1 = model, {}, "unset"

    def on_step_end(self, run, record):
        if record["step"] == 1:
            self.best_after_step_1 = run.best

    def on_evaluate(self, run, record):
        self.at_eval[record["step"]] = lora_params(self.model)


def eval_loss(model, pairs):
    with torch.no_grad():
        return cross_entropy(model(pairs[0]), pairs[1]).item()


def test_eval_loss_that_stops_improving_ends_the_run_and_the_best_adapter_comes_back():
    model = mlp_with_lora()
    train_pairs = classification_pairs(64)
    x, y = classification_pairs(32)
    misleading = (x, (y + 1) % 5)  # held-out labels the training data contradicts: eval loss rises
    seen = Snapshots(model)
    run = lora_nb.train(model, train_pairs, eval_data=misleading, steps=60, batch_size=16, lr=3e-2, eval_every=3,
                        patience=3, restore_best=True, callbacks=[seen], background=False)
    assert seen.best_after_step_1 is None  # no evaluation yet
    assert run.state == "stopped" and run.step < 60
    evals = {e["step"]: e["eval_loss"] for e in run.evals}
    best_step = min(evals, key=evals.get)
    assert run.best == {"step": best_step, "eval_loss": evals[best_step]}
    assert run.step == max(evals) and len([s for s in evals if s > best_step]) == 3  # patience: 3 without a gain
    assert f"stopped early at step {run.step}/60" in run.message and f"at step {best_step}" in run.message
    assert f"restored the best adapter (step {best_step}" in run.message
    assert all(torch.equal(p, seen.at_eval[best_step][n]) for n, p in lora_params(model).items())
    assert eval_loss(model, misleading) == pytest.approx(evals[best_step], rel=1e-5)


def test_min_delta_counts_only_real_gains_and_without_restore_the_last_weights_stay(tmp_path):
    model = mlp_with_lora()
    pairs = classification_pairs(64)
    seen = Snapshots(model)
    run = lora_nb.train(model, pairs, eval_data=pairs, steps=40, batch_size=16, lr=1e-2, eval_every=2, patience=2,
                        min_delta=10.0, save_every=100, save_dir=tmp_path, callbacks=[seen],
                        background=False)  # no gain is ever > 10
    assert run.state == "stopped" and run.step == 6 and run.best["step"] == 2
    assert [p.name for p in tmp_path.iterdir()] == ["checkpoint-000006"]  # the stop wrote a checkpoint
    assert [e["step"] for e in run.evals] == [2, 4, 6]
    assert all(torch.equal(p, seen.at_eval[6][n]) for n, p in lora_params(model).items())


def test_runs_with_eval_data_track_the_best_and_early_stopping_needs_eval_data():
    model = mlp_with_lora()
    pairs = classification_pairs(64)
    run = lora_nb.train(model, pairs, eval_data=pairs, steps=8, batch_size=16, lr=1e-2, eval_every=2,
                        background=False)
    assert run.state == "finished" and run.best["eval_loss"] == min(e["eval_loss"] for e in run.evals)
    with pytest.raises(OptionError, match="patience.*needs evaluation data"):
        lora_nb.train(model, pairs, steps=8, patience=2, background=False)
    assert lora_nb.train(model, pairs, steps=2, background=False).best is None
