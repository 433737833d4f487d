"""Exports as a table of formats: every input checked before anything is written, one line for a missing package, a
second export into an export folder refused without overwrite, older releases' export folders still recognised,
GPT-2 GGUF files of any length of context that load back, and a survival meter that never reads above 100 %."""

from __future__ import annotations

import json
import os
import sys

import pytest
import torch
from helpers import make_b_nonzero, tiny_mlp
from test_ship import bpe_tokenizer, logits, prompts, same, snapshot, tiny

import lora_nb
from lora_nb.core.export import api
from lora_nb.core.export.formats import FORMATS, QUANTS, Format
from lora_nb.core.export.survival import Survival, kept
from lora_nb.core.files import MANIFEST, folder_kind, verify
from lora_nb.errors import LoraNBError

pytest.importorskip("gguf")


def test_every_format_is_one_table_entry_and_the_magic_offers_exactly_those():
    from lora_nb.cmd.router import VERBS

    assert list(FORMATS) == ["script", "merged", "gguf", "gguf-lora"]
    for name, fmt in FORMATS.items():
        assert isinstance(fmt, Format) and fmt.name == name and fmt.kind == f"export-{name}"
        assert fmt.default_quant is None if not fmt.quants else fmt.default_quant in fmt.quants
        assert not fmt.takes_metric or fmt.reloadable  # a metric is measured on the export loaded back
    assert len({f.kind for f in FORMATS.values()}) == len(FORMATS)
    actions = {a.dest: a for a in VERBS["export"].parser._actions}
    assert tuple(actions["format"].choices) == tuple(FORMATS)
    assert tuple(actions["quant"].choices) == QUANTS == tuple(dict.fromkeys(q for f in FORMATS.values()
                                                                             for q in f.quants))
    assert actions["overwrite"].default is False


def _bad_inputs(tok):
    def broken(lm):
        raise ZeroDivisionError("oops")

    gpt2_long = tiny("gpt2")
    gpt2_long.config.n_positions = 2048  # the check reads the config: no need to build a 2048-position model
    return [
        (dict(format="zip"), "--format must be one of script, merged, gguf, gguf-lora, not `zip`"),
        (dict(format="gguf", quant="q3_k", tokenizer=tok), "--quant for a `gguf` export must be one of"),
        (dict(format="gguf-lora", quant="q4_0"), "must be one of f32, f16, bf16, q8_0, not `q4_0`"),
        (dict(format="merged", quant="q8_0"), "--quant applies to `gguf` and `gguf-lora` exports, not to `merged`"),
        (dict(format="gguf"), "a `gguf` export carries its tokenizer"),
        (dict(format="gguf", tokenizer=["not", "one"]), "tokenizer must be a tokenizer"),
        (dict(format="merged", metric=3), "metric must be a function"),
        (dict(format="gguf-lora", metric=len), "--metric applies to `merged` and `gguf` exports"),
        (dict(format="merged", metric=broken), "^the metric raised ZeroDivisionError: oops$"),
        (dict(format="merged", data=["x"]), "data: only a `script` export takes data"),
        (dict(format="merged", adapter="nope"), "nope"),
        (dict(format="gguf", tokenizer=tok, model=tiny_mlp()), "GGUF export knows llama and gpt2 models"),
        (dict(format="gguf", tokenizer=tok, model=gpt2_long), "2048 positions; transformers reads a GGUF GPT-2"),
        (dict(format="script", quant="f16"), "--quant applies to `gguf` and `gguf-lora` exports, not to `script`"),
        (dict(format="script", data=[1], bogus=2), "export takes no option `bogus`"),
    ]


def test_every_bad_input_is_refused_before_anything_is_written(tmp_path, monkeypatch):
    model, tok = tiny("llama"), bpe_tokenizer()
    entered = []
    monkeypatch.setattr(api, "atomic_folder", lambda *a, **k: entered.append(a) or pytest.fail("wrote"))
    for i, (kwargs, message) in enumerate(_bad_inputs(tok)):
        target = tmp_path / f"out{i}"
        subject = kwargs.pop("model", model)
        if subject is not model and not lora_nb.core.registry.find(subject):
            lora_nb.attach(subject, r=2, targets="0" if isinstance(subject, torch.nn.Sequential) else "auto")
        before = snapshot(subject)
        with pytest.raises(LoraNBError, match=message) as info:
            lora_nb.export(subject, target, **kwargs)
        assert "\n" not in str(info.value), kwargs
        assert not target.exists() and same(before, snapshot(subject)), kwargs
    lora_nb.merge(model)
    with pytest.raises(LoraNBError, match="unmerge it"):
        lora_nb.export(model, tmp_path / "m", format="gguf", tokenizer=tok)
    lora_nb.unmerge(model)
    assert entered == [] and sorted(os.listdir(tmp_path)) == []  # no folder, no staging, nothing


