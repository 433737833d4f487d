"""Several adapters on one model: switching, status, merge/unmerge, combine and strength (G20 for bf16)."""

from __future__ import annotations

import copy
import math
from types import SimpleNamespace

import pytest
import torch
from helpers import make_b_nonzero, run, sample_inputs, tiny_gpt2, tiny_llama
from IPython.core.error import UsageError
from peft import get_peft_model, get_peft_model_state_dict, set_peft_model_state_dict
from peft.tuners.lora import LoraLayer

import lora_nb
from lora_nb.core import find
from lora_nb.core.adapters.switch import set_strength, strength
from lora_nb.errors import AdapterError, OptionError, TrainingActiveError


def two_adapters(build=tiny_llama):
    """A model with adapters `one` (r=4, all linear) and `two` (r=2, attention only), both with B ≠ 0."""
    model = build()
    pristine = copy.deepcopy(model)
    lora_nb.attach(model, name="one", r=4, alpha=8)
    make_b_nonzero(model, "one", 0.3)
    lora_nb.attach(model, name="two", r=2, alpha=4, targets="q_proj,v_proj" if build is tiny_llama else "c_attn")
    make_b_nonzero(model, "two", 0.3)
    return model, pristine


def peft_twin(model, pristine):
    """The same adapters and weights, built with peft alone."""
    session = find(model)
    twin = get_peft_model(copy.deepcopy(pristine), copy.deepcopy(session.peft.peft_config["one"]), adapter_name="one")
    twin.add_adapter("two", copy.deepcopy(session.peft.peft_config["two"]))
    for name in ("one", "two"):
        set_peft_model_state_dict(twin, get_peft_model_state_dict(session.peft, adapter_name=name), adapter_name=name)
    return twin


class Listener:
    def __init__(self, heard: list):
        self.heard = heard

    def on_model_change(self, session, what):
        self.heard.append(what)


def lora_layers(model):
    return [m for m in model.modules() if isinstance(m, LoraLayer)]


def test_switching_gives_exactly_what_peft_gives_and_off_is_the_base():
    model, pristine = two_adapters()
    twin = peft_twin(model, pristine)
    x = sample_inputs(model)
    base = run(pristine, x)
    for name in ("one", "two", "one"):
        lora_nb.enable(model, name)
        twin.set_adapter(name)
        assert torch.equal(run(model, x), run(twin, x)), name
        assert not torch.allclose(run(model, x), base)
    lora_nb.disable(model)
    assert torch.equal(run(model, x), base)
    lora_nb.enable(model, "two")
    twin.set_adapter("two")
    assert torch.equal(run(model, x), run(twin, x))


def test_fast_switching_leaves_the_same_peft_state_as_peft_calls():
    model, pristine = two_adapters()
    twin = peft_twin(model, pristine)
    steps = [(lambda: lora_nb.enable(model, "two"), lambda: twin.set_adapter("two")),
             (lambda: lora_nb.disable(model), twin.base_model.disable_adapter_layers),
             (lambda: lora_nb.enable(model), twin.base_model.enable_adapter_layers),
             (lambda: lora_nb.enable(model, "one"), lambda: twin.set_adapter("one"))]
    for ours, theirs in steps:
        ours()
        theirs()
        grads = {n: p.requires_grad for n, p in find(model).peft.named_parameters()}
        assert grads == {n: p.requires_grad for n, p in twin.named_parameters()}
        assert find(model).peft.active_adapters == twin.active_adapters
        assert [(m.disable_adapters, m.active_adapters) for m in lora_layers(model)] == \
               [(m.disable_adapters, m.active_adapters) for m in lora_layers(twin)]


def test_status_reports_irregular_states_instead_of_hiding_them():
    model, _ = two_adapters()
    lora_nb.enable(model, "one")
    layers = lora_layers(model)
    layers[0].merge(adapter_names=["one"])  # peft directly: only one layer merged
    layers[1].enable_adapters(False)  # and one layer off
    info = {a.name: a for a in lora_nb.status(model).adapters}
    assert info["one"].merged == "irregular" and info["one"].enabled == "irregular"
    assert "irregular" in str(lora_nb.status(model))


