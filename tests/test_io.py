"""Save / load in PEFT format: round trips with peft both ways (G11), atomic saves (G12), verified loads
(G13), pickles refused and never executed (G14), half-precision bases (G20)."""

from __future__ import annotations

import copy
import json
import os
import pickle

import pytest
import torch
from helpers import make_b_nonzero, run, sample_inputs, tiny_bert, tiny_gpt2, tiny_llama
from IPython.core.error import UsageError
from peft import LoraConfig, PeftModel, get_peft_model
from safetensors.torch import load_file, save_file

import lora_nb
from lora_nb.core import find
from lora_nb.errors import AdapterError, AdapterFileError, LoraNBWarning, PathError, TrainingActiveError


def adapted(build=tiny_gpt2, name="default", **options):
    model = build()
    pristine = copy.deepcopy(model)
    lora_nb.attach(model, name=name, r=4, **options)
    make_b_nonzero(model, name)
    return model, pristine


def adapters_state(model):
    session = find(model)
    params = {n: p.detach().clone() for n, p in model.named_parameters()}
    return (session.adapters if session else None), params


def same_state(model, state):
    adapters, params = adapters_state(model)
    return adapters == state[0] and params.keys() == state[1].keys() and \
        all(torch.equal(v, state[1][k]) for k, v in params.items())


def test_lora_nb_save_loads_in_peft_and_back(tmp_path):  # G11
    model, pristine = adapted(name="second")  # a non-default name: peft would use a sub-folder
    x = sample_inputs(model)
    out = run(model, x)
    path = lora_nb.save(model, tmp_path / "adapter")
    assert sorted(os.listdir(path)) == ["adapter_config.json", "adapter_model.safetensors", "lora_nb_manifest.json",
                                     "lora_nb_record.json"]
    record = json.loads((path / "lora_nb_record.json").read_text())
    assert record["adapter"] == "second" and record["options"]["r"] == 4 and record["runs"] == []
    peft_model = PeftModel.from_pretrained(copy.deepcopy(pristine), str(path))
    assert (run(peft_model, x) - out).abs().max() < 1e-5
    fresh = copy.deepcopy(pristine)
    assert lora_nb.load(fresh, path) == "default"  # a model without a session gets one
    assert (run(fresh, x) - out).abs().max() < 1e-5
    assert find(fresh).records["default"]["options"]["loaded_from"] == str(path)
    assert all(p.requires_grad for n, p in fresh.named_parameters() if "lora_" in n)  # trainable by default


def test_peft_save_loads_in_lora_nb(tmp_path):  # G11
    base = tiny_llama()
    pristine = copy.deepcopy(base)
    peft_model = get_peft_model(base, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"]))
    make_b_nonzero(peft_model)
    x = sample_inputs(pristine)
    out = run(peft_model, x)
    peft_model.save_pretrained(str(tmp_path / "peft"))
    model, _ = adapted(lambda: copy.deepcopy(pristine), name="mine")
    with pytest.warns(LoraNBWarning, match="no lora_nb_manifest.json"):  # from elsewhere: loaded, said once
        lora_nb.load(model, tmp_path / "peft", name="theirs", trainable=False)
    assert find(model).adapters == ["mine", "theirs"] and find(model).active == "theirs"
    assert (run(model, x) - out).abs().max() < 1e-5
    assert not any(p.requires_grad for n, p in model.named_parameters() if ".theirs." in n)


def test_modules_to_save_round_trip(tmp_path):
    model, pristine = adapted(tiny_bert, modules_to_save="classifier")
    with torch.no_grad():
        model.classifier.modules_to_save["default"].weight.add_(1.0)
    x = sample_inputs(model)
    lora_nb.save(model, tmp_path / "clf")
    fresh = copy.deepcopy(pristine)
    lora_nb.load(fresh, tmp_path / "clf")
    assert (run(fresh, x) - run(model, x)).abs().max() < 1e-5


def test_save_replaces_an_older_save_only_when_asked_and_refuses_other_folders(tmp_path):
    model, _ = adapted()
    lora_nb.save(model, tmp_path / "ad")
    before = {n: (tmp_path / "ad" / n).read_bytes() for n in os.listdir(tmp_path / "ad")}
    make_b_nonzero(model, scale=2.0)
    with pytest.raises(PathError, match=r"already holds a saved adapter; pass `overwrite=True` to replace it"):
        lora_nb.save(model, tmp_path / "ad")
    assert {n: (tmp_path / "ad" / n).read_bytes() for n in os.listdir(tmp_path / "ad")} == before
    lora_nb.save(model, tmp_path / "ad", overwrite=True)
    saved = load_file(str(tmp_path / "ad" / "adapter_model.safetensors"))
    key = next(k for k in saved if "lora_B" in k)
    assert saved[key].abs().max() > 1.0  # the new weights
    assert os.listdir(tmp_path) == ["ad"]
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "todo.txt").write_text("mine")
    with pytest.raises(PathError, match="not a saved adapter folder"):
        lora_nb.save(model, tmp_path / "notes")
    assert os.listdir(tmp_path / "notes") == ["todo.txt"]


