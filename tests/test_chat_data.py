"""Chat data trains a causal LM on the answers only: conversations and prompt/completion pairs, token by token."""

from __future__ import annotations

from statistics import mean

import pytest
import torch
import torch.nn.functional as F
from helpers import base_params, chat_tokenizer, tiny_llama

import lora_nb
from lora_nb.core.training.data.batches import make_batches
from lora_nb.core.training.data.chat import ChatExamples
from lora_nb.errors import DataError

TALK = [
    [{"role": "user", "content": "w1 w2 w3"}, {"role": "assistant", "content": "w10 w11"},
     {"role": "user", "content": "w4"}, {"role": "assistant", "content": "w12 w13 w14"}],
    [{"role": "system", "content": "w90"}, {"role": "user", "content": "w5"},
     {"role": "assistant", "content": "w20"}],
]


def batch_of(data, tok, **kw):
    return next(iter(make_batches(data, tokenizer=tok, batch_size=len(data), shuffle=False, **kw).loader))


def template_ids(tok, messages):
    out = tok.apply_chat_template(messages, tokenize=True)
    return list(out["input_ids"] if hasattr(out, "keys") else out)


def expected_labels(tok, messages):
    """From the rendered text alone: each assistant turn's tokens (its content and <|im_end|>) count, nothing else."""
    tokens = tok.convert_ids_to_tokens(template_ids(tok, messages))
    labels, role, inside = [], None, False
    for i, t in enumerate(tokens):
        if t == "<|im_start|>":
            role, inside = tokens[i + 1], False
        elif role == "assistant" and tokens[i - 1] == "assistant" and tokens[i - 2] == "<|im_start|>":
            inside = True
        labels.append(tok.convert_tokens_to_ids(t) if inside else -100)
        if t == "<|im_end|>":
            inside = False
    return labels


def test_conversation_labels_are_exactly_the_assistant_turns_and_padding_is_masked():
    tok = chat_tokenizer()
    batch = batch_of(TALK, tok)
    for row, messages in enumerate(TALK):
        ids = template_ids(tok, messages)
        n = len(ids)
        assert batch["input_ids"][row, :n].tolist() == ids  # exactly what apply_chat_template gives
        assert batch["labels"][row, :n].tolist() == expected_labels(tok, messages)
        assert batch["attention_mask"][row, :n].eq(1).all() and batch["attention_mask"][row, n:].eq(0).all()
        assert batch["labels"][row, n:].eq(-100).all() and batch["input_ids"][row, n:].eq(tok.pad_token_id).all()
    kept = [tok.convert_ids_to_tokens([t])[0] for t in batch["labels"][0].tolist() if t != -100]
    assert kept == ["w10", "w11", "<|im_end|>", "w12", "w13", "w14", "<|im_end|>"]
    assert batch["input_ids"].shape == (2, len(template_ids(tok, TALK[0])))


def test_messages_column_dataset_and_prompt_completion_pairs_give_the_same_batches():
    datasets = pytest.importorskip("datasets")
    tok = chat_tokenizer()
    as_list = batch_of(TALK, tok)
    for other in ([{"messages": m} for m in TALK], datasets.Dataset.from_list([{"messages": m} for m in TALK])):
        assert all(torch.equal(as_list[k], batch_of(other, tok)[k]) for k in as_list)
    pairs = [{"prompt": "w1 w2", "completion": "w30 w31"}]
    turns = [[{"role": "user", "content": "w1 w2"}, {"role": "assistant", "content": "w30 w31"}]]
    from_pairs, from_turns = batch_of(pairs, tok), batch_of(turns, tok)
    assert all(torch.equal(from_pairs[k], from_turns[k]) for k in from_pairs)
    hf_pairs = batch_of(datasets.Dataset.from_list(pairs), tok)
    assert torch.equal(hf_pairs["labels"], from_pairs["labels"])


