"""The live training dashboard: bounded widget traffic (G22), working buttons, errors shown, a static picture."""

from __future__ import annotations

import json
import time

import comm
import numpy as np
import pytest
import torch
from helpers import classification_pairs, mlp_with_lora

import lora_nb
from lora_nb.core.training.run import TrainRun, TrainSettings
from lora_nb.viz.training import SERIES, history_figure
from lora_nb.widgets.live import LiveDashboard


class CountingComm(comm.DummyComm):
    """A widget comm that records every message it would send to the frontend."""

    log: list = []

    def publish_msg(self, msg_type, data=None, metadata=None, buffers=None, **keys):
        size = sum(memoryview(b).nbytes for b in buffers or ())
        state = (data or {}).get("state", {})
        CountingComm.log.append({"comm": self.comm_id, "keys": list(state), "state": state,
                                 "bytes": len(json.dumps(data, default=str)) + size, "buffer_bytes": size})


@pytest.fixture
def wire(monkeypatch):
    CountingComm.log = []
    monkeypatch.setattr(comm, "create_comm", lambda *a, **k: CountingComm(*a, **k))
    return CountingComm.log


def plot_updates(log, figure):
    """Messages that change the plot's data (plotly's restyle/update); the rest is plotly's bookkeeping."""
    return [m for m in log if m["comm"] == figure.comm.comm_id
            and (m["state"].get("_py2js_restyle") or m["state"].get("_py2js_update"))]


class FakeClock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


def synthetic_run(max_steps):
    return TrainRun(torch.nn.Linear(1, 1), "default", TrainSettings(), max_steps, torch.device("cpu"), "cpu",
                    "synthetic records", background=True)


def test_long_history_sends_bounded_throttled_updates(wire):  # G22
    clock = FakeClock()
    n = 100_000
    run = synthetic_run(n)
    dash = LiveDashboard(clock=clock)
    dash.on_train_begin(run)
    start = len(wire)
    for step in range(1, n + 1):
        clock.now += 0.001  # 1 ms per step: 100 s of training
        record = {"step": step, "loss": 3.0 / step ** 0.3, "lr": 1e-4, "grad_norm": 1.0, "samples_per_s": 900.0,
                  "memory_mb": 400.0, "time": clock.now}
        run.history.append(record)
        dash.on_step_end(run, record)
        if step % 5000 == 0:
            run.evals.append({"step": step, "eval_loss": 2.0, "time": clock.now})
            dash.on_evaluate(run, run.evals[-1])
    run.finish("finished", "")
    dash.on_train_end(run)
    updates = plot_updates(wire[start:], dash.figure)
    assert 100 <= len(updates) <= 5 * 100 + 1  # ≤ 5 plot updates per simulated second, plus the final flush
    assert dash.updates == len(updates)
    assert max(m["buffer_bytes"] for m in updates) <= len(SERIES) * 1001 * 8  # ≤ ~1000 points × 8 bytes a trace
    assert all(len(trace.x) <= 1001 for trace in dash.figure.data)
    loss = dash.figure.data[0]
    assert loss.x[-1] == n and loss.x[0] == 1 and np.all(np.diff(loss.x) > 0)  # final state flushed
    assert list(dash.figure.data[2].x) == list(range(5000, n + 1, 5000))
    assert len(wire[start:]) <= 6 * len(updates) + 10  # per refresh: plotly's 4 messages + progress bar + label


def test_updates_are_throttled_by_time_not_steps(wire):
    clock = FakeClock()
    run = synthetic_run(1000)
    dash = LiveDashboard(clock=clock, interval=0.2)
    dash.on_train_begin(run)
    for step in range(1, 1001):  # 1000 steps in 0.5 s: at most 3 refreshes
        clock.now += 0.0005
        record = {"step": step, "loss": 1.0, "lr": 1e-4, "grad_norm": 1.0, "samples_per_s": 1.0, "time": clock.now}
        run.history.append(record)
        dash.on_step_end(run, record)
    assert dash.updates == 3
    assert dash.progress.value < 1000  # not flushed at every step…
    run.finish("finished", "")
    dash.on_train_end(run)
    assert dash.updates == 4 and dash.progress.value == 1000 and dash.figure.data[0].x[-1] == 1000  # …but at the end


