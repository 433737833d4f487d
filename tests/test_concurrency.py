"""Several things at once in one kernel: two models training together, verbs on one model while the other trains,
every mutating verb while a run is paused, and `%lora stop` racing a run's last step. Every wait has a deadline."""

from __future__ import annotations

import contextlib
import threading
import time

import pytest
import torch
from helpers import base_params, classification_pairs, lora_params, tiny_mlp
from IPython.core.error import UsageError

import lora_nb
from lora_nb.cmd import VERBS
from lora_nb.core import registry

DEADLINE = 60.0  # seconds any wait below may take before the test fails


def trainer_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("lora_nb-train") and t.is_alive()]


def wait_until(condition, what: str, seconds: float = DEADLINE) -> None:
    end = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < end, f"timed out after {seconds} s waiting until {what}"
        time.sleep(0.005)


def adapted(seed: int):
    torch.manual_seed(seed)
    model = tiny_mlp()
    lora_nb.attach(model, r=4, targets="0,2")
    return model


def snapshot(model) -> dict:
    """Parameters and flags, adapters, the active one, merge and on/off state of every LoRA layer."""
    session = registry.find(model)
    layers = [m for m in model.modules() if hasattr(m, "merged_adapters") and hasattr(m, "disable_adapters")]
    return {"params": {n: (p.detach().clone(), p.requires_grad) for n, p in model.named_parameters()},
            "adapters": session.adapters, "active": session.active,
            "merged": [tuple(m.merged_adapters) for m in layers], "off": [m.disable_adapters for m in layers]}


def unchanged(a: dict, b: dict) -> bool:
    same_params = a["params"].keys() == b["params"].keys() and all(
        x[1] == y[1] and torch.equal(x[0], y[0]) for x, y in zip(a["params"].values(), b["params"].values()))
    return same_params and all(a[k] == b[k] for k in a if k != "params")


@pytest.fixture
def two(ip):
    ip.user_ns.update(a=adapted(1), b=adapted(2), pairs=classification_pairs(), other=classification_pairs(32))
    yield ip
    for name in ("a", "b"):
        session = registry.find(ip.user_ns[name])
        if session is not None and session.run is not None:
            session.run.stop()
            session.run.wait(DEADLINE)
    assert not trainer_threads()


def test_two_models_train_at_once_in_one_kernel(two):
    ns = two.user_ns
    bases = {name: base_params(ns[name]) for name in ("a", "b")}
    run_a = two.run_line_magic("lora", "train a --data pairs --steps 40 --lr 1e-2 --background")
    run_b = two.run_line_magic("lora", "train b --data other --steps 30 --lr 1e-2 --background")
    wait_until(lambda: run_a.step > 0 and run_b.step > 0, "both runs have taken a step")
    assert not run_a.done and not run_b.done and len(trainer_threads()) == 2  # both really run together
    assert run_a.wait(DEADLINE).state == "finished" and run_b.wait(DEADLINE).state == "finished"
    assert (run_a.step, run_b.step) == (40, 30) and [r["step"] for r in run_a.history] == list(range(1, 41))
    for name, run in (("a", run_a), ("b", run_b)):
        assert run.history[-1]["loss"] < run.history[0]["loss"]  # each learned from its own data
        after = base_params(ns[name])
        assert all(torch.equal(after[k], v) for k, v in bases[name].items())  # only adapters changed (G10)
    assert not trainer_threads()


def test_verbs_on_one_model_while_the_other_trains(two, tmp_path):
    ns = two.user_ns
    b_before = lora_params(ns["b"])
    run = two.run_line_magic("lora", "train b --data pairs --steps 100000 --lr 1e-2 --background")
    wait_until(lambda: run.step >= 2, "b has taken two steps")
    a, x = ns["a"], classification_pairs(8)[0]
    with torch.no_grad():
        fresh = a(x)  # a fresh adapter (B = 0) adds exactly nothing
    lines = ["attach a --name second --r 2 --targets 0", "on a --adapter default", "off a", "on a",
             "merge a", "unmerge a", f"save a {tmp_path / 'a_saved'}", "delete a --adapter second",
             f"load a {tmp_path / 'a_saved'} --name again", "status a", "spectrum a --ui text", "weights a --ui text",
             "detach a", "attach a --r 4 --targets 0,2"]
    for line in lines:
        two.run_line_magic("lora", line)
        assert not run.done and registry.require(ns["b"]).training  # b keeps training through all of it
    with torch.no_grad():
        assert torch.equal(a(x), fresh)  # merge/unmerge and detach were exact; the new adapter is fresh again
    assert registry.find(a).adapters == ["default"] and registry.find(a).run is None
    steps_before_stop = run.step
    two.run_line_magic("lora", "stop b")
    assert run.done and run.state == "stopped" and run.step >= steps_before_stop
    assert any(not torch.equal(v, lora_params(ns["b"])[k]) for k, v in b_before.items())  # b learned meanwhile
    assert not trainer_threads()


