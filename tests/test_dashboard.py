"""``%lora dashboard``: a user who never types another magic attaches, trains, stops, toggles and looks inside."""

from __future__ import annotations

import threading
from types import SimpleNamespace

import pytest
import torch
from helpers import run, tiny_mlp, wait_until

import lora_nb
from lora_nb.core import registry


def pairs(n=64):
    g = torch.Generator().manual_seed(3)
    x = torch.randn(n, 16, generator=g)
    return x, x[:, :5].argmax(1)


def training_threads():
    return [t for t in threading.enumerate() if t.name.startswith("lora_nb-train") and t.is_alive()]


@pytest.fixture
def notebook(ip, monkeypatch):
    """The `ip` shell seen as a Jupyter kernel (widgets shown), with a tiny MLP and data in its namespace."""
    monkeypatch.setattr(ip, "kernel", SimpleNamespace(), raising=False)
    ip.user_ns.update(model=tiny_mlp(), pairs=pairs(), x=torch.randn(4, 16))
    return ip


def open_dashboard(ip):
    widget = ip.run_line_magic("lora", "dashboard model")
    return widget._lora_dashboard


def test_attach_train_stop_toggle_and_spectrum_from_the_widgets(notebook):
    model, x = notebook.user_ns["model"], notebook.user_ns["x"]
    base = run(model, x)
    dash = open_dashboard(notebook)
    assert "has no LoRA adapter yet" in dash.status_html.value
    dash.attach_r.value, dash.attach_targets.value = 4, "0,2"
    dash.attach_button.click()
    assert [name for name, _ in registry.find(model).peft.named_parameters() if "lora_A" in name]
    assert "2 adapted modules" in dash.status_html.value

    dash.tabs.selected_index = 2  # Train: a short real run in the background
    dash.names["data"].value, dash.steps.value, dash.lr.value, dash.batch_size.value = "pairs", 5, 0.05, 16
    dash.start_button.click()
    first = dash.run.wait(30)
    assert first.state == "finished" and first.step == 5 and first.settings.lr == 0.05
    assert first.settings.batch_size == 16 and dash.live.children[0] is not None
    wait_until(lambda: not training_threads())
    assert not dash.start_button.disabled and dash.stop_button.disabled
    assert "finished" in dash.train_message.value
    trained = run(model, x)
    assert not torch.equal(trained, base)

    dash.steps.value = 1_000_000  # a long run, stopped from the dashboard
    dash.start_button.click()
    long = dash.run
    assert long is not first and dash.start_button.disabled and not dash.stop_button.disabled
    wait_until(lambda: long.step >= 3)
    assert "training: running" in status_text(dash)
    dash.stop_button.click()
    assert long.state == "stopped" and 3 <= long.step < 1_000_000 and not training_threads()
    assert "stopped at step" in dash.train_message.value and not dash.start_button.disabled

    dash.tabs.selected_index = 1  # Adapters: the toggle panel switches the model
    panel = dash.views["Adapters"]
    on = run(model, x)
    panel.toggles["default"].value = False
    assert torch.equal(run(model, x), base) and "<td>no</td>" in dash.status_html.value  # status followed
    panel.toggles["default"].value = True
    assert torch.equal(run(model, x), on)

    dash.tabs.selected_index = 4  # Spectrum: built on first opening, r bars per module
    explorer = dash.views["Spectrum"]
    spectra = lora_nb.spectra(model)
    assert list(explorer.module.options) == ["0", "2"]
    assert len(explorer.bars.figure.data[0].y) == 4 == len(spectra[explorer.module.value])
    assert list(explorer.bars.figure.data[0].y) == pytest.approx(list(spectra[explorer.module.value]), rel=1e-5)
    dash.tabs.selected_index = 3
    assert "Weights" in dash.views


def status_text(dash):
    return dash.status_html.value