def test_stop_and_pause_buttons_drive_a_background_run(wire):
    model = mlp_with_lora()
    dash = LiveDashboard()
    run = lora_nb.train(model, classification_pairs(), steps=100_000, background=True, callbacks=[dash])
    while run.step < 3:
        time.sleep(0.01)
    assert not dash.stop_button.disabled and not dash.pause_button.disabled
    dash.pause_button.click()
    assert run.state == "paused" and dash.pause_button.description == "Resume"
    time.sleep(0.3)
    held = run.step
    time.sleep(0.3)
    assert run.step == held  # nothing trains while paused
    dash.pause_button.click()
    assert run.state == "running" and dash.pause_button.description == "Pause"
    while run.step < held + 2:
        time.sleep(0.01)
    dash.stop_button.click()
    run.wait(10)
    assert run.state == "stopped" and not run._thread.is_alive()
    assert dash.stop_button.disabled and dash.pause_button.disabled
    assert dash.label.value.startswith("stopped: stopped at step")
    assert dash.figure.data[0].x[-1] == run.step and dash.progress.value == run.step
    assert len(plot_updates(wire, dash.figure)) <= 5 * run.seconds + 2


def test_a_failed_run_shows_its_error(wire):
    def bad_loss(model, batch):
        raise ValueError("labels out of range")

    dash = LiveDashboard()
    run = lora_nb.train(mlp_with_lora(), classification_pairs(), loss_fn=bad_loss, steps=5, callbacks=[dash])
    assert run.state == "failed"
    assert "training failed:" in dash.error.value and "ValueError in loss_fn at step 1: labels out of range" in \
        dash.error.value
    assert "<details><summary>traceback</summary>" in dash.error.value and "bad_loss" in dash.error.value


def test_run_end_leaves_a_static_picture(monkeypatch, wire):
    shown, updates = [], []

    class Handle:
        def update(self, obj, raw=False):
            assert raw
            updates.append(obj)

    def fake_display(obj, display_id=None):
        shown.append(obj)
        return Handle() if display_id else None

    monkeypatch.setattr("IPython.display.display", fake_display)
    dash = LiveDashboard(show_on_begin=True)
    run = lora_nb.train(mlp_with_lora(), classification_pairs(), steps=12, eval_data=classification_pairs(16),
                        callbacks=[dash])
    assert shown[0] is dash.widget and len(updates) == 1  # displayed when the run began; filled when it ended
    picture = updates[0]["application/vnd.plotly.v1+json"]["data"]
    assert list(picture[0]["x"]) == list(range(1, 13))
    assert list(picture[2]["y"]) == pytest.approx([e["eval_loss"] for e in run.evals])
    assert updates[0]["text/plain"].startswith("<training curves: 12/12 steps on cpu")
    assert dash._plot.layout.display == "none"  # the live plot gives way to the picture


def test_history_figure_decimates_long_runs():
    history = [{"step": i, "loss": 1.0, "lr": 0.1, "grad_norm": 1.0, "tokens_per_s": 5.0, "samples_per_s": 1.0,
                "memory_mb": 1.0} for i in range(1, 10_001)]
    fig = history_figure(history, max_points=2000)
    assert all(len(t.x) <= 2001 for t in fig.data if t.name != "eval loss")
    assert fig.data[0].x[0] == 1 and fig.data[0].x[-1] == 10_000
    assert fig.layout.annotations[3].text == "tokens/s"


def test_saved_notebook_keeps_the_final_curves():  # a real kernel: dashboard shown, picture left in its cell
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    cells = [
        "%load_ext lora_nb\nimport torch, lora_nb\nfrom torch import nn\n"
        "model = nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 5))\n"
        "x = torch.randn(64, 16); pairs = (x, x[:, :5].argmax(1)); lora_nb.attach(model, r=4);",
        "run = %lora train model --data pairs --steps 40 --lr 1e-2",  # background in a kernel
        "run.wait(60); print(run.state, run.step, run.background)",
        "%lora train model --data pairs --steps 15 --wait",
    ]
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(c) for c in cells])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbclient.NotebookClient(nb, timeout=120, kernel_name="python3", store_widget_state=True).execute()

    def outputs(i):
        return [o for o in nb.cells[i].outputs if o.output_type in ("display_data", "execute_result")]

    assert nb.cells[2].outputs[0].text.strip() == "finished 40 True"
    for cell, steps in ((1, 40), (3, 15)):
        widget, picture = outputs(cell)[:2]
        assert "application/vnd.jupyter.widget-view+json" in widget.data
        assert list(picture.data["application/vnd.plotly.v1+json"]["data"][0]["x"]) == list(range(1, steps + 1))
    assert nb.metadata.widgets["application/vnd.jupyter.widget-state+json"]["state"]  # widget state saved
    assert not outputs(2)  # nothing leaked into the cell that waited
