"""`%config LoraMagics`: settings a user makes once per notebook, and what each one changes."""

from __future__ import annotations

import logging
from dataclasses import fields
from types import SimpleNamespace

import ipywidgets
import pytest
import torch
from helpers import classification_pairs, tiny_mlp
from IPython.core.completer import provisionalcompleter
from IPython.core.error import UsageError

import lora_nb
from lora_nb.cmd.settings import NotebookSettings
from lora_nb.magics import LoraMagics


def lora_magics(ip) -> LoraMagics:
    return next(c for c in ip.configurables if isinstance(c, LoraMagics))


@pytest.fixture
def notebook(ip):
    """A shell with a tiny MLP and data; every setting is back to its default afterwards."""
    x, y = classification_pairs(32)
    ip.user_ns.update(model=tiny_mlp(), pairs=list(zip(x, y)))
    yield ip
    ip.config.pop("LoraMagics", None)
    magics = lora_magics(ip)
    for f in fields(NotebookSettings):
        setattr(magics, f.name, f.default)


def config(ip, line: str):
    return ip.run_line_magic("config", line)


def lora_config(ip):
    return lora_nb.core.find(ip.user_ns["model"]).peft.peft_config["default"]


def test_config_lists_every_setting_with_its_help(notebook, capsys):
    config(notebook, "LoraMagics")
    shown = capsys.readouterr().out
    for f in fields(NotebookSettings):
        assert f"LoraMagics.{f.name}=" in shown
    assert "rank %lora attach uses when the line gives no --r" in shown
    assert "Choices: any of ['auto', 'widget', 'static', 'text']" in shown
    assert config(notebook, "LoraMagics.default_r") == 8 and config(notebook, "LoraMagics.refresh_rate") == 4.0
    text = "%config LoraMagics.de"
    with provisionalcompleter():  # IPython's own %config completion knows the settings
        offered = [c.text for c in notebook.Completer.completions(text, len(text))]
    assert offered == ["LoraMagics.default_alpha", "LoraMagics.default_r", "LoraMagics.device"]
    assert "default_r, default_alpha, background): %config LoraMagics" in notebook.run_line_magic("lora", "")


def test_default_rank_and_alpha_apply_when_the_line_gives_none(notebook):
    config(notebook, "LoraMagics.default_r = 4")
    config(notebook, "LoraMagics.default_alpha = 2")
    notebook.run_line_magic("lora", "attach model --targets 0,2")
    assert (lora_config(notebook).r, lora_config(notebook).lora_alpha) == (4, 2)
    notebook.run_line_magic("lora", "attach model --targets 0,2 --r 16 --replace")  # the line wins
    assert (lora_config(notebook).r, lora_config(notebook).lora_alpha) == (16, 2)
    notebook.run_cell_magic("lora", "attach model", "targets: 0\nalpha: 8\nreplace: true\n")  # a cell body too
    assert (lora_config(notebook).r, lora_config(notebook).lora_alpha) == (4, 8)


@pytest.mark.parametrize("line, message", [
    ("ui = 'fancy'", "The 'ui' trait of a LoraMagics instance expected any of ['auto', 'widget', 'static', 'text']"),
    ("refresh_rate = 10", "'refresh_rate' trait of a LoraMagics instance should not be greater than 5.0"),
    ("default_r = 0", "'default_r' trait of a LoraMagics instance should not be less than 1"),
    ("default_alpha = -1", "LoraMagics.default_alpha must be positive; got -1"),
])
def test_invalid_value_is_one_clear_error_and_changes_nothing(notebook, caplog, line, message):
    with caplog.at_level(logging.ERROR):
        config(notebook, f"LoraMagics.{line}")
    assert [r.getMessage() for r in caplog.records if message in r.getMessage()] != []
    assert all("\n" not in r.getMessage() for r in caplog.records)
    assert lora_magics(notebook).settings() == NotebookSettings()
    notebook.run_line_magic("reload_ext", "lora_nb")  # the refused value does not break loading again
    assert lora_magics(notebook).settings() == NotebookSettings()


