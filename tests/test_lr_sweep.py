"""A class sweeps the learning rate of LoRA and of full fine-tuning, and tests where LoRA goes, on a tiny Llama.

Every run starts from the model's base weights; afterwards the model is exactly as before (weights, flags, adapters,
active adapter, no gradients or optimizer left). Each point of the sweep equals an independent ``lora_nb.train``
run from the same start.
"""

from __future__ import annotations

import copy
import math

import pytest
import torch
from helpers import make_b_nonzero, tiny_llama, token_items
from IPython.core.error import UsageError

import lora_nb
from lora_nb.core import registry
from lora_nb.core.analysis.shortrun.hooks import ShortRunCallback
from lora_nb.core.analysis.shortrun.lr_sweep import lr_sweep, parse_lrs
from lora_nb.core.analysis.shortrun.placement import matched_rank, placement
from lora_nb.errors import OptionError
from lora_nb.widgets.short_runs import ShortRunsLive

STEPS = 4


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def adapted():
    """A tiny Llama with two adapters (the second active, its update non-zero) and a frozen-by-hand embedding."""
    torch.manual_seed(0)
    model = tiny_llama()
    lora_nb.attach(model, r=2, targets="q_proj,v_proj", name="a")
    lora_nb.attach(model, r=4, targets="o_proj", name="b")
    make_b_nonzero(model, "b")
    return model


def snapshot(model):
    session = registry.find(model)
    return ({k: v.detach().clone() for k, v in model.state_dict().items()},
            {n: p.requires_grad for n, p in model.named_parameters()},
            list(session.adapters), session.active, session.run, model.training)


def assert_exactly_as_before(model, before):
    state, flags, adapters, active, run, training = before
    after = model.state_dict()
    assert list(after) == list(state)
    assert all(torch.equal(after[k], v) for k, v in state.items())
    assert {n: p.requires_grad for n, p in model.named_parameters()} == flags
    session = registry.find(model)
    assert (session.adapters, session.active, session.run, model.training) == (adapters, active, run, training)
    assert all(p.grad is None for p in model.parameters())  # no gradient (and so no optimizer step) touched it


def test_the_lora_sweep_restores_the_model_bit_for_bit_and_each_point_is_a_plain_run_from_the_base_weights():
    model = adapted()
    torch.manual_seed(0)
    base = tiny_llama()  # the base weights the sweep starts from, built again
    before = snapshot(model)
    data = token_items(24)
    result = lr_sweep(model, data, lrs="1e-3:1e-1:3", steps=STEPS, batch_size=4, r=2, alpha=8, device="cpu")
    assert_exactly_as_before(model, before)
    assert [p.lr for p in result.points] == pytest.approx([1e-3, 1e-2, 1e-1])
    for point in result.points:
        twin = copy.deepcopy(base)
        torch.manual_seed(0)
        lora_nb.attach(twin, r=2, alpha=8, name="probe")
        run = lora_nb.train(twin, data, steps=STEPS, lr=point.lr, batch_size=4, device="cpu", background=False,
                            spectra_every=0)
        assert point.losses == [r["loss"] for r in run.history]
        assert point.params == sum(p.numel() for n, p in twin.named_parameters() if "lora_" in n)
    best = min(result.points, key=lambda p: sum(p.losses[-1:]))
    assert result.best("lora") is best and result.ratio is None
    assert result.measure.startswith("train loss")


def test_with_vs_full_both_methods_are_swept_and_the_ratio_is_of_their_best_lrs():
    torch.manual_seed(0)
    model = tiny_llama()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    data, held_out = token_items(24), token_items(8)
    result = lr_sweep(model, data, held_out, lrs=[1e-3, 1e-2, 1e-1, 1e30], vs_full=True, steps=STEPS,
                      batch_size=4, r=2, device="cpu")
    assert all(torch.equal(model.state_dict()[k], v) for k, v in before.items()) and registry.find(model) is None
    full = [p for p in result.points if p.arm == "full"]
    assert len(full) == 4 and full[0].params == sum(p.numel() for p in model.parameters())
    diverged = [p for p in result.points if p.lr == 1e30]
    assert diverged and all(p.state == "failed" and math.isnan(p.final_loss) for p in diverged)
    for arm in ("lora", "full"):
        finite = [p for p in result.points if p.arm == arm and math.isfinite(p.final_loss)]
        assert result.best(arm) is min(finite, key=lambda p: p.eval_loss)  # held-out loss decides
    assert result.ratio == pytest.approx(result.best("lora").lr / result.best("full").lr)
    assert result.measure == "eval loss" and "ratio" in result.headline() and "diverged" in repr(result)


