"""Outside a notebook every long call shows it is alive: `lora_nb.train`, `vs_full`, `lr_sweep` and `placement` from
Python print what they train and how it goes (as `%lora train` does in a terminal), unless given callbacks; a
background run's first lines come before the prompt's `Out[n]`; vs-full says it trains a new adapter of its own."""

from __future__ import annotations

import pytest
import torch
from helpers import classification_pairs, mlp_with_lora, tiny_llama, token_items

import lora_nb
from lora_nb.core.analysis.shortrun.progress import StepLines


@pytest.fixture(autouse=True)
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def test_train_from_python_prints_its_progress_unless_given_callbacks(capsys):
    model = mlp_with_lora()
    run = lora_nb.train(model, classification_pairs(), steps=5)
    out = capsys.readouterr().out.splitlines()
    assert run.state == "finished"
    assert out[0].startswith("training adapter `default` on cpu") and out[-1].startswith("finished: 5/5 steps")
    assert any(line.startswith("step 1/5 ·") for line in out) and any(line.startswith("step 5/5 ·") for line in out)
    lora_nb.train(model, classification_pairs(), steps=2, callbacks=[])
    assert capsys.readouterr().out == ""


def test_a_background_run_prints_its_first_line_before_the_magic_returns(ip, capsys):
    ip.user_ns.update(model=mlp_with_lora(), pairs=classification_pairs())
    run = ip.run_line_magic("lora", "train model --data pairs --steps 100000 --background")
    try:
        assert capsys.readouterr().out.startswith("training adapter `default`")  # before `Out[n]: TrainRun(…)`
    finally:
        run.stop()
        run.wait(30)


def test_step_lines_say_progress_every_interval_and_the_end():
    lines, now = [], [0.0]

    class Run:
        max_steps, step, seconds, state, message = 4, 4, 2.5, "finished", ""
        history = [{"loss": v} for v in (4.0, 3.0, 2.0, 1.0)]

    printer = StepLines(interval=5.0, clock=lambda: now[0])
    printer.say = lines.append
    printer.label = "LoRA"
    printer.on_train_begin(Run)
    for step, t in ((1, 1.0), (2, 6.0), (3, 7.0), (4, 12.0)):
        now[0] = t
        printer.on_step_end(Run, {"step": step, "loss": 1.0, "lr": 1e-3, "samples_per_s": 8.0, "time": t})
    printer.on_train_end(Run)
    assert [line.split(" ·")[0] for line in lines[:-1]] == ["  LoRA: step 2/4"]  # 5 s after the start; not step 4
    assert lines[-1] == "  LoRA: 4 steps in 2.5 s, loss 4 → 1 (first and last step)"


def test_vs_full_from_python_says_what_it_trains_and_each_arm(capsys):
    from test_vs_full import digits, digits_mlp

    model = digits_mlp()
    lora_nb.attach(model, r=2, targets="0")  # the user's own adapter: vs_full does not use it, and says so
    train, test = digits()
    lora_nb.vs_full(model, train, test, steps=3, targets="0,2", sizes=[40])
    text = capsys.readouterr().out
    printed = text.splitlines()
    assert printed[0].startswith("vs-full: a new LoRA adapter (r=8, alpha 16, targets 0,2, lr 0.01) against full "
                                 "fine-tuning (lr 0.001), each 3 steps of batch 8 from the same base weights "
                                 "(the adapters attached to the model are not used); then both again on 40 examples")
    assert printed[1] == "warm-up: 2 unmeasured steps of each arm"
    for label in ("LoRA", "full fine-tuning", "LoRA on 40 examples", "full fine-tuning on 40 examples"):
        assert f"  {label}: 3 steps in " in text
    assert "directions of both updates in 2 layers" in text


def test_the_short_runs_from_python_print_a_line_per_run(capsys):
    lora_nb.lr_sweep(tiny_llama(), token_items(16), lrs="1e-3,1e-2", steps=2, batch_size=4, device="cpu")
    out = capsys.readouterr().out
    assert "run 1/2: LoRA at lr 0.001" in out and "run 2/2: LoRA at lr 0.01" in out
    assert out.count("2 steps in") == 2
    lora_nb.placement(tiny_llama(), token_items(16), steps=2, batch_size=4, r=1, lr=1e-2, device="cpu")
    out = capsys.readouterr().out
    assert "run 1/2: attention only at lr 0.01" in out and "run 2/2: all linear layers at lr 0.01" in out
    lora_nb.lr_sweep(tiny_llama(), token_items(16), lrs="1e-3,1e-2", steps=1, batch_size=4, callbacks=[])
    assert capsys.readouterr().out == ""
