"""Races in one kernel: `save` beside a training run takes the adapter of one step boundary, never a mix of two;
two runs at once give what each gives alone, or the second is refused in one line when either has dropout."""

from __future__ import annotations

import hashlib
import threading

import pytest
import torch
from helpers import classification_pairs, tiny_mlp, wait_until
from safetensors.torch import load_file

import lora_nb
from lora_nb.core import registry
from lora_nb.core.adapters.io import PREFIX, WEIGHTS
from lora_nb.core.adapters.keys import adapter_parameters_by_key
from lora_nb.core.training.callbacks import Callback
from lora_nb.errors import TrainingActiveError

DEADLINE = 60.0


def digest(tensors: dict[str, torch.Tensor]) -> str:
    h = hashlib.sha256()
    for key in sorted(tensors):
        h.update(key.encode())
        h.update(tensors[key].detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


class StepHashes(Callback):
    """The hash of the adapter's tensors at the end of every step (read in the training thread, between steps)."""

    def __init__(self, model: torch.nn.Module) -> None:
        self.model = model
        self.hashes = {digest(self._tensors())}  # before the first step
        self.lock = threading.Lock()

    def _tensors(self) -> dict[str, torch.Tensor]:
        return {k: p.detach().clone() for k, p in adapter_parameters_by_key(self.model, "default").items()}

    def on_step_end(self, run, record) -> None:
        value = digest(self._tensors())
        with self.lock:
            self.hashes.add(value)


def adapted(seed: int, dropout: float = 0.0) -> torch.nn.Module:
    torch.manual_seed(seed)
    model = tiny_mlp()
    lora_nb.attach(model, r=4, targets="0,2,4", dropout=dropout)
    return model


def test_save_beside_a_run_takes_one_step_boundary(tmp_path):  # G39
    model = adapted(0)
    hashes = StepHashes(model)
    run = lora_nb.train(model, classification_pairs(), steps=100_000, lr=1e-2, batch_size=4, background=True,
                        callbacks=[hashes])
    try:
        wait_until(lambda: run.step >= 3, DEADLINE, "three steps")
        saved = []
        for i in range(40):
            path = lora_nb.save(model, tmp_path / f"s{i}")
            saved.append({k.removeprefix(PREFIX): v for k, v in load_file(str(path / WEIGHTS)).items()})
        steps_during = run.step
    finally:
        run.stop()
        run.wait(DEADLINE)
    assert steps_during >= 10, "the run must have stepped while the saves ran"
    with hashes.lock:
        known = set(hashes.hashes)
    mixed = [i for i, tensors in enumerate(saved) if digest(tensors) not in known]
    assert not mixed, f"{len(mixed)} of {len(saved)} saves hold no step's weights (a mix of two steps)"


def losses(run) -> list[float]:
    return [r["loss"] for r in run.history]


def test_two_runs_without_dropout_give_what_each_gives_alone():  # G40, the case lora_nb allows
    data_a, data_b = classification_pairs(64), classification_pairs(48)
    alone_a = lora_nb.train(adapted(1), data_a, steps=60, lr=1e-2, seed=3)
    alone_b = lora_nb.train(adapted(2), data_b, steps=60, lr=1e-2, seed=4)
    a, b = adapted(1), adapted(2)
    run_a = lora_nb.train(a, data_a, steps=60, lr=1e-2, seed=3, background=True)
    run_b = lora_nb.train(b, data_b, steps=60, lr=1e-2, seed=4, background=True)
    assert run_a.wait(DEADLINE).state == "finished" and run_b.wait(DEADLINE).state == "finished"
    assert losses(run_a) == losses(alone_a) and losses(run_b) == losses(alone_b)


def test_a_second_run_beside_one_with_dropout_is_refused_in_one_line(ip):  # G40, the case lora_nb refuses
    ip.user_ns.update(a=adapted(1, dropout=0.1), b=adapted(2), pairs=classification_pairs())
    run = ip.run_line_magic("lora", "train a --data pairs --steps 100000 --background")
    try:
        wait_until(lambda: run.step >= 1, DEADLINE, "a step of the first run")
        before = {n: p.detach().clone() for n, p in ip.user_ns["b"].named_parameters()}
        with pytest.raises(TrainingActiveError) as info:
            lora_nb.train(ip.user_ns["b"], ip.user_ns["pairs"], steps=2)
        message = str(info.value)
        assert "\n" not in message and "adapter `default` of a Sequential" in message
        assert "that model has dropout `0.lora_dropout.default` (p=0.1)" in message
        assert all(torch.equal(p, before[n]) for n, p in ip.user_ns["b"].named_parameters())  # nothing ran
        assert registry.find(ip.user_ns["b"]).run is None
    finally:
        run.stop()
        run.wait(DEADLINE)
    assert lora_nb.train(ip.user_ns["b"], ip.user_ns["pairs"], steps=2).state == "finished"  # once it ended


def test_a_run_with_dropout_beside_a_run_without_is_refused_too():
    a, b = adapted(1), adapted(2, dropout=0.2)
    run = lora_nb.train(a, classification_pairs(), steps=100_000, background=True)
    try:
        wait_until(lambda: run.step >= 1, DEADLINE, "a step of the first run")
        with pytest.raises(TrainingActiveError, match=r"and this model has dropout `0.lora_dropout.default` "):
            lora_nb.train(b, classification_pairs(), steps=2)
    finally:
        run.stop()
        run.wait(DEADLINE)