def test_a_stop_ends_the_sweep_with_the_runs_that_finished_and_the_model_untouched():
    model = adapted()
    before = snapshot(model)

    class StopSecond(ShortRunCallback):
        def __init__(self):
            self.index = -1

        def on_run_begin(self, arm, index, total, lr=None, size=None):
            self.index = index

        def on_step_end(self, run, record):
            if self.index == 1 and record["step"] == 2:
                run.stop()

    result = lr_sweep(model, token_items(16), lrs="1e-3:1e-2:3", steps=STEPS, batch_size=4, device="cpu",
                      callbacks=[StopSecond()])
    assert result.stopped and len(result.points) == 1 and "stopped early" in result.headline()
    assert_exactly_as_before(model, before)


def test_the_live_view_redraws_once_per_finished_run_and_ends_as_a_picture_of_the_result():
    model = tiny_llama()
    view = ShortRunsLive("lr", ui="widget")
    result = lr_sweep(model, token_items(16), lrs="1e-3:1e-1:3", steps=STEPS, batch_size=4, device="cpu",
                      callbacks=[view])
    assert view.updates == 4  # the three runs, then the result's title
    (line, best) = view.chart.spec["data"]
    assert line["x"] == pytest.approx([p.lr for p in result.points]) and line["y"] == [p.final_loss
                                                                                       for p in result.points]
    assert best["x"] == [result.best("lora").lr] and view.closed
    assert result.headline() in view.line


def test_placement_matches_parameter_counts_and_leaves_the_model_alone():
    model = adapted()
    before = snapshot(model)
    result = placement(model, token_items(16), steps=STEPS, batch_size=4, r=2, lr=1e-2, device="cpu")
    assert_exactly_as_before(model, before)
    attention, every = result.arms["attention"], result.arms["all"]
    assert all("self_attn" in m for m in attention.modules) and any("mlp" in m for m in every.modules)
    # tiny_llama per layer: q 32+32, k 32+16, v 32+16, o 32+32 (attention: 224); gate, up 32+64, down 64+32 (288)
    assert every.params == 2 * 2 * (224 + 288) and attention.params == attention.rank * 2 * 224
    assert attention.rank == matched_rank(2, 512, 224) == 5  # 5·448 = 2,240 is nearest to 2,048 (4·448 = 1,792)
    assert len(attention.run.losses) == len(every.run.losses) == STEPS
    assert result.winner() in ("attention", "all") and "parameters" in result.headline()


def test_the_magics_sweep_and_place_in_text_mode_and_refuse_bad_grids_in_one_line(ip, capsys):
    ip.user_ns.update(model=tiny_llama(), rows=token_items(16))
    result = ip.run_line_magic("lora", f"lr-sweep model --data rows --lrs 1e-3,1e-2 --vs-full --steps {STEPS} "
                                       "--batch-size 4 --ui text")
    assert len(result.points) == 4 and result.ratio is not None
    assert capsys.readouterr().out.count("final loss") == 4
    placed = ip.run_line_magic("lora", "placement model --data rows --steps 2 --r 1 --lr 1e-2 --ui text")
    assert placed.arms["all"].rank == 1
    for bad in ("--lrs 1e-2:1e-3:4", "--lrs x", "--lrs 1e-3:1e-2:1", "--steps 0"):
        with pytest.raises(UsageError) as err:
            ip.run_line_magic("lora", f"lr-sweep model --data rows {bad}")
        assert "\n" not in str(err.value)


def test_parse_lrs_gives_a_log_grid_or_the_listed_values():
    assert parse_lrs("1e-4:1e-1:4") == pytest.approx([1e-4, 1e-3, 1e-2, 1e-1])
    assert parse_lrs("3e-3, 1e-3") == [1e-3, 3e-3]
    with pytest.raises(OptionError):
        parse_lrs("0,1e-3")
