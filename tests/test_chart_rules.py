"""Charts a learner reads at a glance: the reading rules every chart of a trained adapter keeps, checked on the SVG the
renderer draws and on the label boxes it lays out.

Rules: every numeric axis has at least 4 tick labels, all different; whole-number axes get whole-number ticks; no
label sticks out of its picture or lies over another; every chart says what it shows (alternative text); loss goes on
a log axis once it spans more than a decade; the smoothed loss does not lag; the two history charts share their step
axis; a chart that uses a term a learner may not know carries a sentence explaining it.
"""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch

from lora_nb.viz.svg import Canvas, figure_dict, layout_axes, outside, overlapping, render, render_labels


def axes_of(spec: dict) -> dict:
    """The axes the renderer lays out for ``spec``, by name (``x``, ``y2`` …)."""
    d = figure_dict(spec)
    traces = [t for t in d["data"] if t.get("visible", True) is not False]
    return layout_axes(d["layout"], traces, Canvas(d["layout"], traces, None, None))


def used_axes(spec: dict) -> dict:
    refs = {t.get(k, k[0]) for t in figure_dict(spec)["data"] for k in ("xaxis", "yaxis")}
    return {ref: axis for ref, axis in axes_of(spec).items() if ref in refs}


def reading_problems(spec: dict) -> list[str]:
    """Everything that breaks a reading rule in the picture of ``spec``."""
    svg, labels = render_labels(spec)
    width, height = map(float, re.search(r"viewBox='0 0 (\S+) (\S+)'", svg).groups())
    problems = [f"cut off: {t}" for t in outside(labels, width, height)]
    problems += [f"over each other: {a} / {b}" for a, b in overlapping(labels)]
    if not re.search(r"<svg [^>]*role='img' aria-label='[^']{10,}'", svg) or "<title>" not in svg[:svg.index("<rect")]:
        problems.append("no alternative text")
    for ref, axis in used_axes(spec).items():
        if axis.kind == "category":
            continue
        ticks = [label for _, label in axis.ticks()]
        if len(ticks) < 4 or len(set(ticks)) != len(ticks):
            problems.append(f"axis {ref}: ticks {ticks}")
        if (axis.integer or axis.options.get("tickformat") == "d") and axis.kind == "linear" and \
                any(not re.fullmatch(r"-?\d+", t) for t in ticks):
            problems.append(f"whole-number axis {ref}: ticks {ticks}")
    return problems


@pytest.fixture(scope="module")
def trained_bert():
    """A 4-layer BERT classifier (25 adapted modules named like all-MiniLM-L6-v2's), trained 24 steps with evals."""
    from transformers import BertConfig, BertForSequenceClassification

    import lora_nb

    torch.manual_seed(0)
    cfg = BertConfig(num_hidden_layers=4, hidden_size=32, intermediate_size=64, num_attention_heads=2,
                     vocab_size=101, max_position_embeddings=64, num_labels=3)
    model = BertForSequenceClassification(cfg).eval()
    ids = torch.randint(1, 100, (160, 12), generator=torch.Generator().manual_seed(0))
    items = [{"input_ids": i, "labels": int(i[0] % 3)} for i in ids]
    lora_nb.attach(model, r=8)
    run = lora_nb.train(model, items[:128], eval_data=items[128:], steps=24, lr=3e-3, batch_size=8, eval_every=6,
                        background=False)
    return model, run


def every_spec(model, run) -> dict[str, dict]:
    from lora_nb.core.analysis.learned.advisor import advise
    from lora_nb.core.analysis.learned.history import rank_map, spectra_history, values_over_steps
    from lora_nb.core.analysis.learned.spectra import spectra
    from lora_nb.core.analysis.learned.weights import matrices, weights
    from lora_nb.viz.analysis import advice_spec, rank_map_spec, values_over_steps_spec
    from lora_nb.viz.spectra import effective_rank_spec, spectrum_spec
    from lora_nb.viz.training import history_spec
    from lora_nb.viz.weights import histogram_spec, module_specs, norm_map_spec

    result, history = spectra(model), spectra_history(model)
    name = list(result)[0]
    mm = matrices(model, name, max_size=16)  # pooled: 32 × 32 shown as 16 × 16 block averages
    specs = {"training": history_spec(run.history, run.evals, title=f"finished: {run.summary_line()}", best=run.best),
             "spectrum": spectrum_spec(result, name), "ranks": effective_rank_spec(result, name),
             "norm map": norm_map_spec(weights(model)), "histogram": histogram_spec(mm),
             "rank map": rank_map_spec(rank_map(history)), "rank map (energy)": rank_map_spec(rank_map(history, "energy")),
             "σ over steps": values_over_steps_spec(history.steps, values_over_steps(history, name), name,
                                                    history.modules),
             "advice": advice_spec(advise(model))}
    for key, spec in module_specs(mm).items():
        spec["layout"].update(height=300, width=380)  # as the weights explorer draws them
        specs[f"matrix {key}"] = spec
    return specs


