"""Token batches run in pieces of similar length on the CPU: the whole batch's loss and gradient, fewer positions."""

from __future__ import annotations

import itertools
import random

import pytest
import torch
from helpers import chat_tokenizer, tiny_gpt2, tiny_llama
from test_head_loss import adapted, loss_and_grads
from test_length_grouping import conversations

import lora_nb
from lora_nb.core.training.data.batches import make_batches
from lora_nb.core.training.data.pieces import BLOCKS, cuts, pieces, splittable


def cost(lengths, plan, overhead):
    return sum(len(p) * max(lengths[i] for i in p) + overhead for p in plan)


def brute_force(lengths, overhead):
    """The cheapest cover of the rows sorted longest first by consecutive runs, over every way to cut them."""
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    best = None
    for mask in itertools.product((0, 1), repeat=len(order) - 1):
        plan, run = [], [order[0]]
        for cut, row in zip(mask, order[1:]):
            if cut:
                plan.append(run)
                run = []
            run.append(row)
        plan.append(run)
        best = min(best or cost(lengths, plan, overhead), cost(lengths, plan, overhead))
    return best


@pytest.mark.parametrize("seed", range(6))
def test_the_cuts_are_the_cheapest_and_cover_every_row_once(seed):
    rng = random.Random(seed)
    lengths = [rng.choice([rng.randint(5, 30), rng.randint(100, 600)]) for _ in range(rng.randint(2, 10))]
    for overhead in (0, 16, 64, 400, 10**6):
        plan = cuts(lengths, overhead)
        assert sorted(i for p in plan for i in p) == list(range(len(lengths)))
        assert cost(lengths, plan, overhead) == brute_force(lengths, overhead)
    assert len(cuts(lengths, 10**6)) == 1 and len(cuts(lengths, 0)) == len(set(lengths))


