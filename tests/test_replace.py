"""`attach --replace` is atomic: when the new adapter cannot be injected, the old one is exactly as it was."""

from __future__ import annotations

import peft
import pytest
import torch
from helpers import lora_params, make_b_nonzero, run, sample_inputs, tiny_llama

import lora_nb
from lora_nb.core import registry
from lora_nb.errors import InjectionError


class InjectionFailed(RuntimeError):
    pass


def failing_for_r8(real):
    """``real`` (a peft function taking the config), failing for the new adapter's config (r=8) only."""

    def call(*args, **kwargs):
        config = next(a for a in (*args, *kwargs.values()) if isinstance(a, peft.LoraConfig))
        if config.r == 8:
            raise InjectionFailed("peft could not inject")
        return real(*args, **kwargs)

    return call


def test_replacing_the_only_adapter_keeps_it_when_injection_fails(monkeypatch):
    model = tiny_llama()
    lora_nb.attach(model, r=4, targets="q_proj,v_proj")
    make_b_nonzero(model)
    lora_nb.set_strength(model, 0.5)
    x = sample_inputs(model)
    out, weights = run(model, x), lora_params(model)
    monkeypatch.setattr(peft, "get_peft_model", failing_for_r8(peft.get_peft_model))
    with pytest.raises(InjectionError, match=r"^peft cannot adapt `.*k_proj` \(Linear\): peft could not inject"):
        lora_nb.attach(model, r=8, targets="k_proj", replace=True)
    session = registry.find(model)
    assert session is not None and session.adapters == ["default"] and session.active == "default"
    assert lora_params(model).keys() == weights.keys()
    assert all(torch.equal(p, weights[n]) for n, p in lora_params(model).items())
    assert lora_nb.strength(model) == 0.5 and torch.equal(run(model, x), out)
    assert session.records["default"]["options"]["r"] == 4


def test_replacing_one_of_several_adapters_keeps_it_when_injection_fails(monkeypatch):
    model = tiny_llama()
    lora_nb.attach(model, r=4, targets="q_proj", name="one")
    lora_nb.attach(model, r=2, targets="v_proj", name="two")
    make_b_nonzero(model, "one")
    make_b_nonzero(model, "two")
    lora_nb.enable(model, "one")
    x = sample_inputs(model)
    out, weights = run(model, x), lora_params(model)
    session = registry.find(model)
    monkeypatch.setattr(type(session.peft), "add_adapter", failing_for_r8(type(session.peft).add_adapter))
    with pytest.raises(InjectionError, match=r"^peft cannot adapt `.*k_proj` \(Linear\): peft could not inject"):
        lora_nb.attach(model, r=8, targets="k_proj", name="two", replace=True)
    assert sorted(session.adapters) == ["one", "two"] and session.active == "one"
    assert all(torch.equal(p, weights[n]) for n, p in lora_params(model).items())
    assert lora_params(model).keys() == weights.keys() and torch.equal(run(model, x), out)


def test_replacing_works_when_injection_succeeds():
    model = tiny_llama()
    lora_nb.attach(model, r=4, targets="q_proj")
    lora_nb.attach(model, r=8, targets="k_proj", replace=True)
    session = registry.find(model)
    assert session.adapters == ["default"] and session.records["default"]["options"]["r"] == 8
    assert all("k_proj" in n for n in lora_params(model))
