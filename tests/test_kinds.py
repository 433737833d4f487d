"""What counts as a model, a dataset, a tokenizer or a function has one home, ``core.kinds``: Tab offers a variable
exactly where the verb then takes it, and every kind a user passes as data by mistake is one line naming what to pass
instead (nothing is trained, nothing changes)."""

from __future__ import annotations

import datasets
import numpy as np
import pandas as pd
import pytest
import torch
from helpers import classification_pairs, lora_params, mlp_with_lora, tiny_mlp, word_tokenizer
from IPython.core.completer import provisionalcompleter
from IPython.core.error import UsageError
from tokenizers import Tokenizer, models
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import lora_nb
from lora_nb.core import kinds, registry
from lora_nb.errors import DataError, LoraNBError

TEXTS = ["a film", "a good film", "a bad film"]


def objects() -> dict[str, object]:
    """One object of each kind a notebook holds, the mistaken ones included."""
    x, y = classification_pairs(8)

    def gen():
        yield from TEXTS

    def metric(model):
        return 0.0

    return {
        "model": tiny_mlp(), "mse": nn.MSELoss(), "metric": metric, "tok": word_tokenizer(),
        "raw_tok": Tokenizer(models.WordLevel({"a": 0, "[UNK]": 1}, unk_token="[UNK]")),
        "texts": list(TEXTS), "pairs": list(zip(x, y)), "xy": (x, y), "table": TensorDataset(x, y),
        "loader": DataLoader(TensorDataset(x, y), batch_size=4), "hf": datasets.Dataset.from_dict({"text": TEXTS}),
        "df": pd.DataFrame({"text": TEXTS}), "series": pd.Series(TEXTS), "one": "a film", "batch": {"x": x},
        "splits": datasets.DatasetDict(train=datasets.Dataset.from_dict({"text": TEXTS})), "tensor": x,
        "array": np.zeros((4, 3)), "gen": gen(), "words": set(TEXTS), "number": 42, "cls": nn.Linear,
        "module": np,
    }


def complete(ip, text: str) -> set[str]:
    with provisionalcompleter():
        return {c.text for c in ip.Completer.completions(text, len(text))}


def accepts(check, obj) -> bool:
    try:
        check(obj)
    except LoraNBError:
        return False
    return True


CHECKS = {  # option on the line → what a verb's own check asks of core.kinds
    "%lora status ": lambda o: kinds.check_model(o, "model"),
    "%lora train model --data ": kinds.check_dataset,
    "%lora train model --data texts --tokenizer ": kinds.check_tokenizer,
    "%lora train model --data pairs --loss ": lambda o: kinds.check_callable(o, "loss_fn"),
    "%lora export model out --metric ": lambda o: kinds.check_callable(o, "metric"),
}


@pytest.mark.parametrize("line", list(CHECKS))
def test_tab_offers_exactly_what_the_check_then_takes(ip, line):
    found = objects()
    ip.user_ns.update(found)
    offered = complete(ip, line) & set(found)
    taken = {name for name, obj in found.items() if accepts(CHECKS[line], obj)}
    assert offered == taken and offered


def test_the_kinds_tab_offers_for_each_option():
    found = objects()
    pick = {name: [n for n, o in found.items() if test(o)] for name, test in
            [("model", kinds.is_model), ("data", kinds.is_dataset), ("tokenizer", kinds.is_tokenizer),
             ("function", kinds.is_callable)]}
    assert pick["model"] == ["model"]  # not the loss module, the class or the tensor
    assert pick["data"] == ["texts", "pairs", "xy", "table", "loader", "hf"]
    assert pick["tokenizer"] == ["tok"]  # a raw `tokenizers.Tokenizer` is not callable on texts: train refuses it
    assert pick["function"] == ["mse", "metric"]


def test_a_raw_tokenizers_tokenizer_is_refused_saying_how_to_wrap_it(ip):
    ip.user_ns.update(objects())
    assert "raw_tok" not in complete(ip, "%lora train model --data texts --tokenizer ")
    with pytest.raises(LoraNBError, match=r"got a Tokenizer.*PreTrainedTokenizerFast\(tokenizer_object=tok\)"):
        kinds.check_tokenizer(ip.user_ns["raw_tok"])