def test_every_chart_of_a_trained_adapter_keeps_the_reading_rules(trained_bert):
    model, run = trained_bert
    specs = every_spec(model, run)
    assert {k: reading_problems(s) for k, s in specs.items()} == {k: [] for k in specs}
    # the module names lose only what they all repeat: layer number and part stay, apart
    ranks = render(specs["ranks"])
    assert ">0.attention.self.query</text>" in ranks and ">pooler.dense</text>" in ranks
    assert "rotate(" not in ranks  # one row per module: no slanted names


def test_axes_have_units_and_terms_have_a_sentence(trained_bert):
    from lora_nb.widgets.ui import note_of

    specs = every_spec(*trained_bert)
    for key in ("spectrum", "ranks", "rank map", "σ over steps", "advice", "norm map"):
        assert len(note_of(specs[key])) > 40, key
    assert "effective rank" in note_of(specs["ranks"]) and "min(r, out, in)" in note_of(specs["ranks"])
    assert "Frobenius" in note_of(specs["norm map"])
    assert "--rank-pattern advised" in note_of(specs["advice"])  # how to apply the advice
    assert axes_of(specs["ranks"])["x"].options["title"]["text"] == "rank (directions)"
    for key in specs:  # no literal backticks in any title
        assert "`" not in render(specs[key]), key


def test_weights_axes_count_the_whole_matrix_when_it_is_pooled(trained_bert):
    specs = every_spec(*trained_bert)
    delta = axes_of(specs["matrix ΔW"])
    ticks = [float(label) for _, label in delta["x"].ticks()]
    assert max(ticks) >= 25 and delta["x"].hi > 31  # 32 inputs, though 16 pooled columns are drawn
    assert "ΔW = s·B·A (32×32, block-averaged to 16×16)" in render(specs["matrix ΔW"])


def test_history_charts_share_their_step_axis(trained_bert):
    specs = every_spec(*trained_bert)
    heat, lines = axes_of(specs["rank map"])["x"], axes_of(specs["σ over steps"])["x"]
    assert (heat.p0, heat.p1, heat.lo, heat.hi) == (lines.p0, lines.p1, lines.lo, lines.hi)
    assert heat.ticks() == lines.ticks() and all(re.fullmatch(r"\d+", t) for _, t in heat.ticks())
    # σ₁ … σ₈ on an ordered ramp: dark to light
    colors = [t["line"]["color"] for t in specs["σ over steps"]["data"]]
    brightness = [sum(map(int, re.findall(r"\d+", c))) for c in colors]
    assert len(colors) == 8 and brightness == sorted(brightness)
    # the energy measure is a whole number: so are its colour bar's ticks
    svg = render(specs["rank map (energy)"])
    bar = re.findall(r"<line x1='[\d.]+' x2='[\d.]+' y1='[\d.]+' y2='[\d.]+' stroke='white'/><text [^>]*>([^<]+)<", svg)
    assert len(bar) >= 3 and all(re.fullmatch(r"\d+", t) for t in bar)


def synthetic_history(steps: int, loss, lr) -> list[dict]:
    return [{"step": s, "loss": float(loss(s)), "lr": float(lr(s)), "grad_norm": 0.5 + 0.01 * (s % 7),
             "samples_per_s": 430.0 + s % 5, "memory_mb": 540.0 + 0.01 * s} for s in range(1, steps + 1)]