def test_a_batch_of_many_rows_is_cut_in_blocks_and_stays_cheap_to_plan():
    rng = random.Random(0)
    lengths = [rng.randint(5, 500) for _ in range(1000)]
    plan = cuts(lengths, 64)
    assert sorted(i for p in plan for i in p) == list(range(1000))
    assert all(len(p) % -(-1000 // BLOCKS) == 0 for p in plan[:-1])  # whole blocks
    padded = sum(len(p) * max(lengths[i] for i in p) for p in plan)
    assert padded < 1.1 * sum(lengths) < 0.6 * 1000 * max(lengths)


def ragged_batch(lengths, answer=3, width=None, seed=0):
    """Right-padded rows of the given lengths whose last ``answer`` tokens carry loss (0: none)."""
    g = torch.Generator().manual_seed(seed)
    width = width or max(lengths)
    ids = torch.zeros((len(lengths), width), dtype=torch.long)
    mask, labels = torch.zeros_like(ids), torch.full_like(ids, -100)
    for r, n in enumerate(lengths):
        ids[r, :n] = torch.randint(1, 100, (n,), generator=g)
        mask[r, :n] = 1
        if answer:
            labels[r, n - answer:n] = ids[r, n - answer:n]
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}


def piecewise(model, parts):
    return sum(weight * model(**part).loss for part, weight in parts)


@pytest.mark.parametrize("build", [tiny_llama, tiny_gpt2])
def test_the_pieces_give_the_whole_batchs_loss_and_gradients(build):
    model = adapted(build).eval()  # no dropout: its masks depend on the shapes (per piece, a different draw)
    batch = ragged_batch([60, 7, 33, 8, 59, 12, 30, 9])
    parts = pieces(batch, overhead=16)
    assert len(parts) == 3 and [p["input_ids"].shape for p, _ in parts] == [(2, 60), (2, 33), (4, 12)]
    assert abs(sum(w for _, w in parts) - 1) < 1e-12
    whole, whole_grads = loss_and_grads(model, lambda: model(**batch).loss)
    split, grads = loss_and_grads(model, lambda: piecewise(model, parts))
    assert torch.allclose(split, whole, atol=1e-6, rtol=0)
    assert grads.keys() == whole_grads.keys() and len(grads) > 0
    for name, g in grads.items():
        assert torch.allclose(g, whole_grads[name], atol=1e-6, rtol=1e-5), name
    # a piece's weight is its share of the loss-bearing positions, not of the rows: unequal answers
    batch = ragged_batch([60, 7, 33, 8], answer=0)
    for r, n in enumerate([5, 1, 2, 1]):
        batch["labels"][r, 6 - n:6] = batch["input_ids"][r, 6 - n:6]
    parts = pieces(batch, overhead=0)
    assert sorted(w for _, w in parts) == pytest.approx(sorted([5 / 9, 1 / 9, 2 / 9, 1 / 9]))
    whole, _ = loss_and_grads(model, lambda: model(**batch).loss)
    assert torch.allclose(piecewise(model, parts), whole, atol=1e-6, rtol=0)


def test_rows_without_loss_are_left_out_and_odd_batches_run_whole():
    batch = ragged_batch([40, 38, 5, 6])
    batch["labels"][2:] = -100  # two short rows carry no loss: the long ones run alone, as one piece
    (part, weight), = pieces(batch, overhead=64)
    assert part["input_ids"].shape == (2, 40) and weight == 1.0
    assert pieces(ragged_batch([40, 38, 5, 6], answer=0), overhead=0)[0][1] == 1.0  # nothing to learn: as it is
    left = ragged_batch([40, 5])
    left["attention_mask"] = left["attention_mask"].flip(1)  # left padding: not split
    (part, _), = pieces(left, overhead=0)
    assert part["input_ids"].shape == (2, 40)
    assert pieces(ragged_batch([40, 39, 38]), overhead=64)[0][0]["input_ids"].shape == (3, 40)  # one is cheapest
    assert not splittable({**ragged_batch([4, 3]), "token_type_ids": torch.zeros(2, 4)})
    assert not splittable(ragged_batch([4]))  # one row: nothing to split


def run(data, **options):
    torch.manual_seed(0)
    model = tiny_llama()
    lora_nb.attach(model, r=4, dropout=0.0)
    return lora_nb.train(model, data, tokenizer=chat_tokenizer(), steps=12, batch_size=8, lr=1e-2,
                         background=False, **options)


def test_a_split_run_learns_what_whole_batches_learn_on_fewer_positions():
    data = conversations(48)
    split, whole = run(data), run(data, split_by_length=False)
    assert split.settings.split_by_length and not whole.settings.split_by_length
    for a, b in zip(split.history, whole.history):
        assert abs(a["loss"] - b["loss"]) <= 1e-5 * abs(b["loss"])
    real = lambda r: sum(x["tokens_per_s"] * x["seconds"] for x in r.history)
    positions = lambda r: sum(x["tokens_per_s"] * x["seconds"] / (1 - x["padding"]) for x in r.history)
    assert abs(real(split) - real(whole)) < 1e-6 * real(whole)  # these chats all carry loss: every row runs
    drawn = make_batches(data, tokenizer=chat_tokenizer(), batch_size=8, seed=0).loader
    assert abs(positions(whole) - 2 * sum(b["input_ids"].numel() for b in drawn)) < 1e-6 * positions(whole)
    assert positions(split) < 0.75 * positions(whole)
    assert max(x["padding"] for x in split.history) < min(x["padding"] for x in whole.history)


def test_only_lora_nbs_own_token_batches_on_a_known_causal_lm_are_split(monkeypatch):
    from lora_nb.core.training import loop

    seen = []
    monkeypatch.setattr(loop, "pieces", lambda batch, overhead: seen.append(overhead) or [(batch, 1.0)])
    data = conversations(16)
    run(data)
    assert seen and set(seen) == {32 * torch.get_num_threads()}
    seen.clear()
    run(data, split_by_length=False)
    items = [next(iter(make_batches(data, tokenizer=chat_tokenizer(), batch_size=1, shuffle=False).loader))]
    items = [{k: v[0] for k, v in items[0].items()}] * 4
    torch.manual_seed(0)
    model = tiny_llama()
    lora_nb.attach(model, r=4)
    lora_nb.train(model, items, steps=2, batch_size=2, background=False)  # the user's own dict rows
    lora_nb.train(model, data, tokenizer=chat_tokenizer(), steps=2, batch_size=4, background=False,
                  loss_fn=lambda model, batch: model(**batch).loss)  # the user's loss
    assert seen == []


def test_the_flags_on_the_magic(ip):
    torch.manual_seed(0)
    model = tiny_llama()
    lora_nb.attach(model, r=4)
    ip.user_ns.update(model=model, chats=conversations(8), tok=chat_tokenizer())
    line = "train model --data chats --tokenizer tok --steps 1 --batch-size 4 --wait --ui text"
    assert ip.run_line_magic("lora", line).settings.split_by_length
    run_ = ip.run_line_magic("lora", line + " --no-split-by-length")
    assert not run_.settings.split_by_length and run_.state == "finished"
