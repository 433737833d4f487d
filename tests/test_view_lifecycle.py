"""Views release what they hold: opening and closing many leaves widget count and memory bounded."""

from __future__ import annotations

import gc

import numpy as np
import psutil
import pytest
import torch
from helpers import make_b_nonzero, open_widgets, tiny_mlp

import lora_nb
from lora_nb.core import registry
from lora_nb.core.training.run import TrainRun, TrainSettings
from lora_nb.widgets.dashboard import ModelDashboard
from lora_nb.widgets.explorers import SimilarityView, SpectrumExplorer, WeightsExplorer
from lora_nb.widgets.history import HistoryView
from lora_nb.widgets.intruders import IntruderView
from lora_nb.widgets.live import LiveDashboard
from lora_nb.widgets.toggle import AdapterPanel


def live_widgets() -> int:
    gc.collect()
    return len(open_widgets())


def finished_run(steps: int = 20) -> TrainRun:
    """A run that reports ``steps`` steps to its callbacks (no model trains)."""
    run = TrainRun(torch.nn.Linear(1, 1), "default", TrainSettings(), steps, torch.device("cpu"), "cpu",
                   "synthetic records", background=True)
    return run


def watch(live: LiveDashboard, run: TrainRun) -> None:
    live.on_train_begin(run)
    for step in range(1, run.max_steps + 1):
        record = {"step": step, "loss": 1.0 / step, "lr": 1e-3, "samples_per_s": 10.0, "time": step * 0.01}
        run.history.append(record)
        live.on_step_end(run, record)
    run.finish("finished", "")
    live.on_train_end(run)


def recorded_run() -> TrainRun:
    """A run in progress with spectra recorded at two steps."""
    run = finished_run(2)
    run.spectra_history.steps[:] = [1, 2]
    run.spectra_history.values.update({"0": [np.ones(4), np.arange(4.0, 0.0, -1.0)], "2": [np.ones(4), np.ones(4)]})
    return run


def open_and_close_views(model) -> None:
    views = [IntruderView(model, lambda m: 0.0, k=4), SpectrumExplorer(model), WeightsExplorer(model),
             SimilarityView(model, "default", "other"), AdapterPanel(model), ModelDashboard(model),
             HistoryView(recorded_run(), interval=0.0)]
    live = LiveDashboard()
    watch(live, finished_run())
    views[1].follow_run()
    for view in [*views, live]:
        view.close()


@pytest.mark.parametrize("rounds", [2, pytest.param(9, marks=pytest.mark.slow)])  # 8 views a round: 16, 72
def test_views_opened_and_closed_leave_no_widgets_or_listeners(rounds):
    model = tiny_mlp()
    lora_nb.attach(model, r=4)
    lora_nb.attach(model, r=2, name="other")
    lora_nb.enable(model, "default")
    make_b_nonzero(model)
    open_and_close_views(model)  # warm-up: imports, caches
    before, rss_before = live_widgets(), psutil.Process().memory_info().rss
    for _ in range(rounds):
        open_and_close_views(model)
    assert live_widgets() == before  # every widget (and its layout and style) was closed
    views = [v for v in registry.find(model).listeners if type(v).__module__.startswith("lora_nb.widgets")]
    assert views == []  # no closed view still follows the model
    growth = psutil.Process().memory_info().rss - rss_before
    assert growth < 30 * 2**20, f"RSS grew {growth / 2**20:.1f} MiB over {8 * rounds} views"


def test_a_closed_explorer_stops_following_the_run():
    model = tiny_mlp()
    lora_nb.attach(model, r=4)
    session = registry.find(model)
    run = session.run = finished_run(5)
    run.state = "running"
    explorer = SpectrumExplorer(model)
    assert explorer in run.callbacks and explorer.live_run is run
    explorer.close()
    assert explorer not in run.callbacks and explorer.comm is None and explorer.bars.comm is None
    run.state = "finished"
    lora_nb.disable(model)  # a change notice reaches no closed view (it would fail on closed widgets)
    session.run = None