def test_merge_then_unmerge_restores_the_base_bit_identically():
    model, pristine = two_adapters()
    x = sample_inputs(model)
    lora_nb.enable(model, "one")
    on = run(model, x)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    heard = []
    find(model).listeners.add(listener := Listener(heard))
    assert lora_nb.merge(model) == "one"
    assert all(m.merged_adapters == ["one"] for m in lora_layers(model))
    assert (run(model, x) - on).abs().max() < 1e-5
    assert not torch.equal(model.state_dict()["model.layers.0.self_attn.q_proj.base_layer.weight"],
                           before["model.layers.0.self_attn.q_proj.base_layer.weight"])
    with pytest.raises(AdapterError, match="already merged"):
        lora_nb.merge(model)
    lora_nb.unmerge(model)
    assert heard == ["merge", "unmerge"] and listener
    assert not any(m.merged for m in lora_layers(model))  # peft's flags agree
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())
    assert torch.equal(run(model, x), on)
    with pytest.raises(AdapterError, match="no adapter is merged"):
        lora_nb.unmerge(model)


def test_merge_without_copies_is_within_1e5_and_detach_after_merge_is_exact():
    model, pristine = two_adapters()
    x = sample_inputs(model)
    on = run(model, x)  # `two` is active
    lora_nb.merge(model, keep_base=False)
    lora_nb.unmerge(model)
    assert (run(model, x) - on).abs().max() < 1e-5
    model, pristine = two_adapters()
    lora_nb.merge(model, "one")
    lora_nb.detach(model)
    assert all(torch.equal(v, pristine.state_dict()[k]) for k, v in model.state_dict().items())


def test_off_or_switch_while_merged_unmerges_exactly_first():
    model, pristine = two_adapters()
    twin = peft_twin(model, pristine)
    x = sample_inputs(model)
    lora_nb.merge(model, "one")
    lora_nb.disable(model)
    assert torch.equal(run(model, x), run(pristine, x))
    lora_nb.merge(model, "one")
    lora_nb.enable(model, "two")  # peft would unmerge by subtraction; lora_nb restores the copies
    twin.set_adapter("two")
    assert torch.equal(run(model, x), run(twin, x))
    assert lora_nb.status(model).adapters[0].merged is False
    lora_nb.merge(model, "one")
    lora_nb.attach(model, name="three", r=2)  # the new adapter is active and on; the base is exact again
    weights = {k: v for k, v in model.state_dict().items() if "base_layer" in k}
    assert all(torch.equal(v, pristine.state_dict()[k.replace(".base_layer", "")]) for k, v in weights.items())
    assert find(model).active == "three" and lora_nb.status(model).adapters[2].enabled is True


def test_merge_refused_while_training():
    model, _ = two_adapters()
    find(model).run = SimpleNamespace(state="running")
    with pytest.raises(TrainingActiveError, match="training is running; stop it first"):
        lora_nb.merge(model)
    assert not any(m.merged for m in lora_layers(model))


@pytest.mark.parametrize("kind", ["cat", "linear"])
def test_combine_is_the_weighted_adapter_peft_defines(kind):
    model = tiny_gpt2()  # Conv1D: ΔW is stored transposed (fan_in_fan_out)
    for name in ("one", "two"):
        lora_nb.attach(model, name=name, r=4, alpha=8 if name == "one" else 4)
        make_b_nonzero(model, name, 0.3)
    weights = [0.7, -0.3]
    assert lora_nb.combine(model, ["one", "two"], weights, name="mix", combination_type=kind) == "mix"
    assert find(model).active == "mix"
    for layer in lora_layers(model):
        A = {n: layer.lora_A[n].weight.detach() for n in ("one", "two")}
        B = {n: layer.lora_B[n].weight.detach() for n in ("one", "two")}
        s = {n: layer.scaling[n] for n in ("one", "two")}
        if kind == "cat":
            expected = sum(w * s[n] * B[n] @ A[n] for n, w in zip(("one", "two"), weights))
        else:
            c = {n: math.sqrt(abs(w * s[n])) for n, w in zip(("one", "two"), weights)}
            sign = {n: math.copysign(1.0, w) for n, w in zip(("one", "two"), weights)}
            expected = sum(c[n] * B[n] for n in c) @ sum(sign[n] * c[n] * A[n] for n in c)
        torch.testing.assert_close(layer.get_delta_weight("mix"), expected.T, rtol=1e-5, atol=1e-6)