def test_settings_survive_reloading_the_extension(notebook):
    config(notebook, "LoraMagics.default_r = 2")
    notebook.run_line_magic("reload_ext", "lora_nb")
    assert lora_magics(notebook).default_r == 2
    notebook.run_line_magic("lora", "attach model --targets 0")
    assert lora_config(notebook).r == 2
    lora_nb.load_ipython_extension(notebook)  # loading again by hand adds nothing twice
    assert sum(isinstance(c, LoraMagics) for c in notebook.configurables) == 1
    assert len(notebook.Completer.custom_matchers) == 1 and lora_magics(notebook).default_r == 2


def test_ui_setting_and_the_lines_ui_option(notebook):
    notebook.run_line_magic("lora", "attach model --targets 0,2 --r 4")
    assert isinstance(notebook.run_line_magic("lora", "toggle model"), str)  # a terminal: text by default
    config(notebook, "LoraMagics.ui = 'widget'")
    assert isinstance(notebook.run_line_magic("lora", "toggle model"), ipywidgets.Widget)
    assert isinstance(notebook.run_line_magic("lora", "toggle model --ui text"), str)
    report = notebook.run_line_magic("lora", "spectrum model --ui static")
    assert report.figures and "default" in report.text
    with pytest.raises(UsageError, match="argument --ui: invalid choice: 'fancy'"):
        notebook.run_line_magic("lora", "toggle model --ui fancy")


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_device_setting_is_trains_default(notebook, caplog, monkeypatch):
    notebook.run_line_magic("lora", "attach model --targets 0,2 --r 4")
    with caplog.at_level(logging.ERROR):  # a device this machine lacks is refused when set, not at every run
        config(notebook, "LoraMagics.device = 'cuda'")
        config(notebook, "LoraMagics.device = 'tpu'")
    assert [r.getMessage() for r in caplog.records] == [
        "LoraMagics.device: device `cuda` is not available here; use `device=\"auto\"` or `device=\"cpu\"`",
        "LoraMagics.device: device must be auto, cpu, cuda[:N] or mps; got `tpu`"]
    assert lora_magics(notebook).device == "auto"
    config(notebook, "LoraMagics.device = 'cpu'")
    run = notebook.run_line_magic("lora", "train model --data pairs --steps 2")
    assert run.done and run.step == 2 and run.device.type == "cpu"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)  # a GPU machine: `cuda` is accepted ...
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    config(notebook, "LoraMagics.device = 'cuda'")
    assert lora_magics(notebook).device == "cuda"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)  # ... and every verb that trains uses it
    for line in ("train model --data pairs --steps 2", "vs-full model --data pairs --steps 2"):
        with pytest.raises(UsageError, match="device `cuda` is not available here"):
            notebook.run_line_magic("lora", line)


def test_background_and_refresh_rate_in_a_notebook(notebook, monkeypatch):
    monkeypatch.setattr(notebook, "kernel", SimpleNamespace(), raising=False)  # seen as a Jupyter kernel
    notebook.run_line_magic("lora", "attach model --targets 0,2 --r 4")
    config(notebook, "LoraMagics.refresh_rate = 2")
    run = notebook.run_line_magic("lora", "train model --data pairs --steps 3")
    run.wait(timeout=60)
    assert run.background and run.step == 3
    assert [c.throttle.interval for c in run.callbacks if hasattr(c, "throttle")] == [0.5]
    config(notebook, "LoraMagics.background = False")
    run = notebook.run_line_magic("lora", "train model --data pairs --steps 3")
    assert not run.background and run.done and run.step == 3  # the cell waited, as with --wait


@pytest.mark.parametrize("verb", ["train", "toggle", "spectrum", "weights", "similarity", "compare", "vs-full",
                                  "dashboard"])
def test_every_view_verb_takes_ui(notebook, verb):
    with pytest.raises(UsageError, match=r"argument --ui: invalid choice: 'fancy' \(choose from"):
        notebook.run_line_magic("lora", f"{verb} model --ui fancy")