def test_loss_spanning_a_decade_goes_on_a_log_axis_and_a_small_lr_decay_looks_small():
    from lora_nb.viz.training import history_spec

    falling = synthetic_history(150, lambda s: 1.2 * np.exp(-s / 20) + 0.0037, lambda s: 1e-3 * (1 - 0.01 * s / 150))
    spec = history_spec(falling, [{"step": 30, "eval_loss": 0.08}])
    axes = axes_of(spec)
    assert axes["y"].kind == "log"
    loss_ticks = [label for _, label in axes["y"].ticks()]
    assert {"0.01", "0.1", "1"} <= set(loss_ticks)  # 0.0037 no longer reads as 0
    lr = axes["y2"]
    assert lr.lo == 0.0  # the learning rate's axis starts at 0: a 1% decay is 1% of the panel's height
    assert [label for _, label in lr.ticks()] == ["0", "0.0002", "0.0004", "0.0006", "0.0008", "0.0010"]
    assert reading_problems(spec) == []
    flat = synthetic_history(150, lambda s: 1.1 - 0.001 * s, lambda s: 1e-3)
    assert axes_of(history_spec(flat))["y"].kind == "linear"


def test_smoothed_loss_follows_the_raw_loss():
    """At step 25 of a loss falling 1.2·e^(-s/5), the old EMA (β = 0.9) read several times the raw loss; the live
    smoothing of a 150-step run and the final picture's centred mean stay close to it."""
    from lora_nb.core.smoothing import Ema
    from lora_nb.viz.training import centred_mean, series_values, smoothing_for

    raw = [1.2 * np.exp(-s / 5) + 0.03 for s in range(1, 151)]
    old, live = Ema(0.9), Ema(smoothing_for(150))
    old_25 = [old.add(v) for v in raw][24]
    live_25 = [live.add(v) for v in raw][24]
    centred_25 = centred_mean(raw)[24]
    assert old_25 > 1.5 * raw[24]  # the lag the learner saw
    assert abs(live_25 - raw[24]) < 0.25 * abs(old_25 - raw[24])
    assert abs(centred_25 - raw[24]) < 0.01
    history = synthetic_history(150, lambda s: raw[s - 1], lambda s: 1e-3)
    assert series_values(history, [])["loss_smoothed"][1] == centred_mean(raw)


def test_legend_lists_eval_loss_once_there_is_one_and_stars_the_best():
    from lora_nb.viz.training import history_spec

    history = synthetic_history(40, lambda s: 1.0 / s, lambda s: 1e-3)
    before = render(history_spec(history))
    assert ">train loss</text>" in before and ">eval loss</text>" not in before
    evals = [{"step": s, "eval_loss": 1.1 / s} for s in (10, 20, 30, 40)]
    after_svg, labels = render_labels(history_spec(history, evals, best={"step": 40, "eval_loss": 1.1 / 40}))
    assert ">eval loss</text>" in after_svg and after_svg.count("best eval") >= 2  # legend + hover text
    assert after_svg.count("scale(1.80)' d='M0,-6L1.8") == 1  # a large star in the plot, unlike the eval dots
    assert after_svg.count("scale(0.90)' d='M0,-6L1.8") == 1  # and in the legend
    legend = next(lb for lb in labels if lb.text == "train loss")
    loss_title = next(lb for lb in labels if lb.text == "loss")
    assert legend.y1 < loss_title.y0 < legend.y1 + 40  # the legend sits right over the loss panel


def test_history_tab_dropdown_shows_the_module_it_draws():
    """The dashboard's History tab built after a run: the module dropdown has its first module chosen (it was
    empty, selectedIndex −1, above a chart of that module); a later run with the same modules keeps the choice."""
    from helpers import classification_pairs, tiny_mlp

    import lora_nb
    from lora_nb.widgets.dashboard import ModelDashboard

    model = tiny_mlp()
    lora_nb.attach(model, r=2)
    data = classification_pairs()
    lora_nb.train(model, data, steps=6, spectra_every=2, background=False)
    dash = ModelDashboard(model)
    view = dash.open("History")
    modules = list(view.run.spectra_history.snapshot().modules)
    assert modules == ["0", "2", "4"]
    assert view.module.index == 0 and view.module.value == modules[0]
    assert f"{modules[0]}: singular values" in view.lines.value
    view.module.value = modules[1]
    run = lora_nb.train(model, data, steps=4, spectra_every=2, background=False)
    view.follow(run)
    assert view.module.value == modules[1] and f"{modules[1]}: singular values" in view.lines.value
    dash.close()


