"""Tab on a %lora line in a real IPython shell: verbs, the verb's own options, adapter names, and only
the notebook variables that fit where the cursor is; completions elsewhere stay IPython's own."""

from __future__ import annotations

import argparse

import pytest
from helpers import classification_pairs, minilm_dir, tiny_mlp
from IPython.core.completer import provisionalcompleter
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from lora_nb.cmd import ORDER, VERBS, help_text
from lora_nb.cmd.router import order_verbs


def complete(ip, text: str) -> list[str]:
    """What Tab offers with the cursor at the end of ``text``, as a notebook frontend asks for it."""
    with provisionalcompleter():
        return [c.text for c in ip.Completer.completions(text, len(text))]


@pytest.fixture
def notebook(ip):
    """A notebook with a model holding two adapters, data of several kinds, a loss and odd variables."""
    x, y = classification_pairs(32)
    ip.user_ns.update(model=tiny_mlp(), pairs=list(zip(x, y)), loader=DataLoader(TensorDataset(x, y), batch_size=8),
                      table=TensorDataset(x, y), batch=x[:4], mse=nn.MSELoss(), title="a string", steps=40)
    ip.run_cell("def my_loss(output, target):\n    return (output - target).pow(2).mean()")
    ip.run_line_magic("lora", "attach model --targets 0,2 --r 4")
    ip.run_line_magic("lora", "attach model --targets 0,2 --r 4 --name second")
    return ip


def test_verbs_after_lora(notebook):
    assert set(complete(notebook, "%lora ")) == set(VERBS)
    assert complete(notebook, "%lora tr") == ["train"]
    assert complete(notebook, "%lora s") == ["save", "similarity", "spectrum", "status", "stop"]


def test_help_lists_the_verbs_in_the_verb_tables_order_and_the_table_names_each_once():
    listed = [line.split()[0] for line in help_text().split("verbs:\n", 1)[1].split("\n\n", 1)[0].splitlines()]
    assert listed == list(VERBS) == list(ORDER) and listed[0] == "attach" and listed[-1] == "detach"
    with pytest.raises(RuntimeError, match="differ: \\['detach'\\]"):
        order_verbs(ORDER[:-1])  # a verb registered but not placed in the table
    assert list(VERBS) == list(ORDER)  # refused: nothing reordered


def test_options_of_train_are_its_parsers(notebook):
    flags = {a.option_strings[0] for a in VERBS["train"].parser._actions  # hidden ones: old spellings
             if a.option_strings and a.help != argparse.SUPPRESS}
    assert len(flags) == len({a.dest for a in VERBS["train"].parser._actions if a.option_strings})
    offered = complete(notebook, "%lora train model --")
    assert set(offered) == flags and {"--data", "--lr", "--steps", "--wait", "--ui", "--device"} <= flags
    assert complete(notebook, "%lora train model --gra") == ["--grad-accum", "--grad-checkpointing"]
    # an option already on the line is not offered again; after the model, a blank offers every option
    assert "--data" not in complete(notebook, "%lora train model --data pairs --")
    assert len(complete(notebook, "%lora train model --data pairs ")) == len(flags) - 1


def test_adapter_names_after_adapter_options(notebook):
    assert complete(notebook, "%lora on model --adapter ") == ["default", "second"]
    assert complete(notebook, "%lora on model --adapter se") == ["second"]
    assert complete(notebook, "%lora similarity model --adapter default --other s") == ["second"]
    assert complete(notebook, "%lora combine model --adapters default,") == ["second"]
    assert complete(notebook, "%lora spectrum model --adapter=d") == ["default"]


def test_adapter_names_of_a_model_built_with_peft(notebook):
    from peft import LoraConfig, get_peft_model

    notebook.user_ns["peft_model"] = get_peft_model(tiny_mlp(), LoraConfig(r=2, target_modules=["0"]), "mine")
    assert complete(notebook, "%lora on peft_model --adapter ") == ["mine"]


def test_model_position_offers_models_only(notebook):
    assert complete(notebook, "%lora attach ") == ["model"]  # not the list, the loss module or the tensor
    assert complete(notebook, "%lora status m") == ["model"]
    assert complete(notebook, "run = %lora train m") == ["model"]


