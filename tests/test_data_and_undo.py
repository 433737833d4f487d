"""Messages that name the bad item, a history that matches the weights a NaN restored, and eval data of another
form than the training data refused before anything runs."""

from __future__ import annotations

import pytest
import torch
from helpers import byte_tokenizer, classification_pairs, lora_params, mlp_with_lora, tiny_gpt2, tiny_mlp
from IPython.core.error import UsageError

import lora_nb
from lora_nb.core.training.callbacks import Callback
from lora_nb.core.training.data.batches import make_batches
from lora_nb.errors import DataError


def test_a_text_dataset_names_the_item_that_is_not_a_str():
    with pytest.raises(DataError, match=r"^item 3 of the text dataset is an int, not a str "):
        make_batches(["a", "b", "c", 4, "e"], tokenizer=byte_tokenizer())
    with pytest.raises(DataError, match=r"^item 1 of the text dataset is a NoneType, not a str "):
        make_batches(["a", None], tokenizer=byte_tokenizer())


class Weights(Callback):
    """The adapter's parameters after every completed step (index 0: before training)."""

    def __init__(self, model):
        self.model, self.states = model, [lora_params(model)]

    def on_step_end(self, run, record):
        self.states.append(lora_params(self.model))


def test_after_a_nan_the_history_matches_the_restored_weights():
    model = mlp_with_lora()
    weights, calls = Weights(model), {"n": 0}

    def loss_fn(model, batch):
        calls["n"] += model.training  # training steps only (evaluations call it too)
        loss = torch.nn.functional.cross_entropy(model(batch[0]), batch[1])
        return loss * float("nan") if model.training and calls["n"] == 5 else loss

    x, y = classification_pairs(64)
    run = lora_nb.train(model, (x, y), (x[:16], y[:16]), loss_fn=loss_fn, steps=10, lr=1e-2, eval_every=1,
                        callbacks=[weights])
    assert run.state == "failed" and "at step 5" in run.message  # the step that diverged, as it was numbered
    assert run.step == 3 and [r["step"] for r in run.history] == [1, 2, 3]  # step 4's update was undone
    assert all(torch.equal(v, weights.states[3][k]) for k, v in lora_params(model).items())
    assert [r["step"] for r in run.evals] == [1, 2, 3]


def test_lr_sweep_refuses_eval_texts_beside_training_pairs_before_any_run(ip):
    ip.user_ns.update(m=tiny_mlp(), pairs=classification_pairs(), texts=["hello there", "good day"],
                      tok=byte_tokenizer())
    with pytest.raises(UsageError, match=r"^the eval data is texts but the training data is \(input, target\) pairs"):
        ip.run_line_magic("lora", "lr-sweep m --data pairs --eval texts --tokenizer tok --lrs 1e-3,1e-2 --steps 2 "
                                  "--ui text")
    with pytest.raises(DataError, match=r"^the eval data is \(input, target\) pairs but the training data is texts"):
        lora_nb.lr_sweep(tiny_gpt2(), ["a b c", "d e f"], classification_pairs(4), tokenizer=byte_tokenizer(),
                         lrs="1e-3", steps=1, callbacks=[])


def test_eval_data_of_a_compatible_form_still_sweeps():
    texts = ["the cat sat on the mat", "a dog ran in the park", "birds sing at dawn", "rain falls softly"] * 2
    chats = [{"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]}] * 2
    result = lora_nb.lr_sweep(tiny_gpt2(), texts, chats, tokenizer=byte_tokenizer(), lrs="1e-3", steps=1,
                              batch_size=4, targets="c_attn", callbacks=[])
    assert len(result.points) == 1 and result.points[0].eval_loss is not None
