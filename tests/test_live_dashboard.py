"""The live training dashboard: bounded widget traffic, working buttons, errors shown, a static picture."""

from __future__ import annotations

import json
import time

import comm
import numpy as np
import pytest
import torch
from helpers import classification_pairs, mlp_with_lora, wait_until
from ipywidgets.widgets import widget as widget_module

import lora_nb
from lora_nb.core.training.run import TrainRun, TrainSettings
from lora_nb.viz.svg import render
from lora_nb.viz.training import history_figure
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
    if hasattr(widget_module, "Comm"):  # ipywidgets 7 opens its comms with ipykernel's Comm class
        from ipykernel.comm import Comm

        monkeypatch.setattr(widget_module, "Comm", type("KernelCountingComm", (Comm,),  # "kernel": it sends only then
                                                        {"publish_msg": CountingComm.publish_msg, "kernel": True}))
    return CountingComm.log


def chart_updates(log, chart):
    """Messages that send a new picture of the curves (the chart's SVG; not the widget's opening message)."""
    return [m for m in log if m["comm"] == chart.comm.comm_id and "value" in m["state"]
            and "_model_name" not in m["state"]]


class FakeClock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


def synthetic_run(max_steps):
    return TrainRun(torch.nn.Linear(1, 1), "default", TrainSettings(), max_steps, torch.device("cpu"), "cpu",
                    "synthetic records", background=True)


def test_long_history_sends_bounded_throttled_updates(wire):
    clock = FakeClock()
    n = 100_000
    run = synthetic_run(n)
    dash = LiveDashboard(clock=clock, cost_clock=clock)
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
    updates = chart_updates(wire[start:], dash.chart)
    assert 50 <= len(updates) <= 2 * 100 + 1  # ≤ 2 pictures per simulated second, plus the final one
    assert dash.updates == len(updates)
    assert max(m["bytes"] for m in updates) <= 40_000  # one picture of ~1000-point curves: tens of KB, not MB
    assert sum(m["bytes"] for m in wire[start:]) / 100 <= 30_000  # bytes per second of training, everything counted
    figure = dash.figure
    assert all(len(trace.x) <= 1001 for trace in figure.data)
    loss = figure.data[0]
    assert loss.x[-1] == n and loss.x[0] == 1 and np.all(np.diff(loss.x) > 0)  # final state flushed
    assert list(figure.data[2].x) == list(range(5000, n + 1, 5000))
    assert len(wire[start:]) <= 2 * 4 * 100 + len(updates) + 10  # per 0.25 s: progress bar + label; and pictures


def test_updates_are_throttled_by_time_not_steps(wire):
    clock = FakeClock()
    run = synthetic_run(1000)
    dash = LiveDashboard(clock=clock, cost_clock=clock, interval=0.2, chart_interval=0.2, byte_rate=1e9)
    dash.on_train_begin(run)
    for step in range(1, 1001):  # 1000 steps in 0.5 s: at most 3 refreshes
        clock.now += 0.0005
        record = {"step": step, "loss": 1.0 + step % 7, "lr": 1e-4, "grad_norm": 1.0, "samples_per_s": 1.0,
                  "time": clock.now}
        run.history.append(record)
        dash.on_step_end(run, record)
    assert dash.updates == 3
    assert dash.progress.value < 1000  # not flushed at every step…
    run.finish("finished", "")
    dash.on_train_end(run)
    assert dash.updates == 4 and dash.progress.value == 1000 and dash.figure.data[0].x[-1] == 1000  # …but at the end


def test_redrawing_the_curves_takes_at_most_its_share_of_the_wall_time(wire, monkeypatch):
    from lora_nb.widgets import live

    clock = FakeClock()
    run = synthetic_run(1000)
    dash = LiveDashboard(clock=clock, cost_clock=clock, interval=0.1, chart_interval=0.1, byte_rate=1e9)
    draw = dash.chart.draw

    def slow_draw(spec):  # every picture of the curves costs 10 ms of the training thread's time
        clock.now += 0.01
        return draw(spec)

    monkeypatch.setattr(dash.chart, "draw", slow_draw)
    dash.on_train_begin(run)
    for step in range(1, 1001):  # 100 s of 0.1 s steps
        clock.now += 0.1
        record = {"step": step, "loss": 1.0, "lr": 1e-4, "grad_norm": 1.0, "samples_per_s": 1.0, "time": clock.now}
        run.history.append(record)
        dash.on_step_end(run, record)
    drawing = dash.updates * 0.01
    assert drawing <= live.CHART_SHARE * clock.now * 1.05  # not one picture per 0.1 s (10% of the time)…
    assert dash.updates >= 0.8 * live.CHART_SHARE * clock.now / 0.01  # …but as many as the share allows


def test_the_chart_respects_its_byte_rate(wire):
    clock = FakeClock()
    run = synthetic_run(10_000)
    dash = LiveDashboard(clock=clock, cost_clock=clock, chart_interval=0.01, byte_rate=5_000)  # 5 KB/s: slower than the interval
    dash.on_train_begin(run)
    for step in range(1, 10_001):  # 10 s of training
        clock.now += 0.001
        record = {"step": step, "loss": 1.0 / step + (step % 13) * 1e-3, "lr": 1e-4, "grad_norm": 1.0 + step % 5,
                  "samples_per_s": 1.0, "time": clock.now}
        run.history.append(record)
        dash.on_step_end(run, record)
    sent = sum(m["bytes"] for m in chart_updates(wire, dash.chart))
    last = chart_updates(wire, dash.chart)[-1]["bytes"]
    assert dash.updates >= 3 and sent - last <= 5_000 * 10 * 1.2  # the rate holds, give or take one picture


