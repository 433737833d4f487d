"""ΔW's spectra over a run: recorded on every run at ≤ 2% of the step time, shown as ranks over steps."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from helpers import classification_pairs, tiny_mlp

import lora_nb
from lora_nb.core.analysis.history import rank_at_energy, rank_map, spectra_history, values_over_steps
from lora_nb.errors import TrainingError


def _trained(steps=200, **kw):
    model = tiny_mlp()
    lora_nb.attach(model, r=4)
    run = lora_nb.train(model, classification_pairs(), steps=steps, lr=5e-2, batch_size=8, background=False, **kw)
    return model, run


def test_every_run_records_spectra_within_two_percent_of_step_time():
    model, run = _trained()
    history = run.spectra_history
    assert history.steps[0] == 1 and history.steps[-1] == 200  # first step measures the cost; the last is kept
    assert len(history.steps) >= 3
    assert set(history.modules) == {"0", "2", "4"}
    overhead = history.seconds / run.seconds
    assert overhead <= 0.02, f"recording took {overhead:.1%} of the run"
    # the recorded values are the spectra of the adapter at that moment: the last one is today's
    now = lora_nb.spectra(model)
    np.testing.assert_allclose(history.values["0"][-1], now["0"], rtol=1e-9)
    assert history.values["0"][0][0] < history.values["0"][-1][0]  # ΔW grew from ~0 after one step


def test_fixed_spacing_and_off():
    _, run = _trained(steps=10, spectra_every=3)
    assert run.spectra_history.steps == [3, 6, 9, 10]
    model, run = _trained(steps=5, spectra_every=0)
    assert len(run.spectra_history) == 0
    with pytest.raises(TrainingError, match="recorded no spectra"):
        spectra_history(model)


def test_rank_map_and_values_over_steps():
    _, run = _trained(steps=30, spectra_every=5)
    effective = rank_map(run.spectra_history)
    assert effective.ranks.shape == (3, 6) and effective.steps == [5, 10, 15, 20, 25, 30]
    assert np.all((effective.ranks >= 1) & (effective.ranks <= 4))
    energy = rank_map(run.spectra_history, "energy", 0.9)
    assert set(np.unique(energy.ranks)) <= {1.0, 2.0, 3.0, 4.0}
    sigma = values_over_steps(run.spectra_history, "4")
    assert sigma.shape == (6, 4)  # σ₁…σ₄ at each of the 6 recorded steps


def test_rank_at_energy_counts_the_top_values_holding_the_share():
    assert rank_at_energy(np.array([1.0, 1.0, 1.0, 1.0]), 0.9) == 4
    assert rank_at_energy(np.array([3.0, 1.0, 0.1]), 0.85) == 1  # 9 / 10.01 = 0.899
    assert rank_at_energy(np.array([3.0, 1.0, 0.1]), 0.95) == 2
    assert rank_at_energy(np.zeros(3)) == 0
    assert rank_at_energy(torch.ones(2).numpy(), 0.5) == 1


def test_history_view_follows_a_background_run_and_switches_module_and_measure():
    from lora_nb.widgets.history import HistoryView

    model = tiny_mlp()
    lora_nb.attach(model, r=4)
    run = lora_nb.train(model, classification_pairs(), steps=40, lr=5e-2, batch_size=8, background=True,
                        spectra_every=4)
    view = HistoryView(run, interval=0.0)
    run.wait()
    assert view.heatmap.figure.data[0].z.shape == (3, 10)  # 3 modules × steps 4, 8, …, 40
    assert list(view.heatmap.figure.data[0].x) == list(range(4, 41, 4))
    view.module.value = "4"
    lines = view.lines.figure.data
    assert len(lines) == 4 and lines[0].name == "σ1"
    np.testing.assert_allclose(lines[0].y[-1], lora_nb.spectra(model)["4"][0], rtol=1e-9)
    view.measure.value = "energy"
    z = view.heatmap.figure.data[0].z
    assert set(np.unique(z)) <= {1.0, 2.0, 3.0, 4.0} and "90%" in view.heatmap.figure.layout.title.text
    assert "10 recorded steps" in view.note.value


def test_history_verb_in_a_terminal_shell(ip):
    model, _ = _trained(steps=20, spectra_every=5)
    ip.user_ns["model"] = model
    report = ip.run_line_magic("lora", "history model --module 2")
    assert "4 recorded steps" in repr(report) and repr(report).count("→") == 6  # 3 modules × (rank, σ₁)
    heat, lines = report.figures
    assert list(heat.data[0].x) == [5, 10, 15, 20] and lines.layout.title.text.startswith("2:")