def test_form_starts_from_the_last_settings_and_errors_are_one_line(notebook):
    model = notebook.user_ns["model"]
    lora_nb.attach(model, r=2)
    notebook.run_line_magic("lora", "train model --data pairs --steps 3 --lr 0.01 --batch-size 4 --wait")
    dash = open_dashboard(notebook)
    form = (dash.names["data"].value, dash.steps.value, dash.lr.value, dash.batch_size.value)
    assert form == ("pairs", 3, 0.01, 4)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    dash.names["data"].value = "pairz"
    dash.start_button.click()
    message = dash.train_message.value
    assert "no variable <code>pairz</code>; did you mean <code>pairs</code>" in message and "\n" not in message
    dash.names["data"].value = ""
    dash.start_button.click()
    assert "name the variable that holds the training data" in dash.train_message.value
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())
    notebook.run_line_magic("lora", "train model --data pairs --steps 1000000")  # a background run from a magic
    wait_until(lambda: registry.find(model).run.step >= 1)
    dash.tabs.selected_index = 2  # opening the Train tab shows it
    assert dash.start_button.disabled and not dash.stop_button.disabled
    dash.stop_button.click()
    assert registry.find(model).run.state == "stopped" and not training_threads() and not dash.start_button.disabled
    dash.attach_targets.value, dash.attach_name.value = "nothing_here", "second"
    dash.attach_button.click()
    assert "nothing_here" in dash.attach_message.value and registry.find(model).adapters == ["default"]
    lora_nb.detach(model)  # made in code: the dashboard follows
    assert "has no LoRA adapter yet" in dash.status_html.value
    dash.tabs.selected_index = 4
    assert "attach one first" in dash.tabs.children[4].children[0].value and "Spectrum" not in dash.views


def test_history_tab_and_train_tab_show_ranks_over_steps_live_and_follow_each_run(notebook):
    from lora_nb.widgets.dashboard import TABS

    model = notebook.user_ns["model"]
    lora_nb.attach(model, r=4)
    dash = open_dashboard(notebook)
    dash.tabs.selected_index = TABS.index("History")
    page = dash.tabs.children[TABS.index("History")]
    assert "has not been trained yet" in page.children[0].value and "History" not in dash.views

    dash.names["data"].value, dash.steps.value, dash.lr.value, dash.batch_size.value = "pairs", 1_000_000, 0.01, 8
    dash.start_button.click()  # a long run from the Train tab
    first = dash.run
    history, panel = dash.views["History"], dash.live_history  # the tab's view was built when the run started
    assert page.children == (history.widget,) and history.run is first
    assert panel.widget in dash.live_view.panels.children and panel.run is first  # under the live curves
    wait_until(lambda: "<image" in panel.heatmap.value and "<image" in history.heatmap.value)
    assert first.state == "running"  # both drew the heatmap while the run trained
    dash.stop_button.click()
    assert history.drawn == len(first.spectra_history) == panel.drawn  # the whole run once it ended

    notebook.run_line_magic("lora", "train model --data pairs --steps 6 --lr 0.01 --batch-size 8 --wait")
    second = registry.find(model).run
    assert second is not first and history.run is second and history not in first.callbacks
    steps, columns = second.spectra_history.steps, list(history.heatmap.figure.data[0].x)
    assert (columns[0], columns[-1]) == (steps[0], steps[-1]) and history.drawn > 0  # the second run's steps
    dash.close()
    assert history.widget.comm is None and panel.widget.comm is None and panel not in first.callbacks


def test_without_a_widget_frontend_it_prints_the_status(ip):
    ip.user_ns["model"] = model = tiny_mlp()
    text = str(ip.run_line_magic("lora", "dashboard model"))
    assert "has no LoRA adapter yet" in text and "needs a widget front end" in text
    lora_nb.attach(model, r=2)
    text = str(ip.run_line_magic("lora", "dashboard model"))
    assert "trainable" in text and "default" in text and "needs a widget front end" in text