def test_stop_and_pause_buttons_drive_a_background_run(wire):
    model = mlp_with_lora()
    dash = LiveDashboard()
    started = time.monotonic()
    run = lora_nb.train(model, classification_pairs(), steps=100_000, background=True, callbacks=[dash])
    wait_until(lambda: run.step >= 3, what="3 steps")
    assert not dash.stop_button.disabled and not dash.pause_button.disabled
    dash.pause_button.click()
    assert run.state == "paused" and dash.pause_button.description == "Resume"
    time.sleep(1.0)  # the step in flight when Pause was pressed may still end (slow on a loaded machine)
    held = run.step
    time.sleep(0.3)
    assert run.step == held  # nothing trains while paused
    dash.pause_button.click()
    assert run.state == "running" and dash.pause_button.description == "Pause"
    wait_until(lambda: run.step >= held + 2, what="2 steps after Resume")
    dash.stop_button.click()
    run.wait(10)
    assert run.state == "stopped" and not run._thread.is_alive()
    assert dash.stop_button.disabled and dash.pause_button.disabled
    assert dash.label.value.startswith("stopped at step")  # the state said once, not `stopped: stopped at …`
    assert dash.figure.data[0].x[-1] == run.step and dash.progress.value == run.step
    assert len(chart_updates(wire, dash.chart)) <= 2 * (time.monotonic() - started) + 2  # ≤ 2/s of wall time


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

    def fake_display(obj, raw=False, display_id=None):
        shown.append(obj)
        return Handle() if display_id else None

    monkeypatch.setattr("IPython.display.display", fake_display)
    dash = LiveDashboard(show_on_begin=True)
    widget_id = dash.widget.model_id
    run = lora_nb.train(mlp_with_lora(), classification_pairs(), steps=12, eval_data=classification_pairs(16),
                        callbacks=[dash])
    view = shown[0]["application/vnd.jupyter.widget-view+json"]  # displayed by display id when the run began...
    assert view["model_id"] == widget_id and len(updates) == 1  # ...and replaced when it ended
    picture = updates[0]
    assert picture["text/plain"].startswith("<training curves: 12/12 steps on cpu")
    spec = dash.static_spec()
    assert list(spec["data"][0]["x"]) == list(range(1, 13))
    assert list(spec["data"][2]["y"]) == pytest.approx([e["eval_loss"] for e in run.evals])
    svg = picture["image/svg+xml"]
    assert svg == render(spec) and svg.startswith("<svg") and len(svg) < 30_000
    assert svg.count("<title>eval loss: ") == len(run.evals) >= 1  # each eval point carries its hover text
    assert dash.closed and dash.widget.comm is None and dash.chart.comm is None  # the live widgets are released


def test_best_eval_and_samples_are_shown_when_the_run_has_them(wire):
    run = synthetic_run(10)
    dash = LiveDashboard()
    dash.on_train_begin(run)
    for step in range(1, 11):
        record = {"step": step, "loss": 1.0 / step, "lr": 1e-3, "samples_per_s": 1.0, "time": step * 0.1}
        run.history.append(record)
        dash.on_step_end(run, record)
    run.best = {"step": 6, "eval_loss": 0.25}
    run.samples = [{"step": 5, "prompt": "Once", "text": "Once upon <a> time"}]
    run.finish("finished", "")
    dash.on_train_end(run)
    best = [t for t in dash.spec()["data"] if t["name"] == "best eval"]
    assert best and best[0]["x"] == [6] and best[0]["y"] == [0.25]
    assert "best eval loss 0.25 at step 6" in dash.chart.value
    assert "Once upon &lt;a&gt; time" in dash.samples.value


def test_history_figure_decimates_long_runs():
    history = [{"step": i, "loss": 1.0, "lr": 0.1, "grad_norm": 1.0, "tokens_per_s": 5.0, "samples_per_s": 1.0,
                "memory_mb": 1.0} for i in range(1, 10_001)]
    fig = history_figure(history, max_points=2000)
    assert all(len(t.x) <= 2001 for t in fig.data if t.name != "eval loss")
    assert fig.data[0].x[0] == 1 and fig.data[0].x[-1] == 10_000
    assert fig.layout.annotations[3].text == "tokens/s"


@pytest.mark.slow  # starts a real Jupyter kernel
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
        picture = outputs(cell)[0]  # the live view's output, replaced by the picture of the whole run
        assert "application/vnd.jupyter.widget-view+json" not in picture.data
        assert picture.data["text/plain"].startswith(f"<training curves: {steps}/{steps} steps")
        assert picture.data["image/svg+xml"].startswith("<svg") and "train loss" in picture.data["image/svg+xml"]
    assert len(nbformat.writes(nb)) < 200_000  # kilobytes, with widget state stored
    assert not outputs(2)  # nothing leaked into the cell that waited
