"""Answers that say what to do: a prompt with spaces left unquoted, a tokenizer given by name, an expression where a
variable goes; a run's end said once; usage lines with the model first, as every example writes it; the text summary
of ``attach`` naming the modules it adapted; and the README's account of a ``datasets.Dataset`` is what training
does with one."""

from __future__ import annotations

import re
from pathlib import Path

import datasets
import pytest
import torch
from helpers import mlp_with_lora, tiny_llama, word_tokenizer
from IPython.core.error import UsageError

import lora_nb
from lora_nb.cmd import VERBS
from lora_nb.core import registry
from lora_nb.core.training.data.batches import make_batches
from lora_nb.core.training.reporting import end_line

README = Path(__file__).resolve().parent.parent / "README.md"


def refused(ip, line: str) -> str:
    with pytest.raises(UsageError) as info:
        ip.run_line_magic("lora", line)
    assert "\n" not in str(info.value)
    return str(info.value)


@pytest.fixture
def llama(ip):
    ip.user_ns.update(model=tiny_llama(), texts=["w1 w2 w3", "w4 w5"], tok=word_tokenizer())
    ip.run_line_magic("lora", "attach model --targets q_proj,v_proj")
    return ip


def test_an_unquoted_prompt_says_to_quote_it(llama):
    message = refused(llama, "compare model --prompt The film was --tokenizer tok")
    assert message.endswith('unrecognized arguments: film was; a value with spaces goes in quotes: '
                            '`--prompt "The film was"`')
    assert refused(llama, "attach model --rank 8").endswith("did you mean `--r`?")  # flags keep their hint


def test_a_tokenizer_given_by_name_says_to_pass_a_variable_holding_one(llama):
    for line in ['train model --data texts --tokenizer "gpt2"', "train model --data texts --tokenizer gpt2",
                 "compare model --prompt hi --tokenizer gpt2"]:
        assert refused(llama, line) == ("no variable `gpt2`; --tokenizer takes a variable holding a tokenizer, "
                                        'e.g. `tok = AutoTokenizer.from_pretrained("gpt2")`, then `--tokenizer tok`')
    assert registry.find(llama.user_ns["model"]).run is None  # nothing started


def test_an_expression_where_a_variable_goes_says_to_assign_it_first(llama):
    assert refused(llama, "train model --data texts[:50] --tokenizer tok") == (
        "`texts[:50]` is an expression: %lora reads variable names and evaluates no expressions; assign it to a "
        "variable first (`part = texts[:50]`) and pass `part`")
    assert "is an expression" in refused(llama, "status models[0]")


def test_a_stopped_run_says_stopped_once():
    run = lora_nb.train(mlp_with_lora(), (torch.randn(16, 16), torch.randint(0, 4, (16,))), steps=100000,
                        batch_size=4, background=True, callbacks=[])
    run.stop()
    run.wait(30)
    assert run.state == "stopped" and end_line(run).startswith("stopped at step")
    assert "stopped: stopped" not in end_line(run)


def test_usage_lines_put_the_model_first():
    for name, spec in VERBS.items():
        usage = " ".join(spec.parser.format_usage().split())
        if spec.mutates is not None:  # a verb given a model
            assert usage.startswith(f"usage: %lora {name} model"), usage
    assert " ".join(VERBS["save"].parser.format_usage().split()) == (
        "usage: %lora save model path [--adapter ADAPTER] [--overwrite]")
    assert "[--batch-size BATCH_SIZE]" in VERBS["train"].parser.format_usage()  # a bracketed option is never split


def test_the_text_summary_of_attach_names_the_modules(llama):
    text = repr(llama.run_line_magic("lora", "status model"))
    assert text.splitlines()[1] == "modules: q_proj ×2, v_proj ×2"


def test_the_readme_says_what_training_does_with_a_datasets_dataset():
    prose = " ".join(README.read_text().split())
    assert ("a `datasets.Dataset` with `messages` or `prompt`/`completion` columns is chat data, and one with a "
            "`text` column and no `input_ids` is tokenized as texts") in prose
    tok = word_tokenizer()
    texts = make_batches(datasets.Dataset.from_dict({"text": ["w1 w2", "w3"], "label": [0, 1]}), tokenizer=tok)
    assert re.fullmatch(r"2 texts, tokenized .*", texts.description) and texts.token_rows
    ids = make_batches(datasets.Dataset.from_dict({"text": ["w1 w2", "w3"], "input_ids": [[1, 2], [3, 4]]}))
    assert ids.description.startswith("Dataset (2 rows; input_ids") and not ids.token_rows
