"""The AdapterPanel driven through its widgets, following changes made in code, refusing during training."""

from __future__ import annotations

import copy
from types import SimpleNamespace

import pytest
import torch
from helpers import make_b_nonzero, run, sample_inputs, tiny_llama

import lora_nb
from lora_nb.core import find
from lora_nb.widgets.toggle import AdapterPanel


@pytest.fixture
def setup():
    """A tiny Llama with adapters `one` and `two` (B ≠ 0) and the outputs each should give."""
    model = tiny_llama()
    x = sample_inputs(model)
    base = run(model, x)
    lora_nb.attach(model, name="one", r=4)
    lora_nb.attach(model, name="two", r=4)
    make_b_nonzero(model, "one", 0.3)
    make_b_nonzero(model, "two", 0.5)
    outputs = {"two": run(model, x)}
    lora_nb.enable(model, "one")
    outputs["one"] = run(model, x)
    return model, x, base, outputs


def shown(panel):
    return {name: b.value for name, b in panel.toggles.items()}


def test_widgets_switch_the_model(setup):
    model, x, base, outputs = setup
    panel = AdapterPanel(model)
    assert shown(panel) == {"one": True, "two": False}
    assert "active: <b>one</b> (on)" in panel.active_label.value
    panel.toggles["two"].value = True  # turning one on makes it the active adapter
    assert find(model).active == "two" and torch.equal(run(model, x), outputs["two"])
    assert shown(panel) == {"one": False, "two": True}
    panel.toggles["two"].value = False  # turning the active one off disables adapters
    assert torch.equal(run(model, x), base)
    assert shown(panel) == {"one": False, "two": False} and "(off)" in panel.active_label.value
    panel.toggles["one"].value = True
    assert torch.equal(run(model, x), outputs["one"])
    panel.strength.value = 0.0
    torch.testing.assert_close(run(model, x), base, rtol=0, atol=1e-6)
    assert lora_nb.core.adapters.switch.strength(model) == 0.0  # read back from peft's scaling
    panel.strength.value = 1.0
    assert torch.equal(run(model, x), outputs["one"])


def test_merge_and_unmerge_buttons(setup):
    model, x, base, outputs = setup
    before = {k: v.clone() for k, v in model.state_dict().items()}
    panel = AdapterPanel(model)
    assert panel.unmerge_button.disabled and not panel.merge_button.disabled
    panel.merge_button.click()
    assert "merged: one" in panel.merged_label.value and panel.strength.disabled
    assert (run(model, x) - outputs["one"]).abs().max() < 1e-5
    panel.unmerge_button.click()
    assert panel.merged_label.value == "merged: no"
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())


def test_panel_follows_changes_made_in_code_and_magics(setup, ip):
    model, x, base, outputs = setup
    panel = AdapterPanel(model)
    lora_nb.enable(model, "two")
    assert shown(panel) == {"one": False, "two": True}
    ip.user_ns["model"] = model
    ip.run_line_magic("lora", "off model")
    assert shown(panel) == {"one": False, "two": False}
    ip.run_line_magic("lora", "attach model --name three --r 2")
    assert list(panel.toggles) == ["one", "two", "three"] and shown(panel)["three"]
    ip.run_line_magic("lora", "merge model")
    assert "merged: three" in panel.merged_label.value
    lora_nb.core.adapters.switch.set_strength(model, 1.5, adapter="one")
    lora_nb.enable(model, "one")
    assert panel.strength.value == 1.5
    lora_nb.detach(model)
    assert "removed" in panel.status_line.value and panel.toggles["one"].disabled


def test_panel_refuses_changes_while_training(setup):
    model, x, base, outputs = setup
    panel = AdapterPanel(model)
    find(model).run = SimpleNamespace(state="running")
    panel.toggles["two"].value = True
    assert shown(panel) == {"one": True, "two": False}  # reverted
    assert "refused: training is running; stop it first" in panel.status_line.value
    panel.toggles["one"].value = False
    assert shown(panel)["one"] and torch.equal(run(model, x), outputs["one"])
    panel.strength.value = 0.3
    assert panel.strength.value == 1.0
    panel.merge_button.click()
    assert "refused" in panel.status_line.value and panel.merged_label.value == "merged: no"
    state = panel.widget.get_state()
    assert state["children"]  # a real widget tree, not just Python objects


def test_toggle_magic_without_widget_frontend_prints_text(ip, setup):  # G23
    model = setup[0]
    ip.user_ns["model"] = model
    text = ip.run_line_magic("lora", "toggle model")
    assert isinstance(text, str) and "one *" in text and "strength of `one`: 1.00" in text
    assert "merged: no" in text


def test_toggle_magic_in_a_kernel_shows_the_panel(ip, setup, monkeypatch):
    model = setup[0]
    ip.user_ns["model"] = model
    monkeypatch.setattr("lora_nb.cmd.router.Context.widgets", property(lambda self: True))
    widget = ip.run_line_magic("lora", "toggle model")
    panel = widget._lora_panel
    assert panel in find(model).listeners
    panel.toggles["two"].value = True
    assert find(model).active == "two"
    bundle = widget._repr_mimebundle_()  # the widget, and the adapter table for tools without widgets
    assert "application/vnd.jupyter.widget-view+json" in bundle and "two" in bundle["text/html"]
    copy.copy(panel)  # the panel is an ordinary object (no hidden global state)
