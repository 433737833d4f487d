"""Compare a chat model's answers with the adapter on and off: several prompts as a table, chat prompts, sampling."""

from __future__ import annotations

import pytest
import torch
from helpers import adapted_with_pristine, chat_tokenizer, tiny_llama
from IPython.core.error import UsageError

import lora_nb
from lora_nb.core.analysis.outputs.compare import GenerationComparison, GenerationTable
from lora_nb.errors import OptionError

PROMPTS = ["w1 w2 w3", "w7", "w40 w41"]


@pytest.fixture
def llama():
    return adapted_with_pristine(tiny_llama)


def generated(model, tok, ids, n, seed=None, **sampling):
    with torch.no_grad():
        if seed is not None:
            torch.manual_seed(seed)
        out = model.generate(input_ids=torch.tensor([ids]), attention_mask=torch.ones(1, len(ids), dtype=torch.long),
                             max_new_tokens=n, pad_token_id=tok.pad_token_id, **sampling)
    pieces, words = [], 0  # the text each token adds: a word-level vocabulary joins words with spaces
    for token in tok.convert_ids_to_tokens(out[0, len(ids):].tolist()):
        special = token in tok.all_special_tokens
        pieces.append("" if special else " " * (words > 0) + token)
        words += not special
    return pieces


def test_several_prompts_make_a_table_of_on_vs_off_rows(llama):
    model, pristine = llama
    tok = chat_tokenizer()
    table = lora_nb.compare(model, prompt=PROMPTS, tokenizer=tok, max_new_tokens=6)
    assert isinstance(table, GenerationTable) and len(table) == 3
    for prompt, row in zip(PROMPTS, table.rows):
        ids = tok(prompt)["input_ids"]
        assert row.prompt == prompt and row.how == "greedy"
        assert row.on == generated(model, tok, ids, 6, do_sample=False)
        assert row.off == generated(pristine, tok, ids, 6, do_sample=False)
        single = lora_nb.compare(model, prompt=prompt, tokenizer=tok, max_new_tokens=6)
        assert isinstance(single, GenerationComparison) and single.on == row.on and single.off == row.off
    assert table.changed == sum(r.on_text != r.off_text for r in table.rows) > 0
    text = str(table).splitlines()
    assert text[0] == "prompt | on (default) | off (base)" and text[1].startswith("w1 w2 w3 | ")
    assert text[-1] == f"{table.changed} of 3 prompts answered differently (greedy)"
    assert table._repr_html_().count("<tr>") == 4 and "<mark>" in table._repr_html_()


def test_chat_prompts_go_through_the_chat_template(llama):
    model, pristine = llama
    tok = chat_tokenizer()
    result = lora_nb.compare(model, prompt="w5 w6", tokenizer=tok, chat=True, max_new_tokens=5)
    ids = tok.apply_chat_template([{"role": "user", "content": "w5 w6"}], add_generation_prompt=True)["input_ids"]
    assert tok.convert_ids_to_tokens(ids)[-2:] == ["<|im_start|>", "assistant"]
    assert result.on == generated(model, tok, ids, 5, do_sample=False)
    assert result.off == generated(pristine, tok, ids, 5, do_sample=False)
    assert result.prompt == "w5 w6" and "greedy, chat template" in str(result)
    with pytest.raises(OptionError, match="`chat=True` needs a tokenizer with a chat template"):
        lora_nb.compare(model, prompt="w5", tokenizer=chat_tokenizer(template=None), chat=True)


def test_a_seeded_sample_is_reproducible_the_same_on_and_off_and_leaves_the_global_seed_alone(llama):
    model, pristine = llama
    tok = chat_tokenizer()
    kw = dict(prompt=PROMPTS[:2], tokenizer=tok, temperature=1.5, top_p=0.95, max_new_tokens=12)
    torch.manual_seed(123)
    state = torch.get_rng_state()
    first = lora_nb.compare(model, seed=7, **kw)
    assert torch.equal(torch.get_rng_state(), state)
    again = lora_nb.compare(model, seed=7, **kw)
    other = lora_nb.compare(model, seed=8, **kw)
    assert [r.on for r in first.rows] == [r.on for r in again.rows]
    assert [r.off for r in first.rows] == [r.off for r in again.rows]
    assert [r.on for r in first.rows] != [r.on for r in other.rows]
    sampled = dict(do_sample=True, temperature=1.5, top_p=0.95, top_k=0)
    ids = tok(PROMPTS[0])["input_ids"]
    assert first[0].on == generated(model, tok, ids, 12, seed=7, **sampled)
    assert first[0].off == generated(pristine, tok, ids, 12, seed=7, **sampled)
    assert first[0].on != generated(model, tok, ids, 12, do_sample=False)  # sampled, not greedy
    assert first.how == "sampled (temperature 1.5, top-p 0.95, seed 7)"


@pytest.mark.parametrize("kwargs, message", [
    (dict(temperature=-1), "temperature must be ≥ 0"),
    (dict(top_p=0.5), "top_p applies to sampling: give a temperature > 0"),
    (dict(temperature=1, top_p=0), r"top_p must be in \(0, 1\]"),
    (dict(prompt=[]), "prompt must be a text or a non-empty list of texts"),
    (dict(prompt=["w1", 3]), "prompt must be a text or a non-empty list of texts"),
])
def test_bad_sampling_options_are_one_line(llama, kwargs, message):
    model, _ = llama
    with pytest.raises(OptionError, match=message):
        lora_nb.compare(model, **{"prompt": "w1", "tokenizer": chat_tokenizer(), **kwargs})


def test_compare_magic_with_repeated_prompts_a_prompt_list_chat_and_sampling(ip, llama):
    model, _ = llama
    ip.user_ns.update(m=model, tok=chat_tokenizer(), questions=PROMPTS)
    table = ip.run_line_magic("lora", "compare m --prompt 'w1 w2 w3' --prompt w7 --tokenizer tok --max-new-tokens 4")
    assert isinstance(table, GenerationTable) and [r.prompt for r in table.rows] == PROMPTS[:2]
    line = "compare m --prompts questions --tokenizer tok --chat --temperature 0.8 --top-p 0.9 --seed 3"
    sampled = ip.run_line_magic("lora", line)
    python = lora_nb.compare(model, prompt=PROMPTS, tokenizer=ip.user_ns["tok"], chat=True, temperature=0.8,
                             top_p=0.9, seed=3)
    assert [r.on for r in sampled.rows] == [r.on for r in python.rows] and len(sampled) == 3
    with pytest.raises(UsageError, match="--prompt TEXT \\(repeatable\\) or --prompts VAR, not both"):
        ip.run_line_magic("lora", "compare m --prompt w1 --prompts questions --tokenizer tok")


def test_tab_after_prompts_offers_lists_of_texts_only(ip, llama):
    from IPython.core.completer import provisionalcompleter

    ip.user_ns.update(m=llama[0], questions=PROMPTS, numbers=[1, 2], title="w1", empty=[])
    text = "%lora compare m --prompts "
    with provisionalcompleter():
        offered = [c.text for c in ip.Completer.completions(text, len(text))]
    assert offered == ["questions"]