def test_data_options_offer_datasets_only(notebook):
    datasets = ["loader", "pairs", "table"]
    assert complete(notebook, "%lora train model --data ") == datasets
    assert complete(notebook, "%lora vs-full model --data pairs --eval ") == datasets
    assert complete(notebook, "%lora train model --data p") == ["pairs"]  # no `print`, `pow`… from Python


def test_loss_offers_callables_and_tokenizer_offers_tokenizers(notebook):
    from transformers import AutoTokenizer

    notebook.user_ns["tok"] = AutoTokenizer.from_pretrained(minilm_dir())
    assert complete(notebook, "%lora train model --data pairs --loss ") == ["mse", "my_loss"]
    assert complete(notebook, "%lora train model --data pairs --tokenizer ") == ["tok"]
    assert complete(notebook, "%lora compare model --inputs ") == ["batch"]
    assert complete(notebook, "%lora weights model --ui ") == ["auto", "static", "text", "widget"]


def test_cell_body_offers_keys_and_their_values(notebook):
    assert complete(notebook, "%%lora attach model\nr: 16\nta") == ["targets: "]
    keys = complete(notebook, "%%lora attach model\nr: 16\n")
    assert "alpha: " in keys and "r: " not in keys
    assert complete(notebook, "%%lora train model\ndata: ") == ["loader", "pairs", "table"]
    assert complete(notebook, "%%lora spectrum model\nadapter: ") == ["default", "second"]
    assert complete(notebook, "%%lora attach model\ndora: ") == ["false", "true"]


def test_other_completions_are_unchanged(notebook):
    notebook.run_cell("import os")
    texts = ["import o", "os.pa", "pai", "my_l", "x = steps + ste"]
    with_lora = [complete(notebook, t) for t in texts]
    assert "path" in with_lora[1] and "pairs" in with_lora[2]
    notebook.run_line_magic("unload_ext", "lora_nb")
    try:
        assert notebook.Completer.custom_matchers == []
        assert [complete(notebook, t) for t in texts] == with_lora
    finally:
        notebook.run_line_magic("load_ext", "lora_nb")
    assert complete(notebook, "%lora tr") == ["train"]


def test_paths_are_left_to_the_file_completer(ip, tmp_path):
    (tmp_path / "adapter_one").mkdir()
    ip.user_ns["model"] = tiny_mlp()
    text = f"%lora save model {tmp_path}/ada"
    assert f"{tmp_path}/adapter_one/" in complete(ip, text)


@pytest.mark.slow
def test_a_jupyter_kernel_answers_tab_with_lora_completions():
    from jupyter_client.manager import start_new_kernel

    manager, client = start_new_kernel(kernel_name="python3")
    try:
        setup = ("%load_ext lora_nb\nimport torch\nmodel = torch.nn.Sequential(torch.nn.Linear(3, 3))\n"
                 "pairs = [(torch.zeros(3), 0)]\n%lora attach model --name first")
        client.execute_interactive(setup, timeout=120)
        answers = {}
        for code in ["%lora tr", "%lora train model --data p", "%%lora attach model\nr: 4\nalp",
                     "%lora on model --adapter "]:
            client.complete(code, len(code))
            reply = client.get_shell_msg(timeout=60)["content"]
            answers[code] = (reply["matches"], len(code) - reply["cursor_start"])
    finally:
        client.stop_channels()
        manager.shutdown_kernel(now=True)
    assert answers == {"%lora tr": (["train"], 2), "%lora train model --data p": (["pairs"], 1),
                       "%%lora attach model\nr: 4\nalp": (["alpha: "], 3), "%lora on model --adapter ": (["first"], 0)}


def test_the_teaching_verbs_complete_their_options_and_fitting_variables(notebook):
    from helpers import chat_tokenizer

    notebook.user_ns["tok"] = chat_tokenizer()
    assert complete(notebook, "%lora lr-sweep model --v") == ["--vs-full"]
    assert {"--lrs", "--steps", "--eval", "--loss", "--alpha"} <= set(complete(notebook, "%lora lr-sweep model --"))
    assert complete(notebook, "%lora placement model --data pa") == ["pairs"]
    assert complete(notebook, "%lora data --tokenizer ") == ["tok"]  # no model on this verb's line
    assert "--max-length" in complete(notebook, "%lora data --data pairs --")