def test_crash_mid_save_leaves_the_previous_save_intact(tmp_path, monkeypatch):  # G12
    model, _ = adapted()
    path = lora_nb.save(model, tmp_path / "ad")
    before = {n: (path / n).read_bytes() for n in os.listdir(path)}
    make_b_nonzero(model, scale=3.0)
    import safetensors.torch

    def half_write(tensors, filename, metadata=None):
        with open(filename, "wb") as f:
            f.write(b"\x00" * 10)  # a partial file, then the disk "fails"
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(safetensors.torch, "save_file", half_write)
    monkeypatch.setattr("peft.peft_model.safe_save_file", half_write)
    with pytest.raises(AdapterFileError, match="previous save is intact"):
        lora_nb.save(model, path, overwrite=True)
    assert os.listdir(tmp_path) == ["ad"]  # no half-written directory visible
    assert {n: (path / n).read_bytes() for n in os.listdir(path)} == before
    with pytest.raises(AdapterFileError):
        lora_nb.save(model, tmp_path / "new")
    assert os.listdir(tmp_path) == ["ad"]


def corrupt(path, how):
    weights = path / "adapter_model.safetensors"
    if how == "truncated":
        weights.write_bytes(weights.read_bytes()[:100])
    elif how == "garbage":
        weights.write_bytes(os.urandom(500))
    else:
        tensors = load_file(str(weights))
        key = sorted(k for k in tensors if "lora_B" in k)[0]
        if how == "missing key":
            del tensors[key]
        elif how == "wrong shape":
            tensors[key] = torch.zeros(3, 3)
        elif how == "nan":
            tensors[key][0, 0] = float("nan")
        elif how == "unexpected key":
            tensors["base_model.model.extra.lora_A.weight"] = torch.zeros(2, 2)
        save_file(tensors, str(weights))


@pytest.mark.parametrize("how, message", [
    ("truncated", "not a readable safetensors file"), ("garbage", "not a readable safetensors file"),
    ("missing key", "1 missing key"), ("wrong shape", "1 wrong shape"), ("nan", "NaN or inf"),
    ("unexpected key", "1 unexpected key"),
])
def test_bad_files_are_refused_and_change_nothing(tmp_path, how, message):  # G13
    source, pristine = adapted()
    path = lora_nb.save(source, tmp_path / "ad")
    corrupt(path, how)
    model, _ = adapted(lambda: copy.deepcopy(pristine), name="mine")
    state = adapters_state(model)
    with pytest.raises(AdapterFileError, match=message) as info:
        lora_nb.load(model, path, name="other")
    assert "\n" not in str(info.value)
    assert same_state(model, state)
    bare = copy.deepcopy(pristine)  # no session: none is created
    with pytest.raises(AdapterFileError):
        lora_nb.load(bare, path)
    assert find(bare) is None and same_state(bare, (None, {n: p for n, p in pristine.named_parameters()}))


def test_config_that_does_not_fit_is_refused(tmp_path):  # G13
    source, pristine = adapted()
    path = lora_nb.save(source, tmp_path / "ad")
    config = json.loads((path / "adapter_config.json").read_text())
    config["r"] = 2  # the tensors have r=4
    (path / "adapter_config.json").write_text(json.dumps(config))
    model, _ = adapted(lambda: copy.deepcopy(pristine), name="mine")
    state = adapters_state(model)
    with pytest.raises(AdapterFileError, match="wrong shape"):
        lora_nb.load(model, path)
    (path / "adapter_config.json").write_text("{not json")
    with pytest.raises(AdapterFileError, match="not a valid LoRA config"):
        lora_nb.load(model, path)
    assert same_state(model, state)
    with pytest.raises(AdapterError, match="`mine` already exists"):
        lora_nb.save(source, tmp_path / "again") and lora_nb.load(model, tmp_path / "again", name="mine")


def test_injection_failure_after_checks_rolls_back(tmp_path, monkeypatch):  # peft can fail after injecting
    source, pristine = adapted()
    path = lora_nb.save(source, tmp_path / "ad")
    model, _ = adapted(lambda: copy.deepcopy(pristine), name="mine")
    state = adapters_state(model)

    def boom(*args, **kwargs):
        raise RuntimeError("disk went away")

    monkeypatch.setattr("lora_nb.core.adapters.io.fill_adapter", boom)
    with pytest.raises(RuntimeError, match="disk went away"):
        lora_nb.load(model, path, name="other")
    assert same_state(model, state)


class Payload:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))  # unpickling would create the marker file