# how each verb given a model is called here ({m}: the model); which of them must be refused while the model trains
# and which must work beside its run comes from the verbs' own declarations (`mutates=` where each is registered)
CALLS = {
    "attach": ["--name second", "--replace"], "detach": [""], "on": ["", "--adapter default"], "off": [""],
    "merge": [""], "unmerge": [""], "delete": ["--adapter default"], "load": ["{saved}"],
    "combine": ["--adapters default --weights 1"], "train": ["--data pairs --steps 1"], "compare": ["--inputs x"],
    "export": ["{tmp}/exported"], "status": [""], "spectrum": ["--ui text"], "weights": ["--ui text"], "advise": [""],
    "toggle": ["--ui text"], "vs-full": ["--data pairs --steps 1 --ui text"],  # vs-full trains copies of the model
    "save": ["{tmp}/saved_beside"], "history": ["--ui text"], "intruders": [""], "dashboard": ["--ui text"],
    "check": ["--for peft"], "similarity": ["--adapter default --other default --ui text"],
    "plan": ["--data pairs"], "lr-sweep": ["--data pairs --steps 1 --lrs 1e-3,1e-2 --ui text"],
    "placement": ["--data pairs --steps 1 --ui text"],
}
RUN_CONTROLS = ("pause", "resume", "stop")  # driven by the test below
UNFIT = {"placement": "placement needs attention layers"}  # what a reading verb says of this MLP (not the run)


def lines_that(mutates: str) -> list[str]:
    """``%lora`` lines for every verb that declares it ``mutates`` this (each verb in its ways of being called)."""
    return [f"{name} {{m}} {args}".strip() for name, spec in VERBS.items() if spec.mutates == mutates
            for args in CALLS[name]]


def test_every_verb_given_a_model_declares_what_it_mutates_and_is_called_here():
    with_model = {name for name, spec in VERBS.items() if spec.mutates is not None}
    assert with_model == set(CALLS) | set(RUN_CONTROLS)
    assert {name for name in with_model if VERBS[name].mutates == "run"} == set(RUN_CONTROLS)
    assert {"train", "attach", "merge", "export"} <= {n for n in with_model if VERBS[n].mutates == "model"}
    assert {"status", "spectrum", "vs-full"} <= {n for n in with_model if VERBS[n].mutates == "nothing"}


MUTATING, READING = lines_that("model"), lines_that("nothing")


def test_every_mutating_verb_is_refused_while_a_run_is_paused(two, tmp_path):
    ns = two.user_ns
    saved = lora_nb.save(ns["b"], tmp_path / "saved")
    ns["x"] = classification_pairs(4)[0]
    run = two.run_line_magic("lora", "train a --data pairs --steps 100000 --background")
    wait_until(lambda: run.step >= 1, "a has taken a step")
    two.run_line_magic("lora", "pause a")
    wait_until(lambda: run.state == "paused", "the run is paused")
    at_pause = run.step
    time.sleep(0.1)
    assert run.step == at_pause  # it holds
    before = snapshot(ns["a"])
    for line in MUTATING:
        line = line.format(m="a", saved=saved, tmp=tmp_path)
        with pytest.raises(UsageError) as info:
            two.run_line_magic("lora", line)
        assert str(info.value).startswith("training is running; stop it first"), line
        assert unchanged(before, snapshot(ns["a"])), f"`{line}` changed the paused model"
    for line in READING:  # verbs that only read the model work on the paused one, and change nothing
        unfit = UNFIT.get(line.split()[0])
        with pytest.raises(UsageError, match=unfit) if unfit else contextlib.nullcontext():
            two.run_line_magic("lora", line.format(m="a", tmp=tmp_path))
        assert unchanged(before, snapshot(ns["a"])), f"`{line}` changed the paused model"
    assert run.state == "paused" and run.step == at_pause  # still paused, at the same step
    assert two.run_line_magic("lora", "status a").training == "paused"
    two.run_line_magic("lora", "resume a")
    wait_until(lambda: run.step > at_pause, "the resumed run takes a step")
    two.run_line_magic("lora", "stop a")
    assert run.done and run.state == "stopped" and not trainer_threads()
    two.run_line_magic("lora", "off a")  # mutations work again once it stopped


@pytest.mark.parametrize("steps", [1, 2, 3])
def test_stop_racing_the_last_step_leaves_a_consistent_state(two, steps):
    """Stop is sent as the run reaches its last step, again and again: whichever wins, the run ends once, the
    history matches its step count, the adapter is finite and takes changes again, and no thread is left."""
    ns = two.user_ns
    outcomes = set()
    for attempt in range(12):
        run = two.run_line_magic("lora", f"train a --data pairs --steps {steps} --batch-size 4 --background")
        delay = attempt * 0.002  # sweeps the stop across the run's last step
        time.sleep(delay)
        try:
            two.run_line_magic("lora", "stop a")
        except UsageError as exc:  # the run ended first: stop is refused in one line
            assert str(exc) == "no training is running on `a`"
        assert run.wait(DEADLINE).done
        outcomes.add(run.state)
        assert run.state in ("stopped", "finished"), run.message
        assert run.step == len(run.history) <= steps and (run.state == "stopped" or run.step == steps)
        assert [r["step"] for r in run.history] == list(range(1, run.step + 1))
        assert not registry.require(ns["a"]).training and run.message and "\n" not in run.message.strip()
        wait_until(lambda: not trainer_threads(), "the trainer thread is gone", seconds=10)
        with torch.no_grad():
            assert torch.isfinite(ns["a"](classification_pairs(4)[0])).all()
        two.run_line_magic("lora", "off a")  # the model takes mutations again at once
        two.run_line_magic("lora", "on a")
    assert outcomes <= {"stopped", "finished"}
