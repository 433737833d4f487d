"""Before training a chat model, a user looks at the loss mask: which tokens train, and what is wrong with the data.

Crafted bad data: a chat template that writes the end-of-turn token after an answer into the next turn's prefix (so
it sits in the input with label -100: the model never learns to stop), rows tokenized with pad = eos and every pad
id masked (the same fault, from a collator), rows that train the prompt, rows with nothing to learn, and answers cut
by truncation.
"""

from __future__ import annotations

import pytest
import torch
from helpers import chat_tokenizer, tiny_llama
from IPython.core.error import UsageError

import lora_nb
from lora_nb.core.training.data.chat import tokenize_item
from lora_nb.core.training.data.loss_mask import loss_mask, marked_text
from lora_nb.errors import DataError

TALK = [
    [{"role": "user", "content": "w1 w2 w3"}, {"role": "assistant", "content": "w10 w11"},
     {"role": "user", "content": "w4"}, {"role": "assistant", "content": "w12 w13 w14"}],
    [{"role": "system", "content": "w90"}, {"role": "user", "content": "w5"},
     {"role": "assistant", "content": "w20"}],
]
# the end-of-turn token of a message is written at the start of the next one (and after the last, by the template's
# closing line): rendering turn by turn, the answer's span never contains it
LATE_END = ("{% for m in messages %}{% if not loop.first %}{{ '<|im_end|>\n' }}{% endif %}"
            "{{ '<|im_start|>' + m['role'] + '\n' + m['content'] }}{% endfor %}"
            "{% if add_generation_prompt %}{{ '<|im_end|>\n<|im_start|>assistant\n' }}{% endif %}")


def rows_from(tok, talk, relabel):
    out = []
    for i, messages in enumerate(talk):
        ids, labels = tokenize_item(messages, i, tok, True)
        out.append({"input_ids": ids, "labels": relabel(ids, labels)})
    return out


def test_lora_nb_own_chat_data_passes_every_check_and_marks_exactly_the_answers():
    tok = chat_tokenizer()
    report = loss_mask(TALK, tok, n=2)
    assert report.ok and report.rows == 2
    pieces, trained = report.shown[0]
    assert [p for p, t in zip(pieces, trained) if t] == ["w10", "w11", "<|im_end|>", "w12", "w13", "w14", "<|im_end|>"]
    assert report.check("end").line == "end token after each answer: trained in 3 of 3 answers"
    assert report.check("prompt").line == "system/user tokens masked in all 2 chat rows"
    assert "[w10w11<|im_end|>]" in repr(report) and "<span" in report._repr_html_()


def test_a_template_that_leaves_the_end_of_turn_token_untrained_is_flagged():
    tok = chat_tokenizer(LATE_END)
    report = loss_mask(TALK, tok)
    end = report.check("end")
    # the first answer's <|im_end|> opens the next user turn: present, label -100; the last answers have none at all
    assert not end.ok
    assert end.line == ("end token after each answer: trained in 0 of 3 answers; present but untrained (label -100) "
                        "in 1: the model never learns to stop; missing after 2")


def test_pad_equal_to_eos_masked_by_a_collator_and_a_trained_prompt_are_flagged_with_counts():
    tok = chat_tokenizer()
    eos = tok.eos_token_id
    masked_eos = rows_from(tok, TALK, lambda ids, labels: [-100 if t == eos else t for t in labels])
    end = loss_mask(masked_eos, tok).check("end")
    assert end.line.startswith("end token after each answer: trained in 0 of 3 answers; present but untrained "
                               "(label -100) in 3")
    everything = rows_from(tok, TALK, lambda ids, labels: list(ids))
    prompt = loss_mask(everything, tok).check("prompt")
    assert not prompt.ok and prompt.line.startswith("system/user tokens trained in 2 of 2 chat rows")


def test_rows_with_nothing_to_learn_and_answers_cut_by_truncation_are_counted():
    tok = chat_tokenizer()
    rows = rows_from(tok, TALK, lambda ids, labels: labels)
    rows.append({"input_ids": rows[1]["input_ids"], "labels": [-100] * len(rows[1]["input_ids"])})
    report = loss_mask(rows, tok, max_length=10)
    # row 0 keeps w10 w11 (tokens 8, 9) and loses the rest; row 1's only answer, w20, is token 10: cut away
    assert report.check("empty").line == "rows with nothing to learn: 2 of 3 (1 only after truncation to 10 tokens)"
    assert report.check("truncated").line == "answers cut by truncation at 10 tokens: 2 rows"


def test_training_refuses_data_where_every_row_is_masked_in_one_line_and_changes_nothing():
    tok = chat_tokenizer()
    model = tiny_llama()
    lora_nb.attach(model, r=2)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    rows = rows_from(tok, TALK, lambda ids, labels: [-100] * len(ids))
    with pytest.raises(DataError, match=r"every one of the 2 rows has all its labels at -100"):
        lora_nb.train(model, rows, steps=1, background=False)
    with pytest.raises(DataError, match="nothing to learn"):
        lora_nb.train(model, TALK, tokenizer=tok, steps=1, max_length=3, background=False)
    assert all(torch.equal(model.state_dict()[k], v) for k, v in before.items())


def test_the_data_verb_shows_the_mask_as_text_with_brackets_and_refuses_a_missing_tokenizer(ip):
    ip.user_ns.update(chats=TALK, tok=chat_tokenizer(LATE_END))
    text = ip.run_line_magic("lora", "data --data chats --tokenizer tok --n 1 --ui text")
    assert "row 0: <|im_start|>user" in text and "[w10w11]" in text and "✗ end token" in text
    assert len(text.splitlines()) == 1 + 1 + 4
    with pytest.raises(UsageError, match="required: --tokenizer"):
        ip.run_line_magic("lora", "data --data chats")


def test_marked_text_brackets_each_run_of_trained_tokens():
    assert marked_text(["a", "b", "c", "\n", "d"], [False, True, True, False, True]) == "a[bc]↵[d]"