@pytest.mark.parametrize("allow", [False, True])
def test_pickle_is_refused_and_its_payload_never_runs(tmp_path, allow):  # G14
    source, pristine = adapted()
    path = lora_nb.save(source, tmp_path / "ad")
    os.remove(path / "adapter_model.safetensors")
    marker = tmp_path / "pwned"
    with open(path / "adapter_model.bin", "wb") as f:
        pickle.dump({"base_model.model.x": Payload(str(marker))}, f, protocol=2)
    model = copy.deepcopy(pristine)
    with pytest.raises(AdapterFileError, match="refused" if not allow else "weights_only refused"):
        lora_nb.load(model, path, allow_pickle=allow)
    assert not marker.exists()
    assert find(model) is None


def test_trusted_pickle_loads_when_allowed(tmp_path):  # G14
    source, pristine = adapted()
    x = sample_inputs(source)
    path = lora_nb.save(source, tmp_path / "ad")
    torch.save(load_file(str(path / "adapter_model.safetensors")), path / "adapter_model.bin")
    os.remove(path / "adapter_model.safetensors")
    model = copy.deepcopy(pristine)
    lora_nb.load(model, path, allow_pickle=True)
    assert (run(model, x) - run(source, x)).abs().max() < 1e-5


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_precision_save_and_load(tmp_path, dtype):  # G20
    model, pristine = adapted(lambda: tiny_llama().to(dtype))
    x = sample_inputs(model)
    path = lora_nb.save(model, tmp_path / "ad")
    assert all(t.dtype == torch.float32 for t in load_file(str(path / "adapter_model.safetensors")).values())
    fresh = copy.deepcopy(pristine)
    lora_nb.load(fresh, path)
    assert all(p.dtype == torch.float32 for n, p in fresh.named_parameters() if "lora_" in n)
    assert torch.equal(run(fresh, x), run(model, x))


def test_load_refused_while_training(tmp_path):
    model, _ = adapted()
    path = lora_nb.save(model, tmp_path / "ad")
    from types import SimpleNamespace

    find(model).run = SimpleNamespace(state="running")
    with pytest.raises(TrainingActiveError):
        lora_nb.load(model, path, name="other")
    find(model).run = None
    lora_nb.save(model, tmp_path / "ad2")  # saving is read-only: allowed (tested idle here)


def test_an_adapter_from_another_model_says_where_it_came_from(ip, tmp_path):
    from helpers import tiny_gpt2, tiny_llama

    llama = tiny_llama()
    lora_nb.attach(llama, r=4)
    path = lora_nb.save(llama, tmp_path / "llama_adapter")
    gpt = tiny_gpt2()
    with pytest.raises(AdapterFileError) as info:
        lora_nb.load(gpt, path)
    message = str(info.value)
    assert message.startswith(f"{path} holds an adapter saved from a LlamaForCausalLM; this model is a GPT2LMHeadModel: "
                              "its target modules model.layers.0.self_attn.q_proj, model.layers.0.self_attn.k_proj, "
                              "… (12 more) are not in it")
    assert len(message) < 300 and "\\" not in message and find(gpt) is None
    ip.user_ns["gpt"] = gpt
    with pytest.raises(UsageError, match="saved from a LlamaForCausalLM; this model is a GPT2LMHeadModel"):
        ip.run_line_magic("lora", f"load gpt {path}")


def test_save_and_load_magics(ip, tmp_path):
    model, pristine = adapted()
    ip.user_ns["model"] = model
    ip.user_ns["other"] = other = copy.deepcopy(pristine)
    x = sample_inputs(model)
    assert "saved to" in ip.run_line_magic("lora", f"save model {tmp_path}/ad")
    with pytest.raises(UsageError, match=r"already holds a saved adapter; pass `--overwrite` to replace it"):
        ip.run_line_magic("lora", f"save model {tmp_path}/ad")
    assert "saved to" in ip.run_line_magic("lora", f"save model {tmp_path}/ad --overwrite")
    assert "`mine` loaded" in ip.run_line_magic("lora", f"load other {tmp_path}/ad --name mine")
    assert (run(other, x) - run(model, x)).abs().max() < 1e-5
    for line, message in [(f"load other {tmp_path}/nothing", "no adapter folder"),
                          (f"load other {tmp_path}/ad --name mine", "`mine` already exists"),
                          (f"save model {tmp_path}/x --adapter nope", "no adapter `nope`")]:
        with pytest.raises(UsageError, match=message) as info:
            ip.run_line_magic("lora", line)
        assert "\n" not in str(info.value)
    os.rename(tmp_path / "ad" / "adapter_model.safetensors", tmp_path / "ad" / "x")
    torch.save({}, tmp_path / "ad" / "adapter_model.bin")
    with pytest.raises(UsageError, match="pickle"):
        ip.run_line_magic("lora", f"load other {tmp_path}/ad --name third")
    with pytest.raises(UsageError, match="missing key"):
        ip.run_line_magic("lora", f"load other {tmp_path}/ad --name third --allow-pickle")