def test_spectrum_view_outlines_the_chosen_module_and_saves_every_chart(trained_bert):
    from lora_nb.widgets.explorers import SpectrumExplorer, WeightsExplorer

    model, _ = trained_bert
    view = SpectrumExplorer(model)
    names = list(view.result)
    view.module.value = names[3]
    assert view.ranks.value.count("stroke='#111' stroke-width='2'") == 2  # its two bars, outlined
    assert "(outlined: 0.attention.output.dense)" in view.ranks.value
    bundle = view._repr_mimebundle_()
    assert bundle["text/html"].count("<svg") == 2 and "effective rank: how many directions" in bundle["text/html"]
    assert "first chart only" in bundle["text/plain"]
    view.close()
    weights = WeightsExplorer(model)
    assert weights._repr_mimebundle_()["text/html"].count("<svg") == 5  # norm map, A, B, ΔW, histogram
    weights.close()


def test_every_front_end_is_its_own_class():
    """Each live view picks its front end's class once, from the ui mode."""
    from lora_nb.widgets.live import LiveDashboard, StaticLiveDashboard, WidgetLiveDashboard
    from lora_nb.widgets.vs_full import StaticVsFullLive, VsFullLive, WidgetVsFullLive

    assert type(LiveDashboard()) is WidgetLiveDashboard and type(LiveDashboard(ui="static")) is StaticLiveDashboard
    assert isinstance(LiveDashboard(ui="static"), LiveDashboard)
    assert not hasattr(LiveDashboard(ui="static"), "widget")
    assert type(VsFullLive(ui="static")) is StaticVsFullLive and type(VsFullLive()) is WidgetVsFullLive
    import inspect

    import lora_nb.widgets.live as live
    import lora_nb.widgets.vs_full as vs_full

    for module in (live, vs_full):
        assert 'ui == "widget"' not in inspect.getsource(module) and "self.ui ==" not in inspect.getsource(module)


@pytest.mark.slow
def test_saved_notebook_keeps_every_chart_and_nbconvert_finds_alternative_text():
    """A notebook run headless and saved: each view leaves every chart it showed (with its sentence) as HTML, and
    nbconvert's HTML export reports no image without alternative text."""
    nbclient = pytest.importorskip("nbclient")
    import nbformat
    from nbconvert import HTMLExporter

    cells = ["%load_ext lora_nb\nimport torch\nfrom torch import nn\ntorch.manual_seed(0)\n"
             "model = nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 32), nn.ReLU(), nn.Linear(32, 5))\n"
             "x = torch.randn(96, 16); data = torch.utils.data.TensorDataset(x, x[:, :5].argmax(1))\n"
             "%lora attach model --r 4",
             "run = %lora train model --data data --steps 12 --wait",
             "%lora spectrum model", "%lora weights model", "%lora history model", "%lora advise model"]
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(c) for c in cells])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbclient.NotebookClient(nb, timeout=300, kernel_name="python3", store_widget_state=True).execute()
    assert not [o for c in nb.cells for o in c.outputs if o.output_type == "error"]

    def html_of(cell: int) -> str:
        return "".join(o.get("data", {}).get("text/html", "") for o in nb.cells[cell].outputs)

    charts = {cell: html_of(cell).count("<svg") for cell in range(1, 6)}
    assert charts == {1: 1, 2: 2, 3: 5, 4: 2, 5: 1}  # training, spectrum, weights, history, advise
    assert "effective rank: how many directions" in html_of(2) and "--rank-pattern advised" in html_of(5)
    for state in (True, False):  # with the widgets' saved state, and as a viewer without widgets reads it
        copy = nbformat.from_dict(nb)
        if not state:
            copy.metadata.pop("widgets", None)
        body, _ = HTMLExporter().from_notebook_node(copy)
        assert "No description has been provided" not in body  # what nbconvert gives an <img> without alt
        if not state:
            assert body.count('role="img"') >= 11 and body.count('<svg aria-label="') >= 11  # inline, with alt text