def test_prompt_completion_without_a_chat_template_is_plain_concatenation_with_loss_on_the_completion():
    tok = chat_tokenizer(template=None)
    batch = batch_of([{"prompt": "w1 w2 w3", "completion": "w7 w8"}], tok)
    tokens = tok.convert_ids_to_tokens(batch["input_ids"][0].tolist())
    assert tokens == ["w1", "w2", "w3", "w7", "w8", "<|im_end|>"]  # prompt, completion, end of sequence
    assert batch["labels"][0].tolist()[:3] == [-100] * 3
    assert batch["labels"][0].tolist()[3:] == batch["input_ids"][0].tolist()[3:]


class SlowTokenizer:
    """The same tokenizer seen through a slow tokenizer's interface (no character offsets)."""

    is_fast = False

    def __init__(self, fast):
        self.fast = fast
        self.chat_template, self.pad_token_id, self.eos_token_id = fast.chat_template, fast.pad_token_id, None

    def __call__(self, text, add_special_tokens=True):
        return {"input_ids": self.fast(text, add_special_tokens=add_special_tokens)["input_ids"]}

    def apply_chat_template(self, *args, **kwargs):
        return self.fast.apply_chat_template(*args, **kwargs)


def test_a_slow_tokenizer_gives_the_same_ids_and_labels():
    tok = chat_tokenizer()
    fast = ChatExamples(TALK, tok, max_length=64)
    slow = ChatExamples(TALK, SlowTokenizer(tok), max_length=64)
    assert slow.examples == fast.examples


def test_truncation_drops_conversations_left_without_an_answer_token_and_says_so():
    tok = chat_tokenizer()
    long_prompt = [{"role": "user", "content": " ".join(f"w{i}" for i in range(30))},
                   {"role": "assistant", "content": "w1"}]
    batches = make_batches([long_prompt, *TALK], tokenizer=tok, batch_size=4, shuffle=False, max_length=20)
    assert batches.description == ("2 conversations (chat template; loss on answers only); "
                                   "1 dropped (no answer token within 20 tokens)")
    with pytest.raises(DataError, match="no chat item keeps an answer token within max_length=20"):
        make_batches([long_prompt], tokenizer=tok, max_length=20)


@pytest.mark.parametrize("data, tok, message", [
    (TALK, chat_tokenizer(template=None), "conversations need a tokenizer with a chat template"),
    ([[{"role": "user", "content": "w1"}]], chat_tokenizer(), "conversation 0 has no assistant turn"),
    ([{"messages": TALK[0]}, {"messages": [{"role": "user", "content": "w1"}]}], chat_tokenizer(),
     "conversation 1 has no assistant turn"),
    (TALK, None, "chat data needs its tokenizer"),
    ([{"prompt": "w1", "completion": 3}], chat_tokenizer(), "item 0: prompt and completion must both be texts"),
    ([TALK[0], "w1 w2"], chat_tokenizer(), "item 1 is not chat data like item 0"),
])
def test_unusable_chat_data_is_one_line(data, tok, message):
    with pytest.raises(DataError, match=message) as info:
        make_batches(data, tokenizer=tok)
    assert "\n" not in str(info.value)


def test_training_on_conversations_lowers_the_answer_loss_and_keeps_the_base_exact():
    tok = chat_tokenizer()
    model = tiny_llama()
    lora_nb.attach(model, r=4, targets="q_proj,v_proj")
    base = base_params(model)
    data = [[{"role": "user", "content": f"w{i} w{i + 1}"}, {"role": "assistant", "content": "w50 w51"}]
            for i in range(16)]
    batch = batch_of(data, tok)
    with torch.no_grad():  # the model's loss is the cross-entropy over the answer tokens only
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        manual = F.cross_entropy(logits[:, :-1].flatten(0, 1), batch["labels"][:, 1:].flatten(), ignore_index=-100)
        assert float(model(**batch).loss) == pytest.approx(float(manual), rel=1e-5)
    run = lora_nb.train(model, data, tokenizer=tok, steps=20, lr=5e-2, batch_size=8, background=False)
    losses = [r["loss"] for r in run.history]  # a tiny random model's logits are small: it moves by tenths of a nat
    assert run.state == "finished" and mean(losses[-5:]) < mean(losses[:5]) - 0.25
    assert all(torch.equal(p, base[n]) for n, p in model.named_parameters() if n in base)
    assert "16 conversations (chat template; loss on answers only)" in run.summary()["data"]
