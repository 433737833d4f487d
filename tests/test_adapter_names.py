"""Any identifier is an adapter name: tensors are selected by exact name segments, never by substring.

peft selects an adapter's tensors by substring in places (`a` is inside `lora_A`'s lowercase twin and
inside `default`; `default` is inside `default2`; `lora` is inside `lora_A`), and freezes every parameter
whose name contains a new combined adapter's name.
"""

from __future__ import annotations

import pytest
import torch
from helpers import TinyEmbedder, run, sample_inputs, tiny_bert, tiny_mlp
from safetensors.torch import load_file

import lora_nb
from lora_nb.core.adapters.keys import adapter_state_dict

PAIRS = [("a", "lo"), ("default", "default2"), ("A", "a"), ("lora", "lora_A")]


def own(model, adapter):
    """``adapter``'s LoRA parameters (``….lora_X.<adapter>.…``): {name: (tensor copy, requires_grad)}."""
    def mine(name):
        parts = name.split(".")
        return any(a.startswith("lora_") and b == adapter for a, b in zip(parts, parts[1:]))

    return {n: (p.detach().clone(), p.requires_grad) for n, p in model.named_parameters() if mine(n)}


def base():
    torch.manual_seed(0)
    return tiny_mlp()


def fill(model, adapter, seed):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for n, p in model.named_parameters():
            if n in own(model, adapter):
                p.copy_(torch.randn(p.shape, generator=g))


def two_adapters(names):
    model = base()
    for i, name in enumerate(names):
        lora_nb.attach(model, r=2 + i, name=name)
        fill(model, name, seed=i)
    return model


@pytest.mark.parametrize("names", PAIRS, ids=["-".join(p) for p in PAIRS])
def test_names_inside_other_names_save_load_and_delete_only_their_own_tensors(names, tmp_path):
    model = two_adapters(names)
    files = {n: load_file(str(lora_nb.save(model, tmp_path / n, adapter=n) / "adapter_model.safetensors"))
             for n in names}
    for i, name in enumerate(names):  # six tensors each (3 layers × A, B), of its own rank, equal to the model's
        assert sorted(files[name]) == sorted(f"base_model.model.{k}.lora_{ab}.weight" for k in (0, 2, 4)
                                             for ab in "AB")
        assert {min(t.shape) for t in files[name].values()} == {2 + i}
        assert all(torch.equal(files[name][f"base_model.model.{n.replace(f'.{name}.', '.')}"], t)
                   for n, (t, _) in own(model, name).items())
    fresh = base()
    for name in names:
        lora_nb.load(fresh, tmp_path / name, name=name)
    for name in names:
        assert all(torch.equal(t, own(fresh, name)[n][0]) for n, (t, _) in own(model, name).items())
    kept = own(model, names[1])
    lora_nb.delete(model, names[0])
    assert own(model, names[0]) == {}
    after = own(model, names[1])
    assert after.keys() == kept.keys()
    assert all(torch.equal(after[n][0], t) and after[n][1] == flag for n, (t, flag) in kept.items())


@pytest.mark.parametrize("build, options", [(tiny_mlp, {"dora": True}), (tiny_bert, {"modules_to_save": "classifier",
                                                                                     "targets": "query"}),
                                            (TinyEmbedder, {"targets": "emb,out"})], ids=["dora", "saved", "emb"])
def test_exact_segment_keys_equal_peft_own_keys_for_a_plain_name(build, options):
    from peft import get_peft_model_state_dict

    model = build()
    session = lora_nb.attach(model, r=2, name="mine", **options)
    ours = adapter_state_dict(model, "mine")
    theirs = get_peft_model_state_dict(session.peft, adapter_name="mine", save_embedding_layers=False)
    assert sorted(ours) == sorted(k.removeprefix("base_model.model.") for k in theirs)
    assert all(torch.equal(ours[k.removeprefix("base_model.model.")], v) for k, v in theirs.items())


def test_adapter_named_a_saved_by_lora_nb_loads_in_peft_with_the_same_outputs(tmp_path):
    from peft import PeftModel

    model = two_adapters(["lo", "a"])
    lora_nb.enable(model, "a")
    path = lora_nb.save(model, tmp_path / "a", adapter="a")
    expected = run(model, sample_inputs(model))
    loaded = PeftModel.from_pretrained(base(), str(path))
    assert torch.equal(run(loaded, sample_inputs(model)), expected)


def test_combining_into_a_name_inside_the_active_adapters_name_keeps_it_trainable():
    model = two_adapters(["default", "lo"])
    lora_nb.enable(model, "default")
    trainable = {n for n, (_, flag) in own(model, "default").items() if flag}
    assert len(trainable) == 6
    lora_nb.combine(model, "default,lo", "1,1", name="fault", combination_type="cat", activate=False)
    assert {n for n, (_, flag) in own(model, "default").items() if flag} == trainable
    assert len(own(model, "fault")) == 6 and not any(flag for _, flag in own(model, "fault").values())
    assert lora_nb.core.find(model).adapters == ["default", "lo", "fault"]


def test_one_letter_adapter_names_through_the_magics(ip, tmp_path):
    ip.user_ns["model"] = two_adapters(["lo", "a"])
    ip.run_line_magic("lora", f"save model {tmp_path / 'a'} --adapter a")
    ip.user_ns["fresh"] = base()
    ip.run_line_magic("lora", f"load fresh {tmp_path / 'a'} --name a")
    ip.run_line_magic("lora", "attach fresh --r 2 --name lo")
    ip.run_line_magic("lora", "delete fresh --adapter lo")
    assert lora_nb.core.find(ip.user_ns["fresh"]).adapters == ["a"]
    loaded = own(ip.user_ns["fresh"], "a")
    assert all(torch.equal(t, loaded[n][0]) for n, (t, _) in own(ip.user_ns["model"], "a").items())