MISTAKES = {
    "df": r"^a pandas DataFrame is not a dataset here: pass `df\['text'\]\.tolist\(\)` or "
          r"`datasets\.Dataset\.from_pandas\(df\)`$",
    "series": r"^a pandas Series is not a dataset here: pass `series\.tolist\(\)`$",
    "splits": r"^a DatasetDict holds splits: pass one of them \(`data\['train'\]`\)$",
    "one": r"^a str is not a dataset here: pass a list of texts",
    "batch": r"^a dict is not a dataset here: pass a list with one dict per example",
    "tensor": r"^a Tensor is not a dataset here: pass an \(inputs, targets\) pair of tensors",
    "array": r"^a numpy array is not a dataset here: .*torch\.from_numpy",
    "gen": r"^a generator is a one-shot iterator .*pass a list of it",
    "words": r"^a set is not a dataset here: pass a list \(a set has no order",
    "number": r"^cannot train on an int: pass a list of texts",
    "model": r"^a Sequential is not a dataset here: pass the data to train it on \(a list",
}


@pytest.mark.parametrize("name", list(MISTAKES))
def test_a_mistaken_kind_of_data_is_one_line_naming_what_to_pass_and_trains_nothing(name):
    model = mlp_with_lora()
    before = lora_params(model)
    with pytest.raises(DataError, match=MISTAKES[name]) as info:
        lora_nb.train(model, objects()[name], tokenizer=word_tokenizer(), steps=2)
    assert "\n" not in str(info.value) and registry.find(model).run is None
    assert all(torch.equal(p, before[n]) for n, p in lora_params(model).items())


def test_a_dataframe_as_eval_data_or_through_the_magic_is_the_same_line(ip):
    ip.user_ns.update(model=mlp_with_lora(), pairs=objects()["pairs"], df=pd.DataFrame({"text": TEXTS}))
    with pytest.raises(UsageError, match=r"^a pandas DataFrame is not a dataset here: pass `df\['text'\]"):
        ip.run_line_magic("lora", "train model --data df --steps 2")
    with pytest.raises(UsageError, match=r"^a pandas DataFrame is not a dataset here"):
        ip.run_line_magic("lora", "train model --data pairs --eval df --steps 2")


def test_a_parameterless_module_is_no_model_for_the_verbs(ip):
    ip.user_ns.update(mse=nn.MSELoss(), texts=TEXTS)
    with pytest.raises(UsageError, match=r"^`mse` is an? MSELoss with no parameters, not a model$"):
        ip.run_line_magic("lora", "attach mse")
    with pytest.raises(UsageError, match=r"^`texts` is a list, not a torch\.nn\.Module$"):
        ip.run_line_magic("lora", "attach texts")


def test_a_model_or_tokenizer_is_no_function():
    with pytest.raises(LoraNBError, match="loss_fn must be a function .*got a Sequential"):
        kinds.check_callable(tiny_mlp(), "loss_fn")
    with pytest.raises(LoraNBError, match=r"metric must be a function .*got a \w*Tokeni[sz]er\w*"):
        kinds.check_callable(word_tokenizer(), "metric")


def test_cell_bodies_strip_comments_as_lines_do(ip):
    """A ``#`` inside a word is kept (`a#b`), a ``#`` starting a word begins a comment, in a ``%%lora`` body as on a
    ``%lora`` line."""
    from lora_nb.cmd import VERBS
    from lora_nb.cmd.lines import body_to_argv, without_comment

    parser = VERBS["attach"].parser
    assert body_to_argv("targets: a#b\nr: 4  # the rank\n# a whole line\n", parser) == [
        "--targets", "a#b", "--r", "4"]
    for value in ("a#b", "a #b", "a  # note", "'a #b'"):
        line = without_comment(f"--targets {value}").split(None, 1)[1].strip()
        assert body_to_argv(f"targets: {value}", parser) == ["--targets", line], value
