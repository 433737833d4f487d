"""LoRA vs full fine-tuning on the digits data: every number checked against an independent count.

The model is a digits MLP 64→256→256→10 (85,002 parameters); LoRA has r=4 on the two hidden
layers (`0` and `2`), so it updates 3,328 parameters (3.9%).
"""

from __future__ import annotations

import copy
import os
import statistics
import time

import pytest
import torch
from helpers import make_b_nonzero
from IPython.core.error import UsageError
from safetensors.torch import save_file
from torch import nn

import lora_nb
from lora_nb.core import registry
from lora_nb.core.analysis.shortrun.hooks import ShortRunCallback
from lora_nb.core.analysis.shortrun.vs_full import vs_full
from lora_nb.errors import AdapterError, OptionError

LORA = dict(r=4, alpha=8, targets="0,2")
STEPS = 40


def digits():
    """sklearn's 8×8 digits (shipped offline): (train, test) as (X, y) tensor pairs, shuffled with a seed."""
    from sklearn.datasets import load_digits

    x, y = load_digits(return_X_y=True)
    perm = torch.randperm(len(x), generator=torch.Generator().manual_seed(0))
    x, y = torch.tensor(x, dtype=torch.float32)[perm] / 16, torch.tensor(y)[perm]
    return (x[:400], y[:400]), (x[1400:], y[1400:])


def digits_mlp():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(64, 256), nn.ReLU(), nn.Linear(256, 256), nn.ReLU(), nn.Linear(256, 10))


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny models step faster on one thread (and do not fight other processes for the cores)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


class Recorder(ShortRunCallback):
    def __init__(self):
        self.events = []

    def on_run_begin(self, arm, index, total, lr=None, size=None):
        self.events.append(("arm", arm, size))

    def on_train_end(self, run):
        self.events.append(("end", run.adapter, run.step))

    def on_result(self, result):
        self.events.append(("result",))


@pytest.fixture(scope="module")
def experiment():
    train, test = digits()
    model = digits_mlp()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    recorder = Recorder()
    result = vs_full(model, train, test, steps=STEPS, sizes=[30, 120], callbacks=[recorder], device="cpu",
                     **LORA)
    return model, before, train, test, result, recorder


def test_the_users_model_is_untouched(experiment):
    model, before, *_ = experiment
    after = model.state_dict()
    assert after.keys() == before.keys() and all(torch.equal(after[k], before[k]) for k in before)
    assert registry.find(model) is None and all(p.requires_grad for p in model.parameters())


def test_parameter_counts_match_numel(experiment):
    model, _, _, _, result, _ = experiment
    total = sum(p.numel() for p in model.parameters())
    clone = copy.deepcopy(model)
    lora_nb.attach(clone, **LORA)
    lora = sum(p.numel() for n, p in clone.named_parameters() if "lora_" in n)
    assert lora == 4 * (64 + 256) + 4 * (256 + 256) == 3328
    assert (result.lora.params_updated, result.lora.params_total) == (lora, total) == (3328, 85002)
    assert (result.full.params_updated, result.full.params_total) == (total, total)
    assert result.lora.percent < 5 and result.full.percent == 100


def adamw_footprint(params):
    """Bytes of params + grads + AdamW state, read from a real optimizer after one step."""
    params = [p.detach().clone().requires_grad_() for p in params]
    opt = torch.optim.AdamW(params)
    sum(p.sum() for p in params).backward()
    opt.step()
    state = sum(t.nbytes for s in opt.state.values() for t in s.values())
    return sum(p.nbytes + p.grad.nbytes for p in params) + state


def test_trainable_state_bytes_match_a_real_optimizer(experiment):
    model, _, _, _, result, _ = experiment
    clone = copy.deepcopy(model)
    lora_nb.attach(clone, **LORA)
    lora = [p for n, p in clone.named_parameters() if "lora_" in n]
    assert result.lora.state_bytes == adamw_footprint(lora) == 4 * 3328 * 4 + 4 * 4  # fp32 ×4, a step per tensor
    assert result.full.state_bytes == adamw_footprint(list(model.parameters()))
    assert result.full.state_bytes >= 10 * result.lora.state_bytes


def test_checkpoint_sizes_are_the_files_sizes(experiment, tmp_path):
    model, _, _, _, result, _ = experiment
    clone = copy.deepcopy(model)
    lora_nb.attach(clone, name="other", **LORA)
    folder = lora_nb.save(clone, tmp_path / "adapter")
    assert result.lora.checkpoint_bytes == os.path.getsize(folder / "adapter_model.safetensors")
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, tmp_path / "full.safetensors")
    assert result.full.checkpoint_bytes == os.path.getsize(tmp_path / "full.safetensors")
    assert result.full.checkpoint_bytes > 10 * result.lora.checkpoint_bytes