def test_a_missing_gguf_package_is_one_line_naming_the_extra(tmp_path, monkeypatch, ip):
    from IPython.core.error import UsageError

    model, tok = tiny("gpt2"), bpe_tokenizer()
    monkeypatch.setitem(sys.modules, "gguf", None)  # `import gguf` now fails as if it were not installed
    for fmt in ("gguf", "gguf-lora"):
        with pytest.raises(LoraNBError, match=r'^a `gguf(-lora)?` export needs the `gguf` package: '
                                              r'pip install "lora-nb\[gguf\]"$'):
            lora_nb.export(model, tmp_path / fmt, format=fmt, tokenizer=tok)
    ip.user_ns.update(model=model, tok=tok)
    with pytest.raises(UsageError, match=r'pip install "lora-nb\[gguf\]"'):
        ip.run_line_magic("lora", f"export model {tmp_path / 'g'} --format gguf --tokenizer tok")
    assert os.listdir(tmp_path) == []
    lora_nb.export(model, tmp_path / "m", format="merged")  # the other formats need no gguf
    assert folder_kind(tmp_path / "m") == "export-merged"


def test_a_second_export_is_refused_without_overwrite_and_replaces_atomically_with_it(tmp_path, ip):
    from IPython.core.error import UsageError

    model, tok = tiny("llama"), bpe_tokenizer()
    first = lora_nb.export(model, tmp_path / "g", format="gguf", quant="q8_0", tokenizer=tok)
    assert folder_kind(first.path) == "export-gguf" and verify(first.path).ok
    assert MANIFEST not in first.files and not any(p.name.startswith(".lora_nb-export") for p in first.path.iterdir())
    with pytest.raises(LoraNBError, match="already holds a `gguf` export; pass `overwrite=True`"):
        lora_nb.export(model, tmp_path / "g", format="gguf", quant="f16", tokenizer=tok)
    assert sorted(os.listdir(tmp_path / "g")) == sorted([*first.files, MANIFEST])  # untouched
    again = lora_nb.export(model, tmp_path / "g", format="gguf", quant="f16", tokenizer=tok, overwrite=True)
    assert sorted(os.listdir(tmp_path / "g")) == sorted(["Modelfile", "model-f16.gguf", MANIFEST])  # old file gone
    assert verify(again.path).ok and os.listdir(tmp_path) == ["g"]  # no staging or old folder beside it
    ip.user_ns.update(model=model, tok=tok)
    line = f"export model {tmp_path / 'g'} --format gguf --quant q8_0 --tokenizer tok"
    with pytest.raises(UsageError, match="already holds a `gguf` export"):
        ip.run_line_magic("lora", line)
    assert ip.run_line_magic("lora", line + " --overwrite").file == "model-q8_0.gguf"
    with pytest.raises(UsageError, match="is not a `merged` export folder"):  # another format is not replaced
        ip.run_line_magic("lora", f"export model {tmp_path / 'g'} --format merged --overwrite")
    script = lora_nb.export(model, tmp_path / "s", data=["a b c"], tokenizer=tok)
    assert folder_kind(script.path) == "export-script" and verify(script.path).ok
    with pytest.raises(LoraNBError, match="already holds an export"):
        lora_nb.export(model, tmp_path / "s", data=["a b c"], tokenizer=tok)
    assert lora_nb.export(model, tmp_path / "s", data=["d e f"], tokenizer=tok, overwrite=True).notes == []


def test_folders_of_the_previous_release_are_still_recognised_as_exports(tmp_path):
    model, tok = tiny("llama"), bpe_tokenizer()
    old = tmp_path / "old"
    old.mkdir()
    (old / ".lora_nb-export-merged").write_text("written by lora_nb.export\n")  # the previous release's marker
    (old / "config.json").write_text("{}")
    with pytest.raises(LoraNBError, match="already holds a `merged` export"):
        lora_nb.export(model, old, format="merged", tokenizer=tok)
    with pytest.raises(LoraNBError, match="is not a `gguf` export folder"):
        lora_nb.export(model, old, format="gguf", tokenizer=tok, overwrite=True)
    shipped = lora_nb.export(model, old, format="merged", tokenizer=tok, overwrite=True)
    assert folder_kind(old) == "export-merged" and not (old / ".lora_nb-export-merged").exists()
    assert json.loads((old / "config.json").read_text())["model_type"] == "llama" and verify(shipped.path).ok
    script = tmp_path / "script"
    script.mkdir()
    (script / "train.py").write_text("# an earlier script export\n")
    with pytest.raises(LoraNBError, match="already holds an export"):
        lora_nb.export(model, script, data=["a b"], tokenizer=tok)
    lora_nb.export(model, script, data=["a b"], tokenizer=tok, overwrite=True)
    assert folder_kind(script) == "export-script" and (script / "adapter" / "adapter_config.json").is_file()


