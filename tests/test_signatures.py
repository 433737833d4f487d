"""One source for every option: ``attach`` / ``train`` name each option of ``AttachOptions`` / ``TrainSettings``
in their signatures (so ``help()`` and IDEs show them), the magics' parsers are built from the same fields, and
the README lists the same names and defaults. A field added to a dataclass fails here until each place has it."""

from __future__ import annotations

import ast
import inspect
import re
from dataclasses import MISSING, fields
from pathlib import Path

import pytest

import lora_nb
from lora_nb.cmd import VERBS
from lora_nb.core.adapters.options import AttachOptions
from lora_nb.core.training.settings import TrainSettings

README = (Path(__file__).resolve().parent.parent / "README.md").read_text()
TRAIN_OWN = {"model", "data", "eval_data", "tokenizer", "loss_fn", "background", "callbacks", "names", "unknown"}


def option_fields(cls: type) -> dict[str, tuple]:
    return {f.name: (f.default, f.type) for f in fields(cls) if f.default is not MISSING}


def signature_options(func, own: set[str]) -> dict[str, tuple]:
    params = inspect.signature(func).parameters.values()
    return {p.name: (p.default, p.annotation) for p in params if p.name not in own}


def test_attach_names_every_attach_option_with_its_default_and_type():
    assert len(option_fields(AttachOptions)) == len(fields(AttachOptions))  # every option has a default
    assert signature_options(lora_nb.attach, {"model"}) == option_fields(AttachOptions)
    options = [p for p in inspect.signature(lora_nb.attach).parameters.values() if p.name != "model"]
    assert {p.kind for p in options} == {inspect.Parameter.KEYWORD_ONLY}


def test_train_names_every_training_option_with_its_default_and_type():
    assert len(option_fields(TrainSettings)) == len(fields(TrainSettings))
    assert signature_options(lora_nb.train, TRAIN_OWN) == option_fields(TrainSettings)


def test_a_misspelt_training_option_is_one_line_that_names_it():
    with pytest.raises(lora_nb.LoraNBError, match=r"unknown training option\(s\): lr_rato; did you mean `lr_ratio`"):
        lora_nb.train(None, [], lr_rato=16)


def parser_dests(verb: str) -> set[str]:
    return {a.dest for a in VERBS[verb].parser._actions if a.option_strings and a.dest != "help"}


def parser_flags(verb: str) -> set[str]:
    return {s for a in VERBS[verb].parser._actions for s in a.option_strings}


@pytest.mark.parametrize("verb, cls", [("attach", AttachOptions), ("train", TrainSettings)])
def test_the_magic_takes_every_option_of_its_dataclass(verb, cls):
    assert {f.name for f in fields(cls)} <= parser_dests(verb)


def readme_rows(verb: str) -> list[str]:
    return [line for line in README.splitlines() if line.startswith(f"| `{verb} MODEL")]


@pytest.mark.parametrize("verb", ["attach", "train", "plan"])
def test_every_flag_the_readme_shows_for_a_verb_is_one_its_parser_takes(verb):
    shown = {flag for row in readme_rows(verb) for flag in re.findall(r"--[a-z][a-z-]*", row.split("` |")[0])}
    assert shown and shown <= parser_flags(verb)


def test_the_readme_attach_row_shows_every_attach_option():
    shown = set(re.findall(r"--([a-z][a-z-]*)", readme_rows("attach")[0]))
    assert {f.name.replace("_", "-") for f in fields(AttachOptions)} <= shown


def readme_call(function: str) -> dict[str, object]:
    """The keywords and defaults of ``lora_nb.<function>(…)`` as the README's signature listing (the Python block
    after the ``<!-- SIGNATURES -->`` marker) writes it."""
    block = README.split("<!-- SIGNATURES -->", 1)[1].split("```python", 1)[1].split("```", 1)[0]
    start = block.index(f"lora_nb.{function}(")
    for end in range(block.index(")", start) + 1, len(block) + 1):
        try:
            call = ast.parse(block[start:end].replace("\n", " ").strip(), mode="eval").body
            break
        except SyntaxError:
            continue
    return {k.arg: ast.literal_eval(k.value) for k in call.keywords}


@pytest.mark.parametrize("function, own", [("attach", {"model"}), ("train", {"model", "data", "names"})])
def test_the_readme_python_api_shows_each_option_with_its_default(function, own):
    params = inspect.signature(getattr(lora_nb, function)).parameters.values()
    expected = {p.name: p.default for p in params if p.name not in own and p.kind is not p.VAR_KEYWORD}
    assert readme_call(function) == expected