def test_combine_errors_are_one_line_and_add_nothing():
    model = tiny_llama()
    lora_nb.attach(model, name="alpha", r=4)
    lora_nb.attach(model, name="beta", r=2)
    cases = [
        (dict(adapters=["alpha", "beta"], weights=[1.0]), OptionError, "2 adapter\\(s\\) but 1 weight"),
        (dict(adapters=["alpha", "bета"], weights=[1, 1]), AdapterError, "no adapter `bета`"),
        (dict(adapters=["alpha", "betta"], weights=[1, 1]), AdapterError, "did you mean `beta`"),
        (dict(adapters="alpha,beta", weights="1,1", combination_type="linear"), OptionError,
         "needs adapters of equal rank .*use `cat` or `svd`"),
        (dict(adapters="alpha,beta", weights="1,x"), OptionError, "weights must be numbers"),
        (dict(adapters="alpha,beta", weights="1,1", combination_type="lineer"), OptionError, "did you mean `linear`"),
        (dict(adapters="alpha,beta", weights="1,1", name="beta"), AdapterError, "already exists"),
    ]
    for kwargs, error, message in cases:
        with pytest.raises(error, match=message) as info:
            lora_nb.combine(model, **kwargs)
        assert "\n" not in str(info.value)
        assert find(model).adapters == ["alpha", "beta"]
    lora_nb.combine(model, "alpha,beta", "0.5,0.5", name="mix")  # svd: ranks may differ
    assert find(model).peft.peft_config["mix"].r == 4


def test_strength_is_read_from_peft_and_scales_the_update():
    model = tiny_llama()
    x = sample_inputs(model)
    base = run(model, x)
    lora_nb.attach(model, r=4, alpha=8, rslora=True)
    make_b_nonzero(model)
    full = run(model, x)
    assert strength(model) == pytest.approx(1.0)
    set_strength(model, 0.0)
    torch.testing.assert_close(run(model, x), base, rtol=0, atol=1e-6)
    set_strength(model, 0.5)
    layer = lora_layers(model)[0]
    assert layer.scaling["default"] == pytest.approx(0.5 * 8 / math.sqrt(4))  # rslora: alpha / sqrt(r)
    layer.set_scale("default", 1.5)  # peft directly: lora_nb reads it, layers now disagree
    assert strength(model) is None
    set_strength(model, 1.0)
    assert strength(model) == pytest.approx(1.0) and torch.equal(run(model, x), full)
    for bad in (2.5, -0.1, "x"):
        with pytest.raises(OptionError, match="strength must be"):
            set_strength(model, bad)
    lora_nb.merge(model)
    with pytest.raises(AdapterError, match="merged; unmerge it"):
        set_strength(model, 0.5)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_precision_base_toggle_merge_unmerge(dtype):  # G20
    model = tiny_llama().to(dtype)
    x = sample_inputs(model)
    base = run(model, x)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    lora_nb.attach(model, name="one", r=4)
    lora_nb.attach(model, name="two", r=4)
    make_b_nonzero(model, "one")
    make_b_nonzero(model, "two")
    adapter = [p for n, p in model.named_parameters() if "lora_" in n]
    assert adapter and all(p.dtype == torch.float32 for p in adapter)
    on_b = run(model, x)
    lora_nb.enable(model, "one")
    on_a = run(model, x)
    assert not torch.equal(on_a, on_b)
    lora_nb.disable(model)
    assert torch.equal(run(model, x), base)
    lora_nb.merge(model, "one")
    assert (run(model, x).float() - on_a.float()).abs().max() < 0.1  # merged in half precision
    lora_nb.unmerge(model)
    assert torch.equal(run(model, x), on_a)
    assert all(p.dtype == torch.float32 for n, p in model.named_parameters() if "lora_" in n)
    lora_nb.detach(model)
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())


def test_merge_unmerge_combine_magics(ip):
    ip.user_ns["model"] = model = tiny_llama()
    x = sample_inputs(model)
    ip.run_line_magic("lora", "attach model --name one --r 4")
    ip.run_line_magic("lora", "attach model --name two --r 4")
    make_b_nonzero(model, "one")
    make_b_nonzero(model, "two")
    ip.run_line_magic("lora", "on model --adapter one")
    on = run(model, x)
    assert "merged" in ip.run_line_magic("lora", "merge model")
    ip.run_line_magic("lora", "unmerge model")
    assert torch.equal(run(model, x), on)
    text = ip.run_line_magic("lora", "combine model --adapters one,two --weights 0.7,0.3 --name mix --type cat")
    assert "`mix`" in text and find(model).active == "mix"
    for line, message in [("combine model --adapters one,c --weights 1,1", "no adapter `c`"),
                          ("combine model --adapters one,two --weights 1", "2 adapter\\(s\\) but 1 weight"),
                          ("unmerge model", "no adapter is merged"),
                          ("merge model --adapter zz", "no adapter `zz`")]:
        with pytest.raises(UsageError, match=message) as info:
            ip.run_line_magic("lora", line)
        assert "\n" not in str(info.value)