def test_a_metric_that_raises_on_the_export_leaves_the_older_export_intact(tmp_path):
    model, tok = tiny("llama"), bpe_tokenizer()
    old = lora_nb.export(model, tmp_path / "m", format="merged", tokenizer=tok)
    files = sorted(os.listdir(old.path))
    calls = []

    def only_live(lm):  # fine on the live model, raises on the export loaded back
        calls.append(lm)
        if len(calls) > 1:
            raise RuntimeError("shape mismatch")
        return 1.0

    make_b_nonzero(model, scale=0.2)
    with pytest.raises(LoraNBError, match=r"^the metric \(on the export loaded back\) raised RuntimeError"):
        lora_nb.export(model, old.path, format="merged", tokenizer=tok, metric=only_live, overwrite=True)
    assert len(calls) == 2 and sorted(os.listdir(old.path)) == files and verify(old.path).ok
    assert os.listdir(tmp_path) == ["m"]  # the staging folder went with the refusal


def test_a_gpt2_gguf_of_any_context_length_loads_back(tmp_path):
    from transformers import GPT2Config, GPT2LMHeadModel

    tok = bpe_tokenizer()
    model = GPT2LMHeadModel(GPT2Config(n_layer=2, n_embd=64, n_head=4, vocab_size=300, n_positions=128,
                                       initializer_range=0.1)).eval()
    lora_nb.attach(model, r=4, alpha=8)
    make_b_nonzero(model, scale=0.05)
    batch = prompts(tok)

    def mean_logit(lm):
        return float(logits(lm, batch).mean())

    shipped = lora_nb.export(model, tmp_path / "g", format="gguf", quant="f32", tokenizer=tok, metric=mean_logit)
    assert any("padded with zero rows to 1024" in n for n in shipped.notes)
    again = GPT2LMHeadModel.from_pretrained(shipped.path, gguf_file=shipped.file).eval()  # as a user loads it
    assert again.config.n_positions == 1024
    torch.testing.assert_close(again.transformer.wpe.weight[:128], model.transformer.wpe.weight, atol=0, rtol=0)
    assert not again.transformer.wpe.weight[128:].any()
    torch.testing.assert_close(logits(again, batch), logits(model, batch), atol=1e-5, rtol=1e-5)
    live, loaded = shipped.survival.metric
    assert loaded == pytest.approx(live, abs=1e-5)


def test_kept_never_reads_above_one_and_counts_an_overshoot_as_a_loss(tmp_path):
    w, d = torch.randn(16, 16), torch.randn(16, 16) * 1e-2
    assert kept(w, d, lambda t: t * 1.01) == pytest.approx(0.99, abs=1e-6)  # the update written 1 % too large
    assert kept(w, d, lambda t: t * 0.99) == pytest.approx(0.99, abs=1e-6)  # and 1 % too small: the same reading
    assert kept(w, d, lambda t: t * 3.0) == 0.0  # written three times over: nothing of ΔW reproduced
    assert "100.9" not in Survival("x", {"a": kept(w, d, lambda t: t * 1.009)}).summary()
    model, tok = tiny("llama"), bpe_tokenizer()
    for quant in ("q8_0", "q4_0"):
        shipped = lora_nb.export(model, tmp_path / quant, format="gguf", quant=quant, tokenizer=tok)
        assert all(0.0 <= k <= 1.0 for k in shipped.survival.modules.values())


def test_a_ctrl_c_while_writing_leaves_the_older_export_and_nothing_beside_it(tmp_path, monkeypatch):
    from lora_nb.core.export import merged

    model, tok = tiny("llama"), bpe_tokenizer()
    old = lora_nb.export(model, tmp_path / "m", format="merged", tokenizer=tok)
    files, before = sorted(os.listdir(old.path)), snapshot(model)
    write = merged.write_merged

    def interrupted(*args, **kwargs):  # every file written, then Ctrl-C before the folder is swapped in
        write(*args, **kwargs)
        raise KeyboardInterrupt

    monkeypatch.setattr(merged, "write_merged", interrupted)
    make_b_nonzero(model, scale=0.2)
    changed = snapshot(model)
    with pytest.raises(KeyboardInterrupt):
        lora_nb.export(model, old.path, format="merged", tokenizer=tok, overwrite=True)
    assert sorted(os.listdir(old.path)) == files and verify(old.path).ok and os.listdir(tmp_path) == ["m"]
    assert same(changed, snapshot(model)) and not same(before, changed)
