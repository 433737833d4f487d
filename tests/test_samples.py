"""Samples while training: the adapter's greedy answers to a few prompts, step by step, timed apart from the steps."""

from __future__ import annotations

import time

import pytest
import torch
from helpers import mlp_with_lora, tiny_gpt2, token_items, word_tokenizer

import lora_nb
from lora_nb.core.training.longrun import samples
from lora_nb.errors import OptionError

TEXTS = ["the cat sat on the mat"] * 16


def gpt2_for_words():
    torch.manual_seed(0)
    model = tiny_gpt2()
    with torch.no_grad():  # pretrained-like embedding scale, so a few steps change what greedy decoding says
        model.transformer.wte.weight.mul_(10)
    lora_nb.attach(model, r=8)
    return model


class ModeWatcher(lora_nb.Callback):
    def __init__(self, model):
        self.model, self.modes = model, []

    def on_step_end(self, run, record):
        self.modes.append(self.model.training)


def test_samples_show_the_adapter_learning_and_their_time_is_kept_apart(monkeypatch):
    real, pause = samples.generate_text, 0.3

    def slow_generate(*args, **kwargs):  # generation that takes a known time
        time.sleep(pause)
        return real(*args, **kwargs)

    monkeypatch.setattr(samples, "generate_text", slow_generate)
    model, tok = gpt2_for_words(), word_tokenizer()
    watcher = ModeWatcher(model)
    run = lora_nb.train(model, TEXTS, tokenizer=tok, steps=10, batch_size=8, lr=3e-2, sample_prompts=["the cat",
                        "a dog"], sample_every=5, sample_tokens=4, callbacks=[watcher], background=False)
    assert run.state == "finished"
    assert [(s["step"], s["prompt"]) for s in run.samples] == [(step, p) for step in (0, 5, 10)
                                                              for p in ("the cat", "a dog")]
    first, last = run.samples[0]["text"], run.samples[-2]["text"]
    assert first != last and "on the mat" in last  # after 10 steps it continues "the cat" as trained
    assert run.sample_seconds >= 6 * pause
    assert sum(r["seconds"] for r in run.history) + run.sample_seconds <= run.seconds  # no step counts them
    assert all(watcher.modes) and not model.training  # training mode during the run; eval mode after, as before


def test_chat_template_wraps_the_prompt_when_the_tokenizer_has_one():
    tok = word_tokenizer()
    plain = samples.prompt_inputs(tok, "the cat", torch.device("cpu"))["input_ids"].tolist()
    tok.chat_template = ("{% for m in messages %}a {{ m['content'] }}{% endfor %}"
                         "{% if add_generation_prompt %} sat{% endif %}")
    wrapped = samples.prompt_inputs(tok, "the cat", torch.device("cpu"))["input_ids"].tolist()
    vocab = tok.get_vocab()
    assert plain == [[vocab["the"], vocab["cat"]]]
    assert wrapped == [[vocab["a"], vocab["the"], vocab["cat"], vocab["sat"]]]


def test_sample_prompts_from_the_magic_and_what_cannot_sample(ip):
    ip.user_ns.update(model=gpt2_for_words(), texts=TEXTS, tok=word_tokenizer(), prompts=["the big"])
    run = ip.run_line_magic("lora", "train model --data texts --tokenizer tok --steps 2 --batch-size 8 "
                                    "--sample-prompts prompts --sample-tokens 3")
    assert [s["step"] for s in run.samples] == [0, 1, 2] and all(s["prompt"] == "the big" for s in run.samples)
    with pytest.raises(OptionError, match="need a tokenizer"):
        lora_nb.train(ip.user_ns["model"], token_items(), sample_prompts=["x"], background=False)
    with pytest.raises(OptionError, match="has no generate"):
        lora_nb.train(mlp_with_lora(), TEXTS, tokenizer=word_tokenizer(), sample_prompts=["x"], background=False)
