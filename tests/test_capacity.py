"""The capacity gauge: trainable LoRA parameters against the supervised (loss-bearing) tokens a run trained on.

The count is checked against the labels themselves; the progress line and ``%lora advise`` show the ratio, and
advise draws it against the rule-of-thumb line.
"""

from __future__ import annotations

import io

from helpers import chat_tokenizer, tiny_llama

import lora_nb
from lora_nb.core.training.capacity import RULE, Capacity
from lora_nb.core.training.data.batches import make_batches
from lora_nb.viz.capacity import advice_capacity_spec

TALK = [[{"role": "user", "content": f"w{i} w{i + 1}"}, {"role": "assistant", "content": f"w{i + 2} w{i + 3} w{i}"}]
        for i in range(1, 40, 3)]


def test_a_run_counts_exactly_the_tokens_whose_labels_carry_the_loss():
    tok = chat_tokenizer()
    model = tiny_llama()
    lora_nb.attach(model, r=2)
    batches = make_batches(TALK, tokenizer=tok, batch_size=4, seed=0)
    per_epoch = sum(int((b["labels"] != -100).sum()) for b in batches.loader)
    assert per_epoch == len(TALK) * 4  # three answer words and <|im_end|> per chat
    out = io.StringIO()
    run = lora_nb.train(model, TALK, tokenizer=tok, steps=8, batch_size=4, background=False,
                        callbacks=[lora_nb.ConsoleReporter(file=out, interval=0)])
    seen = [r["supervised_tokens"] for r in run.history]
    assert seen[3] == per_epoch and seen[-1] == 2 * per_epoch  # 4 batches an epoch; the count goes on
    params = sum(p.numel() for n, p in model.named_parameters() if "lora_" in n)
    assert run.trainable == params
    last = out.getvalue().splitlines()[-2]
    assert f"{params / 1000:.3g}k params / {2 * per_epoch} supervised tokens" in last
    assert run.summary()["supervised_tokens"] == 2 * per_epoch


def test_advise_sets_the_adapter_against_the_rule_of_thumb(ip):
    tok = chat_tokenizer()
    model = tiny_llama()
    lora_nb.attach(model, r=2, targets="q_proj")
    lora_nb.train(model, TALK, tokenizer=tok, steps=3, batch_size=4, lr=1e-2, background=False)
    ip.user_ns["model"] = model
    report = ip.run_line_magic("lora", "advise model --ui text")
    advice = model_advice(model)
    tokens = 3 * 4 * 4  # 3 steps of 4 chats with 4 answer tokens each
    assert advice.tokens == tokens
    assert Capacity(advice.params("now"), tokens).ratio == advice.params("now") / tokens
    assert f"= {advice.params('now') / tokens:.3g} per token" in report.text and "Schulman et al. 2025" in report.text
    rule, now, pattern = advice_capacity_spec(advice)["data"]
    assert rule["y"][0] / rule["x"][0] == RULE and (now["x"], now["y"]) == ([tokens], [advice.params("now")])
    assert pattern["y"] == [advice.params("pattern")]


def model_advice(model):
    from lora_nb.core import registry

    return registry.find(model).advice


def test_the_gauge_reads_below_the_rule_when_parameters_are_fewer_than_tokens():
    assert Capacity(500, 1000).below_rule and "may run out of capacity" in Capacity(500, 1000).line()
    assert not Capacity(5000, 1000).below_rule and Capacity(10, 0).ratio is None
