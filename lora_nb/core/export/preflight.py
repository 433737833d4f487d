"""Pre-flight: what a runtime would reject or change in an adapter, each with the fix, before it is shipped there.

Rules, and where they come from:
- vLLM: ``vllm/lora/peft_helper.py`` (``PEFTHelper._validate_features`` / ``validate_legal``, vllm-project/vllm at
  commit e745baf, 2025) rejects ``modules_to_save``, DoRA, a rank above ``max_lora_rank`` and a bias without
  ``bias_enabled``; ``vllm/config/lora.py`` (same commit): ``max_lora_rank`` defaults to 16 and takes
  1, 8, 16, 32, 64, 128, 256, 320 or 512; ``lora_dtype = "auto"`` casts the adapter to the model's dtype; the
  scaling is read from ``adapter_config.json`` (alpha / r, alpha / √r with rsLoRA). vLLM puts LoRA on its own
  linear and embedding layers only.
- llama.cpp: ``convert_lora_to_gguf.py`` (ggml-org/llama.cpp master, 2026) takes only ``lora_A`` / ``lora_B``
  tensors (anything else ends with "Unexpected name"), raises for an ``lm_head`` tied to the embedding, writes one
  ``adapter.lora.alpha`` and llama.cpp scales by alpha / r per tensor; see ``gguf_lora.refusals``.
- peft: ``PeftModel.from_pretrained`` rebuilds layers from types peft knows; custom layer types need the same
  ``LoraConfig._register_custom_module`` mapping at load time.
- merged: ``merged.py``; a quantized base is dequantized, a 16-bit base rounds ΔW.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from torch import nn

from ...errors import OptionError
from .. import registry
from ..adapters.factors import lora_layers
from ..adapters.targets import conv1d_type
from .layout import ARCHES

RUNTIMES = ("peft", "vllm", "llama.cpp", "merged")
VLLM_RANKS = (1, 8, 16, 32, 64, 128, 256, 320, 512)
VLLM_DEFAULT_RANK = 16


@dataclass
class Finding:
    """One thing the runtime would refuse (``reject``) or do differently from the notebook (``change``)."""

    level: str
    what: str
    fix: str


@dataclass
class Preflight:
    """What ``runtime`` would reject or change in ``adapter``."""

    runtime: str
    adapter: str
    findings: list[Finding] = field(default_factory=list)

    @property
    def rejects(self) -> list[Finding]:
        return [f for f in self.findings if f.level == "reject"]

    @property
    def ok(self) -> bool:
        return not self.rejects

    def __repr__(self) -> str:
        head = (f"{self.runtime}: adapter `{self.adapter}` passes" if self.ok else
                f"{self.runtime} would reject adapter `{self.adapter}` ({len(self.rejects)} problem(s))")
        if not self.findings:
            return head + "; nothing it would reject or change"
        return "\n".join([head] + [f"  {f.level}: {f.what} → fix: {f.fix}" for f in self.findings])


@dataclass
class _Facts:
    """What the rules look at, read once from the model."""

    config: Any
    kinds: dict[str, str]  # module -> linear | embedding | conv | mha | custom
    ranks: dict[str, int]
    strength_changed: bool
    model_type: str | None
    tied_head: bool
    quantized: bool
    dtype: str
    others: list[str]


def _kind(layer: nn.Module, adapter: str) -> str:
    base = layer.get_base_layer()
    if adapter in layer.lora_embedding_A:
        return "embedding"
    if isinstance(base, nn.MultiheadAttention):
        return "mha"
    if isinstance(base, nn.modules.conv._ConvNd):
        return "conv"
    if type(base) in (nn.Linear, *conv1d_type()) or type(base).__module__.split(".")[0] == "bitsandbytes":
        return "linear"
    return "custom"


def _facts(session: registry.Session, adapter: str) -> _Facts:
    from ..adapters.quantized import is_quantized
    from .merged import export_dtype

    layers = list(lora_layers(session, adapter))
    config = session.peft.peft_config[adapter]
    changed = False
    for _, layer in layers:
        r, alpha = layer.r[adapter], layer.lora_alpha[adapter]
        expected = alpha / math.sqrt(r) if layer.use_rslora.get(adapter, False) else alpha / r
        changed |= not math.isclose(layer.scaling[adapter], expected, rel_tol=1e-9)
    model_config = getattr(session.model, "config", None)
    return _Facts(config, {n: _kind(m, adapter) for n, m in layers}, {n: m.r[adapter] for n, m in layers}, changed,
                  getattr(model_config, "model_type", None), bool(getattr(model_config, "tie_word_embeddings", False)),
                  any(is_quantized(m) for _, m in layers), str(export_dtype(session.model)).removeprefix("torch."),
                  [a for a in session.adapters if a != adapter])


def _of_kind(facts: _Facts, *kinds: str) -> list[str]:
    return [n for n, k in facts.kinds.items() if k in kinds]


def _peft(facts: _Facts, adapter: str) -> list[Finding]:
    out = []
    custom = _of_kind(facts, "custom")
    if custom:
        out.append(Finding("reject", f"custom layer types ({custom[0]}, …) that peft does not rebuild by itself",
                           "register the same custom module mapping (LoraConfig._register_custom_module) before "
                           "PeftModel.from_pretrained"))
    if _of_kind(facts, "mha"):
        out.append(Finding("change", "LoRA on nn.MultiheadAttention: peft merges and unmerges it on every forward, so "
                           "outputs differ from lora_nb's by float rounding", "none needed for inference"))
    if facts.strength_changed:
        out.append(Finding("change", "the strength set in the notebook: adapter_config.json keeps lora_alpha, so peft "
                           "loads the trained strength", "set the strength to 1 before comparing, or scale lora_alpha"))
    return out


def _vllm_rank(rank: int) -> Finding | None:
    if rank <= VLLM_DEFAULT_RANK:
        return None
    fits = [r for r in VLLM_RANKS if r >= rank]
    fix = (f"serve with --max-lora-rank {fits[0]}" if fits else
           f"retrain with r ≤ {VLLM_RANKS[-1]}, or export `merged`")
    return Finding("reject", f"rank {rank} > vLLM's default max_lora_rank {VLLM_DEFAULT_RANK}", fix)


def _vllm(facts: _Facts, adapter: str) -> list[Finding]:
    c, out = facts.config, []
    rank = _vllm_rank(max(facts.ranks.values(), default=c.r))
    out += [rank] if rank else []
    if getattr(c, "use_dora", False):
        out.append(Finding("reject", "DoRA (vLLM does not serve it)", "export `merged` and serve that model"))
    if getattr(c, "modules_to_save", None):
        out.append(Finding("reject", f"modules_to_save ({', '.join(c.modules_to_save)})",
                           "export `merged`, or retrain without modules_to_save"))
    if getattr(c, "bias", "none") != "none":
        out.append(Finding("reject", f"bias = {c.bias}", "serve with --enable-lora-bias, or retrain with bias='none'"))
    odd = _of_kind(facts, "conv", "mha", "custom")
    if odd:
        out.append(Finding("reject", f"LoRA on layers vLLM does not adapt ({odd[0]}: {facts.kinds[odd[0]]})",
                           "export `merged`"))
    if facts.dtype != "float32":
        out.append(Finding("change", f"the float32 adapter is cast to vLLM's lora_dtype (auto: the model's "
                           f"{facts.dtype})", "none needed; --lora-dtype sets it"))
    if facts.strength_changed:
        out.append(Finding("change", "the strength set in the notebook: vLLM scales by adapter_config.json's alpha",
                           "set the strength to 1, or export `merged`"))
    return out


def _llama_cpp(session: registry.Session, facts: _Facts, adapter: str) -> list[Finding]:
    from .gguf_lora import refusals

    out = []
    if facts.model_type not in ARCHES:
        out.append(Finding("reject", f"lora_nb writes GGUF for {', '.join(ARCHES)} models, not "
                           f"`{facts.model_type or type(session.model).__name__}`",
                           "export `merged`, then convert with llama.cpp's convert_hf_to_gguf.py"))
    out += [Finding("reject", what, fix) for what, fix in refusals(session, adapter)]
    odd = _of_kind(facts, "conv", "mha", "custom")
    if odd:
        out.append(Finding("reject", f"LoRA on {facts.kinds[odd[0]]} layers ({odd[0]})",
                           "none: GGUF has no such layer"))
    if facts.tied_head and "lm_head" in facts.kinds:
        out.append(Finding("reject", "LoRA on lm_head, which is tied to the embedding", "export `gguf` (merged)"))
    c = facts.config
    if getattr(c, "use_rslora", False) or c.rank_pattern or c.alpha_pattern or facts.strength_changed:
        out.append(Finding("change", "llama.cpp scales every module by alpha / r", "none needed: lora_nb folds the "
                           "difference (rsLoRA, rank/alpha patterns, strength) into B"))
    return out


def _merged(facts: _Facts, adapter: str) -> list[Finding]:
    out = []
    if _of_kind(facts, "mha"):
        out.append(Finding("reject", "LoRA on nn.MultiheadAttention", "save the adapter (`%lora save`) instead"))
    if facts.quantized:
        out.append(Finding("change", f"the 4/8-bit base is dequantized and merged in {facts.dtype}",
                           "none: the folder is a 16-bit model, larger than the quantized base"))
    if facts.dtype in ("bfloat16", "float16"):
        out.append(Finding("change", f"W + ΔW is rounded to {facts.dtype}; small updates partly vanish",
                           "the export reports how much of ΔW each module keeps"))
    if facts.others:
        out.append(Finding("change", f"only `{adapter}` is merged; {', '.join(facts.others)} left out",
                           "export each adapter separately"))
    return out


def check(model: Any, runtime: str = "peft", adapter: str | None = None) -> Preflight:
    """What ``runtime`` (peft | vllm | llama.cpp | merged) would reject or change in ``adapter`` (default: active)."""
    if runtime not in RUNTIMES:
        raise OptionError(f"--for must be one of {', '.join(RUNTIMES)}, not `{runtime}`")
    session = registry.require(model)
    adapter = session.check_adapter(adapter) if adapter else session.active
    with session.lock:
        facts = _facts(session, adapter)
        rules = {"peft": lambda: _peft(facts, adapter), "vllm": lambda: _vllm(facts, adapter),
                 "llama.cpp": lambda: _llama_cpp(session, facts, adapter), "merged": lambda: _merged(facts, adapter)}
        return Preflight(runtime, adapter, rules[runtime]())
