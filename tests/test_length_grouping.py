"""Token data drawn in batches of similar length (``group_by_length``, opt-in): less padding, every sample once an
epoch, repeatable and resumable."""

from __future__ import annotations

import random

import torch
from helpers import StopAt, chat_tokenizer, tiny_llama
from IPython.core.completer import provisionalcompleter

import lora_nb
from lora_nb.core.training.data.batches import make_batches
from lora_nb.core.training.data.grouping import LengthGroupedBatches, padding_share


def conversations(n=60, seed=0):
    """Chats whose questions run from 1 to 40 words (lengths spread like instruction data)."""
    rng = random.Random(seed)
    words = lambda k: " ".join(f"w{rng.randrange(94)}" for _ in range(k))
    return [[{"role": "user", "content": words(rng.choice([1, 2, 4, 8, 16, 40]))},
             {"role": "assistant", "content": words(rng.randint(1, 4))}] for _ in range(n)]


def epoch(sampler):
    return [list(b) for b in sampler]


def test_grouping_is_deterministic_per_seed_draws_every_sample_once_and_pads_less_than_shuffling():
    lengths = [random.Random(i).randint(5, 400) for i in range(1000)]
    grouped = LengthGroupedBatches(lengths, 8, torch.Generator().manual_seed(3), mega=10)
    first, second = epoch(grouped), epoch(grouped)
    assert first == epoch(LengthGroupedBatches(lengths, 8, torch.Generator().manual_seed(3), mega=10))
    assert first != epoch(LengthGroupedBatches(lengths, 8, torch.Generator().manual_seed(4), mega=10))
    assert first != second  # a new order every epoch
    for batches in (first, second):
        assert sorted(i for b in batches for i in b) == list(range(1000)) and len(batches) == len(grouped) == 125
    perm = torch.randperm(1000, generator=torch.Generator().manual_seed(3)).tolist()
    shuffled = [perm[i:i + 8] for i in range(0, 1000, 8)]
    assert padding_share(lengths, first) < 0.1 < 0.4 < padding_share(lengths, shuffled)
    # the batch order is shuffled too: the widest batches are not all at the start
    widths = [max(lengths[i] for i in b) for b in first]
    assert widths != sorted(widths, reverse=True)


def test_grouped_chat_data_pads_less_and_the_history_reports_padding_and_real_tokens():
    tok, data = chat_tokenizer(), conversations()
    grouped = make_batches(data, tokenizer=tok, batch_size=4, seed=0, group_by_length=True)
    plain = make_batches(data, tokenizer=tok, batch_size=4, seed=0)
    assert "grouped by length" in grouped.description and grouped.per_epoch == plain.per_epoch == 15

    def share(batches):
        masks = [b["attention_mask"] for b in batches.loader]
        return 1 - sum(int(m.sum()) for m in masks) / sum(m.numel() for m in masks)

    assert share(grouped) < 0.5 * share(plain)
    torch.manual_seed(0)
    model = tiny_llama()
    lora_nb.attach(model, r=4)
    run = lora_nb.train(model, data, tokenizer=tok, steps=15, batch_size=4, background=False, group_by_length=True,
                        split_by_length=False)  # whole batches: the positions are the drawn batches'
    assert run.settings.group_by_length and "grouped by length" in run.data
    record = run.history[-1]
    real = sum(int(b["attention_mask"].sum()) for b in grouped.loader)
    positions = sum(b["attention_mask"].numel() for b in grouped.loader)
    assert abs(sum(r["tokens_per_s"] * r["seconds"] for r in run.history) - real) < 1e-6 * real
    width = sum(r["tokens_per_s"] * r["seconds"] / (1 - r["padding"]) for r in run.history)
    assert abs(width - positions) < 1e-6 * positions  # the same batches as make_batches drew, padding counted
    assert 0 <= record["padding"] < 0.5


def losses(run):
    return [r["loss"] for r in run.history]




def fresh_llama():
    torch.manual_seed(0)
    model = tiny_llama()
    lora_nb.attach(model, r=4, dropout=0.1)  # dropout: the run depends on the RNG too
    return model


def test_a_resumed_grouped_run_draws_the_same_batches_and_repeats_the_losses(tmp_path):
    tok, data = chat_tokenizer(), conversations(30)
    options = dict(tokenizer=tok, steps=20, batch_size=4, lr=1e-2, background=False,  # 8 batches an epoch
                   group_by_length=True)
    full = lora_nb.train(fresh_llama(), data, **options)
    first = lora_nb.train(fresh_llama(), data, save_every=5, save_dir=tmp_path, callbacks=[StopAt(11)], **options)
    assert first.step == 11
    resumed = lora_nb.train(fresh_llama(), data, resume=tmp_path / "checkpoint-000010", **options)
    assert resumed.step == 20 and losses(resumed)[:10] == losses(full)[:10]
    assert max(abs(a - b) for a, b in zip(losses(resumed), losses(full))) <= 1e-6
    assert [r["padding"] for r in resumed.history] == [r["padding"] for r in full.history]  # the same batches


def test_group_by_length_on_the_magic_and_in_a_cell(ip):
    ip.user_ns.update(model=fresh_llama(), chats=conversations(8), tok=chat_tokenizer())
    run = ip.run_line_magic("lora", "train model --data chats --tokenizer tok --steps 1 --batch-size 4 --wait --ui text")
    assert not run.settings.group_by_length and "grouped" not in run.data  # off by default
    run = ip.run_line_magic("lora", "train model --data chats --tokenizer tok --steps 1 --batch-size 4 "
                                    "--group-by-length --wait --ui text")
    assert run.settings.group_by_length and "grouped by length" in run.data
    run = ip.run_cell_magic("lora", "train model --data chats --tokenizer tok --wait --ui text",
                            "steps: 1\ngroup-by-length: false")
    assert not run.settings.group_by_length
    run = ip.run_cell_magic("lora", "train model --data chats --tokenizer tok --wait --ui text",
                            "steps: 1\ngroup-by-length: true")
    assert run.settings.group_by_length and "grouped by length" in run.data
    # grouping was on by default once: a line written then still runs, and means what it said (not grouped)
    run = ip.run_line_magic("lora", "train model --data chats --tokenizer tok --steps 1 --batch-size 4 "
                                    "--no-group-by-length --wait --ui text")
    assert not run.settings.group_by_length and "grouped" not in run.data
    with provisionalcompleter():  # Tab offers the flag, not the old spelling
        offered = [c.text for text in ("%lora train model --group", "%lora train model --no-")
                   for c in ip.Completer.completions(text, len(text))]
    assert "--group-by-length" in offered and "--no-split-by-length" in offered
    assert not any(c.startswith("--no-group") for c in offered)