def test_losses_times_and_memory_come_from_the_runs(experiment):
    *_, result, recorder = experiment
    for arm in (result.lora, result.full):
        assert len(arm.history) == STEPS
        assert arm.step_seconds == statistics.median(r["seconds"] for r in arm.history) > 0
        assert arm.train_loss_last == pytest.approx(statistics.mean(r["loss"] for r in arm.history[-8:]))
        assert arm.eval_loss == pytest.approx(arm.evals[-1]["eval_loss"], rel=1e-5)  # the loop's own last eval
        assert arm.gap == pytest.approx(arm.eval_loss - arm.train_loss)
        assert 0 <= arm.eval_accuracy <= 1 and arm.memory_peak >= arm.memory_start > 0
        assert "RSS" in arm.memory_kind and arm.history[-1]["loss"] < arm.history[0]["loss"]
    assert result.lora.history[0]["loss"] == pytest.approx(result.full.history[0]["loss"], abs=1e-6)  # same start
    arms = [e[1:] for e in recorder.events if e[0] == "arm"]
    assert arms == [("lora", None), ("full", None), ("lora", 30), ("full", 30), ("lora", 120), ("full", 120)]
    assert recorder.events[-1] == ("result",) and [e[2] for e in recorder.events if e[0] == "end"] == [STEPS] * 6


def test_every_cell_is_filled_and_readings_follow_the_numbers(experiment):
    *_, result, _ = experiment
    rows = result.rows()
    assert [r.aspect for r in rows][0] == "scope of updates" and {r.aspect for r in rows} == {
        "scope of updates", "efficiency (compute & memory)", "data", "overfitting", "performance", "directions"}
    for row in rows:
        assert "—" not in (row.lora, row.full) and "not measured" not in row.reading, row
    reading = {r.measure: r.reading for r in rows}
    assert reading["parameters updated"].startswith(f"LoRA updates {result.lora.percent:.3g}% of the weights")
    ratio = result.full.state_bytes / result.lora.state_bytes
    assert f"{ratio:.3g}× smaller" in reading["trainable state: params + grads + AdamW moments"]
    better = "LoRA" if result.lora.eval_loss < result.full.eval_loss else "full fine-tuning"
    assert reading["eval loss"].startswith(better)
    assert [a.size for a in result.sweep] == [30, 30, 120, 120] and result.sizes == [30, 120]
    text, page = str(result), result._repr_html_()
    assert all(r.reading in text and r.lora in text for r in rows) and page.count("<tr>") == len(rows) + 1


def test_copies_start_from_the_base_weights_when_the_model_has_an_adapter():
    train, test = digits()
    model = digits_mlp()
    base = copy.deepcopy(model)
    lora_nb.attach(model, **LORA)
    make_b_nonzero(model)
    session = registry.find(model)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    adapted = vs_full(model, train, steps=2, **LORA)
    plain = vs_full(base, train, steps=2, **LORA)
    assert adapted.lora.history[0]["loss"] == pytest.approx(plain.lora.history[0]["loss"], abs=1e-6)
    assert adapted.full.history[0]["loss"] == pytest.approx(plain.full.history[0]["loss"], abs=1e-6)
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())
    assert registry.find(model) is session and session.adapters == ["default"] and session.active == "default"
    lora_nb.merge(model)
    with pytest.raises(AdapterError, match="unmerge it first"):
        vs_full(model, train, steps=2)


def test_bad_input_is_refused_before_training():
    train, test = digits()
    model = digits_mlp()
    for kwargs, message in [({"sizes": [10, 20]}, "pass `eval_data=…`"), ({"sizes": "10,x", "eval_data": test}, "whole"),
                            ({"sizes": [5000], "eval_data": test}, "has 400 items"), ({"lr": 1}, "sets lr"),
                            ({"steps": 0}, "steps must be"), ({"processes": 2}, "in this process"), ({"r": 0}, "r must be"), ({"warmpu": 2}, "unknown")]:
        with pytest.raises(OptionError, match=message):
            vs_full(model, train, **kwargs)


def test_magic_in_a_terminal_shell(ip, capsys):
    train, test = digits()
    ip.user_ns.update(model=digits_mlp(), train=train, test=test)
    before = {k: v.clone() for k, v in ip.user_ns["model"].state_dict().items()}
    result = ip.run_line_magic("lora", "vs-full model --data train --eval test --steps 10 --r 4 --targets 0,2 "
                                       "--sizes 40 --batch-size 16 --lr-lora 0.005")
    out = capsys.readouterr().out
    assert result.lora.params_updated == 3328 and len(result.full.history) == 10 and result.sizes == [40]
    assert result.settings["lora"].lr == 0.005 and result.settings["full"].batch_size == 16
    assert out.count("steps in") == 4 and "LoRA on 40 examples: 10 steps" in out
    assert all(torch.equal(v, before[k]) for k, v in ip.user_ns["model"].state_dict().items())
    assert "--sizes SIZES" in ip.run_line_magic("lora", "vs-full -h")
    assert "tabs" in ip.run_line_magic("lora", "dashboard -h")
    for line, message in [("vs-full model --data trian", "no variable `trian`; did you mean `train`"),
                          ("vs-full model --data train --sizes 10", "pass `--eval …`"),
                          ("vs-full model --data train --steps many", "steps must be an integer"),
                          ("vs-full model --data train --targets nothing_here", "nothing_here"),
                          ("vs-full model", "the following arguments are required: --data")]:
        with pytest.raises(UsageError, match=message) as info:
            ip.run_line_magic("lora", line)
        assert "\n" not in str(info.value)


