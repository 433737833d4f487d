"""Where notebooks run: what each front end gets from ``ui=auto`` and where training runs, by simulation —
Colab (a fake ``google.colab`` module: static pictures, training in the cell's own thread, no display message
from another thread), VS Code (its environment variables; ipywidgets 8.1.9 falls back to static), JupyterLab /
Notebook 7 and Kaggle (widgets, background), terminals (text)."""

from __future__ import annotations

import sys
import threading
import types

import pytest
from helpers import gpt2_lora, token_items

from lora_nb import frontend
from lora_nb.frontend import detect, resolve_ui

CLEAN = {"PATH": "/usr/bin"}  # a kernel's environment outside VS Code
VSCODE = {"PATH": "/usr/bin", "VSCODE_PID": "4242", "VSCODE_CWD": "/home/me"}
VSCODE_WSL = {"PATH": "/usr/bin", "VSCODE_CWD": "/home/me"}  # VS Code over WSL / remote: no VSCODE_PID


@pytest.fixture
def no_vscode(monkeypatch):
    for name in frontend.VSCODE_VARIABLES:
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def colab(monkeypatch, no_vscode):
    """Google Colab as lora_nb sees it: the ``google.colab`` module is imported."""
    monkeypatch.setitem(sys.modules, "google.colab", types.ModuleType("google.colab"))
    monkeypatch.setattr(frontend, "_said", set())


def with_ipywidgets(monkeypatch, version):
    monkeypatch.setattr(frontend, "ipywidgets_version", lambda: version)


def test_each_front_end_gets_its_view_mode_and_training_thread(monkeypatch, no_vscode):
    terminal, lab = detect(kernel=False), detect(kernel=True, environ=CLEAN)
    assert (terminal.name, terminal.auto_ui, terminal.background) == ("terminal", "text", False)
    assert (lab.name, lab.auto_ui, lab.background, lab.view_note, lab.train_note) == ("jupyter", "widget", True, "", "")
    for env in (VSCODE, VSCODE_WSL):
        with_ipywidgets(monkeypatch, "8.1.8")
        assert detect(kernel=True, environ=env) == frontend.FrontEnd("vscode", True, "widget", True)
        with_ipywidgets(monkeypatch, "8.1.9")
        broken = detect(kernel=True, environ=env)
        assert (broken.name, broken.auto_ui, broken.background) == ("vscode", "static", True)
        assert "microsoft/vscode-jupyter#17504" in broken.view_note
        assert "`pip install ipywidgets==8.1.8`" in broken.view_note
    with_ipywidgets(monkeypatch, "7.7.1")  # Colab's
    monkeypatch.setitem(sys.modules, "google.colab", types.ModuleType("google.colab"))
    colab = detect(kernel=True, environ=VSCODE)  # Colab wins over anything else in the environment
    assert (colab.name, colab.auto_ui, colab.background) == ("colab", "static", False)
    assert "googlecolab/colabtools#3373" in colab.train_note and "interrupt button" in colab.train_note
    assert resolve_ui("widget", kernel=True) == "widget" and resolve_ui("TEXT", kernel=True) == "text"
    monkeypatch.undo()
    import ipywidgets

    assert frontend.ipywidgets_version() == ipywidgets.__version__  # the one this kernel imports


def test_vscode_with_ipywidgets_8_1_9_says_once_why_views_are_static(ip, monkeypatch, capsys):
    monkeypatch.setattr(frontend, "_said", set())
    monkeypatch.setattr(ip, "kernel", types.SimpleNamespace(), raising=False)
    monkeypatch.setenv("VSCODE_PID", "4242")
    with_ipywidgets(monkeypatch, "8.1.9")
    ip.user_ns["model"] = gpt2_lora()
    shown = [ip.run_line_magic("lora", "toggle model") for _ in range(2)]
    assert all(isinstance(view, str) for view in shown)  # the static panel, not a widget
    err = capsys.readouterr().err
    assert err.count("microsoft/vscode-jupyter#17504") == 1 and "pip install ipywidgets==8.1.8" in err
    monkeypatch.setattr(frontend, "_said", set())
    assert not isinstance(ip.run_line_magic("lora", "toggle model --ui widget"), str)  # asked for: no note
    assert "17504" not in capsys.readouterr().err


class Published:
    """Every display message the shell publishes, with the thread that sent it."""

    def __init__(self, shell, monkeypatch):
        self.messages = []
        publish = shell.display_pub.publish

        def record(data, metadata=None, *args, **kwargs):
            self.messages.append((threading.current_thread(), kwargs.get("update", False), sorted(data)))
            return publish(data, metadata, *args, **kwargs)

        monkeypatch.setattr(shell.display_pub, "publish", record)

    @property
    def threads(self):
        return {thread for thread, _, _ in self.messages}


