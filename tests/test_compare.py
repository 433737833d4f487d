"""Adapter on vs off side by side: generation, classifier probabilities, output norms; state kept."""

from __future__ import annotations

import copy
from types import SimpleNamespace

import pytest
import torch
from helpers import (
    adapted_with_pristine,
    byte_tokenizer,
    make_b_nonzero,
    run,
    sample_inputs,
    tiny_bert,
    tiny_gpt2,
    tiny_mlp,
)
from IPython.core.error import UsageError
from peft.tuners.lora import LoraLayer

import lora_nb
from lora_nb.core import find
from lora_nb.core.analysis.outputs.compare import ClassComparison, GenerationComparison, OutputComparison
from lora_nb.core.analysis.outputs.generation import pieces
from lora_nb.errors import OptionError, TrainingActiveError


def word_tokenizer():
    """A word-level tokenizer for tiny_gpt2's 101-token vocabulary, built offline."""
    from tokenizers import Tokenizer
    from tokenizers.models import WordLevel
    from tokenizers.pre_tokenizers import Whitespace
    from transformers import PreTrainedTokenizerFast

    vocab = {"<pad>": 0, "<unk>": 1, **{f"w{i}": i + 2 for i in range(99)}}
    tok = Tokenizer(WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = Whitespace()
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", unk_token="<unk>", eos_token="<pad>")


def layer_state(model):
    return [(m.disable_adapters, tuple(m.active_adapters), tuple(m.merged_adapters))
            for m in model.modules() if isinstance(m, LoraLayer)]


def greedy(model, tok, prompt, n):
    """The greedy continuation as the text each new token adds (`` w5``), as the reader sees it."""
    ids = tok(prompt, return_tensors="pt")
    new = model.generate(**ids, max_new_tokens=n, do_sample=False, pad_token_id=0)[0, ids["input_ids"].shape[1]:]
    text = tok.decode(new)
    assert text == " ".join(tok.convert_ids_to_tokens(new.tolist()))  # a word-level vocabulary: words and spaces
    return [(" " if i else "") + t for i, t in enumerate(tok.convert_ids_to_tokens(new.tolist()))]


@pytest.fixture
def gpt():
    return adapted_with_pristine(tiny_gpt2)


@pytest.mark.parametrize("before", ["on", "off", "merged"])
def test_generation_on_vs_off_and_state_is_kept(gpt, before):
    model, pristine = gpt
    tok = word_tokenizer()
    on_expected = greedy(model, tok, "w1 w2 w3", 8)
    if before == "off":
        lora_nb.disable(model)
    elif before == "merged":
        lora_nb.merge(model)
    state, params = layer_state(model), {k: v.clone() for k, v in model.state_dict().items()}
    result = lora_nb.compare(model, prompt="w1 w2 w3", tokenizer=tok, max_new_tokens=8)
    assert isinstance(result, GenerationComparison)
    assert result.on == on_expected
    assert result.off == greedy(pristine, tok, "w1 w2 w3", 8)
    assert result.on != result.off and any(result.differs)
    assert layer_state(model) == state
    assert all(torch.equal(v, params[k]) for k, v in model.state_dict().items())
    marked = [t.strip() for t, d in zip(result.on, result.differs) if d]
    assert f"<mark>{marked[0]}</mark>" in result._repr_html_()
    assert f"[{marked[0]}]" in str(result) and "tokens differ" in str(result)


def test_generation_reads_as_text_with_a_byte_level_tokenizer(gpt):
    """GPT-2-style byte-level BPE writes a leading space as `Ġ` in its vocabulary; the reader sees the text."""
    tok = byte_tokenizer(101)
    ids = tok("The cat, too")["input_ids"]
    assert tok.convert_ids_to_tokens(ids)[3] == "Ġ"
    assert pieces(tok, ids) == ["T", "h", "e", " ", "c", "a", "t", ",", " ", "t", "o", "o"]
    model, _ = gpt
    result = lora_nb.compare(model, prompt="The cat", tokenizer=tok, max_new_tokens=12)
    assert "".join(result.on) == result.on_text and "".join(result.off) == result.off_text
    assert len(result.on) == 12 and "Ġ" not in str(result) and "Ġ" not in result._repr_html_()


def adapted(build):
    """``build()`` with a non-zero adapter, an untouched copy of it, and inputs for it."""
    model = build()
    pristine = copy.deepcopy(model)
    lora_nb.attach(model, r=4)
    make_b_nonzero(model)
    return model, pristine, sample_inputs(model)


def test_classifier_top_k_on_vs_off():
    model, pristine, x = adapted(tiny_bert)
    result = lora_nb.compare(model, inputs=x, top_k=2)
    assert isinstance(result, ClassComparison)
    torch.testing.assert_close(result.on, run(model, x).softmax(-1))
    torch.testing.assert_close(result.off, run(pristine, x).softmax(-1))
    top = result.on[0].argmax().item()
    assert f"LABEL_{top} {result.on[0, top]:.3f}" in str(result)
    assert "<table" in result._repr_html_()


def test_other_modules_get_difference_norms():
    model, pristine, x = adapted(tiny_mlp)
    result = lora_nb.compare(model, inputs=x)
    assert isinstance(result, OutputComparison)
    on, off = run(model, x), run(pristine, x)
    assert result.max_abs == pytest.approx((on - off).abs().max().item())
    assert result.rel_l2 == pytest.approx(((on - off).norm() / off.norm()).item(), rel=1e-5)
    assert "relative L2" in str(result)


def test_compare_errors_and_training_refusal(gpt):
    model, _ = gpt
    with pytest.raises(OptionError, match="needs its tokenizer"):
        lora_nb.compare(model, prompt="w1")
    with pytest.raises(OptionError, match=r"compare needs `prompt=…, tokenizer=…`, or `inputs=…`"):
        lora_nb.compare(model)
    state = layer_state(model)
    find(model).run = SimpleNamespace(state="running")
    with pytest.raises(TrainingActiveError, match="training is running"):
        lora_nb.compare(model, prompt="w1", tokenizer=word_tokenizer())
    assert layer_state(model) == state


def test_compare_magic(ip, gpt):
    model, _ = gpt
    ip.user_ns.update(gpt=model, tok=word_tokenizer(), batch=sample_inputs(model))
    result = ip.run_line_magic("lora", "compare gpt --prompt 'w1 w2 w3' --tokenizer tok --max-new-tokens 5")
    assert isinstance(result, GenerationComparison) and len(result.on) == 5
    assert isinstance(ip.run_line_magic("lora", "compare gpt --inputs batch"), OutputComparison)
    for line, message in [("compare gpt", "either --prompt"), ("compare gpt --prompt hi --tokenizer tokk",
                                                                "no variable `tokk`; did you mean `tok`"),
                          ("compare gpt --prompt hi", "needs its tokenizer")]:
        with pytest.raises(UsageError, match=message) as info:
            ip.run_line_magic("lora", line)
        assert "\n" not in str(info.value)