def test_live_curves_in_a_notebook(ip, monkeypatch):
    from lora_nb.cmd.router import Context
    from lora_nb.viz.vs_full import CURVES
    from lora_nb.widgets.vs_full import VsFullLive

    shown = []
    original = Context.display
    monkeypatch.setattr(ip, "kernel", object(), raising=False)  # a Jupyter kernel: widgets are shown
    monkeypatch.setattr(Context, "display", lambda self, obj: (shown.append(obj), original(self, obj)))
    train, test = digits()
    ip.user_ns.update(model=digits_mlp(), train=train, test=test)
    started = time.monotonic()
    result = ip.run_line_magic("lora", "vs-full model --data train --eval test --steps 30 --r 4 --targets 0,2 "
                                       "--sizes 50,100")
    seconds = time.monotonic() - started
    (live,) = shown
    assert isinstance(live, VsFullLive) and live.result is result
    traces = {curve: live.figure.data[i] for i, curve in enumerate(CURVES)}
    for arm in ("lora", "full"):  # the main arms' curves, complete; the sweep runs add no points
        history, evals = getattr(result, arm).history, getattr(result, arm).evals
        assert list(traces[(arm, "loss")].x) == [r["step"] for r in history]
        assert list(traces[(arm, "loss")].y) == pytest.approx([r["loss"] for r in history], rel=1e-6)
        assert list(traces[(arm, "eval")].y) == pytest.approx([e["eval_loss"] for e in evals], rel=1e-6)
    assert 1 <= live.updates <= seconds / 0.5 + 2 + 1  # throttled: ≤ 2/s, plus one flush per main arm's end
    assert live.closed and live.widget.comm is None  # the displayed view became pictures; its widgets are released
    assert live.slots[2].updates == 1  # one of them: the directions chart
    fresh = VsFullLive(show_table=True)  # a view not displayed yet shows the table and the sweep in its widgets
    fresh.on_result(result)
    assert fresh.table.value == result._repr_html_()
    sweep = fresh.sweep_chart.figure
    assert list(sweep.data[0].x) == [50, 100]
    assert list(sweep.data[0].y) == pytest.approx([result.sweep_arm("lora", n).eval_loss for n in (50, 100)])
    svg = fresh.directions_chart.value  # which directions both arms moved each layer in: marks per layer
    assert "which directions LoRA and full fine-tuning move each layer in" in svg
    assert svg.count("<title>0: ") == svg.count("<title>2: ") >= 4  # overlap bars and random-subspace markers


def test_peak_memory_sees_what_a_block_allocates():
    from lora_nb.core.training.memory.budget import PeakMemory

    with PeakMemory(torch.device("cpu")) as quiet:
        time.sleep(0.05)
    with PeakMemory(torch.device("cpu")) as busy:
        block = torch.ones(16 * 2**20)  # 64 MiB, written, freed before the block ends
        time.sleep(0.05)
        del block
    assert busy.added >= 60 * 2**20 > quiet.added and busy.samples > 0 and "RSS" in busy.kind


@pytest.mark.slow  # starts a real Jupyter kernel
def test_saved_notebook_keeps_the_pictures():  # a real kernel: live view shown, static pictures left in its cell
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    cells = [
        "%load_ext lora_nb\nimport torch\nfrom torch import nn\ntorch.manual_seed(0)\n"
        "model = nn.Sequential(nn.Linear(16, 64), nn.ReLU(), nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 5))\n"
        "x = torch.randn(160, 16); y = x[:, :5].argmax(1); train, test = (x[:100], y[:100]), (x[100:], y[100:])",
        "res = %lora vs-full model --data train --eval test --steps 20 --r 2 --targets 0,2 --sizes 20,40",
        "%lora dashboard model",
    ]
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(c) for c in cells])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbclient.NotebookClient(nb, timeout=120, kernel_name="python3", store_widget_state=True).execute()
    assert not [o for c in nb.cells for o in c.outputs if o.output_type == "error"]
    curves, sweep, directions, _table = [o for o in nb.cells[1].outputs if o.output_type == "display_data"]
    assert "application/vnd.jupyter.widget-view+json" not in curves.data  # the live view became its pictures
    assert curves.data["text/plain"] == "<LoRA vs full fine-tuning: loss curves>"
    svg = curves.data["image/svg+xml"]
    for arm in ("LoRA", "full fine-tuning"):
        assert f"<title>{arm} train loss (smoothed)</title>" in svg
    assert sweep.data["image/svg+xml"].count("<circle") == 2 * 2 * 3 + 2  # 2 arms × 2 sizes × 3 panels + legend
    assert sweep.data["text/plain"] == "<data-size sweep>"
    assert "overlap (1 = same subspace)" in directions.data["image/svg+xml"]
    (dashboard,) = [o for o in nb.cells[2].outputs if o.output_type in ("display_data", "execute_result")]
    assert "application/vnd.jupyter.widget-view+json" in dashboard.data
