"""The adapter alone as a llama.cpp LoRA file (``llama-cli -m base.gguf --lora adapter.gguf``).

Format of llama.cpp's ``convert_lora_to_gguf.py`` (ggml-org/llama.cpp, master of 2026): ``general.type =
adapter``, ``adapter.type = lora``, ``adapter.lora.alpha``; per module ``<gguf weight name>.lora_a`` (r × in) and
``.lora_b`` (out × r), B's rows permuted like the base weight's (Llama q/k). llama.cpp scales each module by
alpha / r with r read from the tensor; lora_nb writes the adapter's ``lora_alpha`` and folds anything else (rsLoRA,
rank or alpha patterns, a changed strength) into B, so each module's update equals the live model's ΔW.
Embedding LoRA, ``modules_to_save``, LoRA bias and DoRA have no place in this format and are refused.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from ...errors import OptionError
from .. import registry
from ..adapters.factors import layer_factors, lora_layers
from .gguf_model import decode, encode, gguf_name, tensor_type, write_file
from .layout import Layout
from .merged import check_exportable
from .request import Job, Shipped, listing
from .survival import Survival, share

LORA_QUANTS = ("f32", "f16", "bf16", "q8_0")  # what llama.cpp's convert_lora_to_gguf.py writes


def refusals(session: registry.Session, adapter: str) -> list[tuple[str, str]]:
    """``(what, fix)`` for each part of ``adapter`` a llama.cpp LoRA file cannot hold."""
    config = session.peft.peft_config[adapter]
    found = []
    if getattr(config, "use_dora", False):
        found.append(("DoRA (a magnitude vector per module)", "export `gguf` (merged) instead"))
    if getattr(config, "modules_to_save", None):
        found.append((f"modules_to_save ({', '.join(config.modules_to_save)})", "export `gguf` (merged) instead"))
    if getattr(config, "bias", "none") != "none" or getattr(config, "lora_bias", False):
        found.append((f"bias = {config.bias}", "export `gguf` (merged) instead, or retrain with bias='none'"))
    embedded = [n for n, layer in lora_layers(session, adapter) if adapter in layer.lora_embedding_A]
    if embedded:
        found.append((f"LoRA on embeddings ({embedded[0]})", "export `gguf` (merged) instead"))
    return found


def _kept(a: torch.Tensor, b: torch.Tensor, written: list[torch.Tensor]) -> float:
    """The share of B·A that the written (rounded) factors B'·A' reproduce along B·A (``survival.share``)."""
    return share(written[1].double() @ written[0].double(), b.double() @ a.double())


def _unnamed(session: registry.Session, adapter: str, layout: Layout) -> str | None:
    """The first adapted module whose weight has no tensor in the GGUF model (None: all have one)."""
    return next((name for name, _ in lora_layers(session, adapter) if layout.gguf_name(f"{name}.weight") is None), None)


def _refuse(session: registry.Session, adapter: str, layout: Layout) -> None:
    check_exportable(session, adapter)
    problems = refusals(session, adapter)
    if problems:
        what, fix = problems[0]
        raise OptionError(f"llama.cpp's LoRA format cannot hold {what}: {fix}")
    name = _unnamed(session, adapter, layout)
    if name is not None:
        raise OptionError(f"`{name}` has no tensor in the GGUF model (tied to the embedding?); "
                          "export `gguf` (merged) instead")


def check(job: Job) -> None:
    """Everything a GGUF LoRA needs, before anything is written (``job.layout`` is set here)."""
    job.layout = Layout.of(job.session.model)
    _refuse(job.session, job.adapter, job.layout)


def write(job: Job, staging: Path) -> Shipped:
    """The adapter alone as a llama.cpp LoRA file, written into ``staging``."""
    assert job.quant is not None
    name = gguf_name(job.quant, "adapter")
    survival = write_gguf_lora(job.model, staging / name, job.quant, job.adapter, job.layout)
    notes = [f"use with: llama-cli -m <base model>.gguf --lora {job.target / name}"]
    return Shipped(job.target, job.format.name, job.quant, listing(staging), 0.0, survival, notes, name)


def write_gguf_lora(model: Any, target: Path, quant: str, adapter: str | None = None,
                    layout: Layout | None = None) -> Survival:
    """Write ``adapter`` (default: the active one) to ``target``; returns how much of each module's ΔW the
    written factors keep."""
    import gguf

    session = registry.require(model)
    adapter = session.check_adapter(adapter) if adapter else session.active
    if quant not in LORA_QUANTS:
        raise OptionError(f"a GGUF LoRA is written {', '.join(LORA_QUANTS)} (as llama.cpp's converter offers)")
    layout = layout or Layout.of(session.model)
    _refuse(session, adapter, layout)
    alpha = float(session.peft.peft_config[adapter].lora_alpha)
    writer = gguf.GGUFWriter(None, layout.arch)
    writer.add_type(gguf.GGUFType.ADAPTER)
    writer.add_string(gguf.Keys.Adapter.TYPE, "lora")
    writer.add_float32(gguf.Keys.Adapter.LORA_ALPHA, alpha)
    survival = Survival(f"gguf-lora {quant}")
    with session.lock, torch.no_grad():
        for name, layer in lora_layers(session, adapter):
            f = layer_factors(name, layer, adapter)
            key = f"{name}.weight"
            base = layout.gguf_name(key)
            assert base is not None  # refused above
            b = layout.lora_b(key, f.B.float()) * (f.scaling * f.r / alpha)  # llama.cpp applies alpha / r
            written = []
            for suffix, data in ((".lora_a", f.A.float()), (".lora_b", b)):
                kind = tensor_type(base + suffix, tuple(data.shape), quant)
                encoded = encode(data, kind)
                writer.add_tensor(base + suffix, encoded, raw_dtype=kind)
                written.append(decode(encoded, kind, data.shape))
            survival.modules[name] = _kept(f.A.float(), b, written)
    write_file(writer, target)
    return survival
