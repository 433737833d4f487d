"""ΔW's spectra over a run: recorded on every run at ≤ 1% of the step time, shown as ranks over steps."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from helpers import classification_pairs, tiny_mlp

import lora_nb
from lora_nb.core.analysis.learned.history import rank_at_energy, rank_map, spectra_history, values_over_steps
from lora_nb.errors import TrainingError


def _trained(steps=200, **kw):
    model = tiny_mlp()
    lora_nb.attach(model, r=4)
    run = lora_nb.train(model, classification_pairs(), steps=steps, lr=5e-2, batch_size=8, background=False, **kw)
    return model, run


def test_every_run_records_spectra_and_keeps_the_last_step():
    # how often it records in between is the budget's business (exact, with an injected clock, below)
    model, run = _trained(steps=200)
    history = run.spectra_history
    assert history.steps[0] == 1 and history.steps[-1] == 200  # first step measures the cost; the last is kept
    assert set(history.modules) == {"0", "2", "4"}
    # the recorded values are the spectra of the adapter at that moment: the last one is today's
    now = lora_nb.spectra(model)
    np.testing.assert_allclose(history.values["0"][-1], now["0"], rtol=1e-9)
    assert history.values["0"][0][0] < history.values["0"][-1][0]  # ΔW grew from ~0 after one step


def test_recording_spaces_itself_to_stay_within_its_budget_of_the_step_time():
    """With an injected clock each recording costs exactly 1/512 s and each step 1/64 s (binary fractions: the
    sums are exact). Budget 1/32: after k recordings the next one waits until (k + 2)/512 ≤ step/2048 — one in
    reserve for the last step — so recordings fall at steps 1, 12, 16, 20, …"""
    from lora_nb.core.training.longrun.spectra_history import SpectraRecorder
    from lora_nb.core.training.run import TrainRun, TrainSettings

    model = tiny_mlp()
    lora_nb.attach(model, r=4)
    ticks = iter(range(10_000))
    recorder = SpectraRecorder(budget=1 / 32, clock=lambda: next(ticks) / 512)  # one tick per clock read
    run = TrainRun(model, "default", TrainSettings(), 100, torch.device("cpu"), "cpu", "records")
    recorder.on_train_begin(run)
    for step in range(1, 101):
        run.history.append({"step": step, "seconds": 1 / 64})
        recorder.on_step_end(run, run.history[-1])
    recorder.on_train_end(run)
    history = run.spectra_history
    assert history.steps == [1, *range(12, 101, 4)]
    assert history.seconds == len(history.steps) / 512 <= (1 / 32) * (100 / 64)


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


def test_history_view_draws_a_background_run_live_and_switches_module_and_measure():
    from lora_nb.widgets.history import HistoryView

    model = tiny_mlp()
    lora_nb.attach(model, r=4)
    # no interval, byte or time limit; given to train: it follows the run from step 1
    view = HistoryView(interval=0.0, byte_rate=float("inf"), share=None)
    run = lora_nb.train(model, classification_pairs(), steps=40, lr=5e-2, batch_size=8, background=True,
                        spectra_every=4, callbacks=[view])
    run.wait()
    assert view.run is run and view.drawn == 10
    assert view.heatmap.draws == 10  # once per new record (each changes the map), while the run trained
    assert view.redraws == 10  # steps without a new record redraw nothing; the end adds no new picture
    svg = view.heatmap.value
    assert svg.count("<image") == 1 and "data:image/png;base64," in svg  # the whole map: one PNG
    assert ">step</text>" in svg and ">module</text>" in svg and ">rank</text>" in svg  # axis and colour-bar titles
    assert "<title>4<br>" not in svg and "<title>4\nstep 40: " in svg  # hover text of a cell
    assert view.heatmap.figure.data[0].z.shape == (3, 10)  # 3 modules × steps 4, 8, …, 40
    assert list(view.heatmap.figure.data[0].x) == list(range(4, 41, 4))
    view.module.value = "4"
    assert view.lines.value.count("<path ") == 4  # one line per σ
    lines = view.lines.figure.data
    assert len(lines) == 4 and lines[0].name == "σ1"
    np.testing.assert_allclose(lines[0].y[-1], lora_nb.spectra(model)["4"][0], rtol=1e-9)
    view.measure.value = "energy"
    z = view.heatmap.figure.data[0].z
    assert set(np.unique(z)) <= {1.0, 2.0, 3.0, 4.0} and "90%" in view.heatmap.figure.layout.title.text
    assert "10 recorded steps" in view.note.value
    bundle = view._repr_mimebundle_()  # what tools without widgets show, and saved notebooks keep
    assert bundle["text/html"] == view.heatmap.value + view.lines.value == bundle["image/svg+xml"] + view.lines.value
    view.close()
    assert view.heatmap.comm is None and view.widget.comm is None and view not in run.callbacks


def test_history_view_redraws_at_most_once_per_interval_and_within_its_byte_rate():
    from lora_nb.widgets.history import HistoryView

    model = tiny_mlp()
    lora_nb.attach(model, r=4)
    view = HistoryView(interval=2.0, clock=lambda: 0.0)  # a clock that stands still: the interval never passes
    run = lora_nb.train(model, classification_pairs(), steps=20, lr=5e-2, batch_size=8, background=True,
                        spectra_every=2, callbacks=[view])
    run.wait()
    assert len(run.spectra_history) == 10
    assert view.redraws == 2 and view.drawn == 10  # the first record, then the whole run when it ended


def test_history_view_keeps_what_it_sends_within_its_byte_rate():
    from lora_nb.core.training.run import TrainRun, TrainSettings
    from lora_nb.widgets.history import HistoryView

    run = TrainRun(torch.nn.Linear(1, 1), "default", TrainSettings(), 60, torch.device("cpu"), "cpu", "records")
    now = [0.0]
    view = HistoryView(run, interval=1.0, byte_rate=2_000, clock=lambda: now[0])
    rng = np.random.default_rng(0)
    for step in range(1, 61):  # a record every step, a step every second
        for name in ("a", "b"):
            run.spectra_history.values.setdefault(name, []).append(np.sort(rng.random(16))[::-1])
        run.spectra_history.steps.append(step)
        now[0] = float(step)
        view.on_step_end(run, {"step": step})
    per_redraw = view.sent_bytes / view.redraws
    assert per_redraw > 2_000  # 16 σ lines: more than a second's worth of bytes each time
    assert view.redraws < 60 * 2_000 / per_redraw + 2  # so it redraws less often than every record
    assert view.sent_bytes <= 2_000 * 60 + per_redraw * 2


def test_a_view_of_a_run_without_spectra_says_so():
    from lora_nb.widgets.history import HistoryView

    _, run = _trained(steps=3, spectra_every=0)
    view = HistoryView(run)
    assert view.heatmap.value == "" and "recorded no spectra" in view.note.value


def test_rank_map_spec_draws_one_png_with_module_rows_top_down():
    from lora_nb.core.analysis.learned.history import RankMap
    from lora_nb.viz.analysis import rank_map_spec
    from lora_nb.viz.svg import render

    ranks = RankMap(["model.layers.0.q", "model.layers.1.q"], [1, 7, 20], np.array([[1.0, 2, 3], [4, 5, 6]]),
                    "effective rank")
    svg = render(rank_map_spec(ranks))
    assert svg.count("<image") == 1 and "effective rank of ΔW over the run" in svg
    assert "<title>0.q\nstep 7: 2.00</title>" in svg  # steps are columns, one per recording
    labels = [svg.index(f">{name}</text>") for name in ("0.q", "1.q")]
    y = [float(svg[:i].rsplit("y='", 1)[1].split("'")[0]) for i in labels]
    assert y[0] < y[1]  # the first module on top


def test_history_verb_in_a_terminal_shell(ip):
    model, _ = _trained(steps=20, spectra_every=5)
    ip.user_ns["model"] = model
    report = ip.run_line_magic("lora", "history model --module 2")
    assert "4 recorded steps" in repr(report) and repr(report).count("→") == 6  # 3 modules × (rank, σ₁)
    heat, lines = report.figures
    assert list(heat.data[0].x) == [5, 10, 15, 20] and lines.layout.title.text.startswith("2:")


def test_history_view_keeps_its_drawing_within_five_percent_of_the_wall_time():
    from lora_nb.core.training.run import TrainRun, TrainSettings
    from lora_nb.widgets.history import HistoryView

    run = TrainRun(torch.nn.Linear(1, 1), "default", TrainSettings(), 200, torch.device("cpu"), "cpu", "records")
    now = [0.0]
    view = HistoryView(run, interval=1.0, byte_rate=1e12, clock=lambda: now[0])
    draw = view.heatmap.draw

    def slow_draw(spec):  # each redraw takes a second of the training thread's time
        now[0] += 1.0
        return draw(spec)

    view.heatmap.draw = slow_draw
    for step in range(1, 201):  # a record every step, a step every second
        run.spectra_history.values.setdefault("a", []).append(np.array([float(step), 1.0]))
        run.spectra_history.steps.append(step)
        now[0] += 1.0
        view.on_step_end(run, {"step": step})
    drawing, wall = view.redraws * 1.0, now[0]
    assert 3 <= view.redraws and drawing / wall <= 0.05 + 1 / wall, (view.redraws, wall)