def interrupt_at(call):
    """``loss_fn(model, batch)`` that is interrupted (as by the kernel's interrupt button) in training call ``call``."""
    calls = [0]

    def loss_fn(model, batch):
        if model.training:
            calls[0] += 1
            if calls[0] == call:
                raise KeyboardInterrupt
        return model(**batch).loss

    return loss_fn


def test_colab_trains_in_the_cell_and_sends_every_update_from_its_thread(ip, colab, monkeypatch, capsys):
    monkeypatch.setattr(ip, "kernel", types.SimpleNamespace(), raising=False)  # a kernel (nothing sent over it here)
    published = Published(ip, monkeypatch)
    ip.user_ns.update(model=gpt2_lora(), items=token_items(32), stop_at_7=interrupt_at(7))
    ip.run_line_magic("config", "LoraMagics.refresh_rate = 5")
    run = ip.run_line_magic("lora", "train model --data items --steps 40 --batch-size 2 --lr 1e-2")
    assert run.state == "finished" and run._thread is None  # trained in the cell's own thread
    assert published.threads == {threading.main_thread()}
    pictures = [m for m in published.messages if "image/svg+xml" in m[2]]
    assert len(pictures) >= 2 and not pictures[0][1] and all(update for _, update, _ in pictures[1:])  # one output
    assert not any("application/vnd.jupyter.widget-view+json" in m[2] for m in published.messages)  # no widgets
    err = capsys.readouterr().err
    assert err.count("googlecolab/colabtools#3373") == 1 and "interrupt button" in err
    stopped = ip.run_line_magic("lora", "train model --data items --loss stop_at_7 --steps 40 --batch-size 2")
    assert stopped.state == "stopped" and stopped.step == 6 and "interrupted at step 6/40" in stopped.message
    assert "colabtools" not in capsys.readouterr().err  # said at the first train only


def test_colab_still_trains_in_the_background_when_asked_and_says_updates_may_not_show(ip, colab, monkeypatch,
                                                                                       capsys):
    monkeypatch.setattr(ip, "kernel", types.SimpleNamespace(), raising=False)
    ip.user_ns.update(model=gpt2_lora(), items=token_items(16))
    run = ip.run_line_magic("lora", "train model --data items --steps 6 --batch-size 2 --background --ui text")
    assert run._thread is not None and run.wait(60).state == "finished"
    err = capsys.readouterr().err
    assert "Colab may not show its updates" in err and "%lora stop MODEL" in err


STORY = [
    "%load_ext lora_nb\nimport ipywidgets, torch, lora_nb\nfrom torch import nn\ntorch.manual_seed(0)\n"
    "model = nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 5))\n"
    "x = torch.randn(64, 16); pairs = (x, x[:, :5].argmax(1)); lora_nb.attach(model, r=4)\n"
    "print(ipywidgets.__version__)",
    "run = %lora train model --data pairs --steps 30 --lr 1e-2",  # background, live widgets
    "run.wait(60); print(run.state, run.step)",
    "%lora toggle model",
    "%lora spectrum model",
    "%lora history model",
    "%lora dashboard model",
    "%lora off model\n%lora on model\n%lora status model",
]


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_a_notebook_story_runs_in_a_real_kernel_with_the_ipywidgets_on_its_path(tmp_path):
    """Attach, train live, toggle, spectrum, history and the dashboard in a kernel that imports the ipywidgets
    this test does (CI runs it once more with ipywidgets 7.7.1 first on PYTHONPATH, as in Colab)."""
    import ipywidgets
    import nbformat
    from nbclient import NotebookClient

    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(c) for c in STORY])
    NotebookClient(nb, timeout=120, kernel_name="python3", store_widget_state=True, allow_errors=True,
                   resources={"metadata": {"path": str(tmp_path)}}).execute()
    errors = [f"cell {i}: {o.ename}: {o.evalue}" for i, c in enumerate(nb.cells) for o in c.outputs
              if o.output_type == "error"]
    assert not errors, errors
    assert nb.cells[0].outputs[0].text.strip() == ipywidgets.__version__  # the kernel imported this one
    assert nb.cells[2].outputs[0].text.strip() == "finished 30"
    training = [o for o in nb.cells[1].outputs if o.output_type == "display_data"][0]
    assert training.data["image/svg+xml"].startswith("<svg")  # the live view became the run's picture
    state = nb.metadata.widgets["application/vnd.jupyter.widget-state+json"]["state"]
    for i in (3, 4, 5, 6):  # each view is a widget whose state reached the front end
        view = [o for o in nb.cells[i].outputs if "application/vnd.jupyter.widget-view+json" in o.get("data", {})]
        assert view, f"cell {i} `{STORY[i]}` showed no widget: {nb.cells[i].outputs}"
        assert view[0].data["application/vnd.jupyter.widget-view+json"]["model_id"] in state
    assert "default" in "".join(o.get("text", "") for o in nb.cells[7].outputs)
