"""The model with its active adapter on vs off, side by side; the adapter state is left as it was.

Causal / seq2seq LMs with a prompt: greedy generation both ways, differing tokens marked.
Classifiers (2-D ``logits``): top-k class probabilities both ways. Anything else: how far the
outputs differ (max |Δ|, relative L2). Adapters are switched through peft's per-layer state (see
``switch``), which is not thread-safe, so compare refuses to run while training runs.
"""

from __future__ import annotations

import html
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import torch

from ...errors import OptionError
from .. import registry
from ..adapters import switch


@dataclass
class GenerationComparison:
    """Greedy continuations of ``prompt`` with the adapter on and off."""

    adapter: str
    prompt: str
    on: list[str]
    off: list[str]
    on_text: str
    off_text: str

    @property
    def differs(self) -> list[bool]:
        """Per position of the longer continuation: do the two token lists differ there?"""
        n = max(len(self.on), len(self.off))
        return [i >= len(self.on) or i >= len(self.off) or self.on[i] != self.off[i] for i in range(n)]

    def _marked(self, tokens: list[str], mark) -> str:
        flags = self.differs
        return " ".join(mark(t) if flags[i] else t for i, t in enumerate(tokens))

    def __str__(self) -> str:
        n = sum(self.differs)
        return "\n".join([
            f"prompt: {self.prompt}",
            f"on  ({self.adapter}): {self._marked(self.on, lambda t: f'[{t}]')}",
            f"off (base): {self._marked(self.off, lambda t: f'[{t}]')}",
            f"{n} of {len(self.differs)} generated tokens differ ([…] marks them)",
        ])

    __repr__ = __str__

    def _repr_html_(self) -> str:
        def cell(tokens: list[str]) -> str:
            flags = self.differs
            return " ".join(f"<mark>{html.escape(t)}</mark>" if flags[i] else html.escape(t)
                            for i, t in enumerate(tokens))

        return (f"<div class='lora-nb-compare'><div><b>prompt:</b> {html.escape(self.prompt)}</div>"
                f"<table><tr><th>adapter <code>{html.escape(self.adapter)}</code> on</th><th>off (base)</th></tr>"
                f"<tr><td>{cell(self.on)}</td><td>{cell(self.off)}</td></tr></table>"
                f"<small>{sum(self.differs)} of {len(self.differs)} generated tokens differ "
                "(highlighted)</small></div>")


@dataclass
class ClassComparison:
    """Top-k class probabilities per example with the adapter on and off."""

    adapter: str
    labels: list[str]
    on: torch.Tensor  # probabilities, examples × classes
    off: torch.Tensor
    top_k: int = 3
    max_examples: int = 4

    def _rows(self) -> list[list[str]]:
        rows = []
        for i in range(min(len(self.on), self.max_examples)):
            def top(p: torch.Tensor) -> str:
                values, idx = p.topk(min(self.top_k, p.numel()))
                return ", ".join(f"{self.labels[j]} {v:.3f}" for v, j in zip(values.tolist(), idx.tolist()))

            rows.append([str(i), top(self.on[i]), top(self.off[i])])
        return rows

    def __str__(self) -> str:
        lines = [f"example | on ({self.adapter}) | off (base)"]
        lines += [" | ".join(r) for r in self._rows()]
        return "\n".join(lines)

    __repr__ = __str__

    def _repr_html_(self) -> str:
        body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in r) + "</tr>" for r in self._rows())
        return (f"<table class='lora-nb-compare'><tr><th>example</th><th>{html.escape(self.adapter)} on: "
                f"top-{self.top_k}</th><th>off (base)</th></tr>{body}</table>")


@dataclass
class OutputComparison:
    """How much the main output tensor changes when the adapter is switched on."""

    adapter: str
    shape: tuple[int, ...]
    max_abs: float
    rel_l2: float
    notes: list[str] = field(default_factory=list)

    def __str__(self) -> str:
        return (f"adapter `{self.adapter}` on vs off, output {tuple(self.shape)}: max |Δ| = {self.max_abs:.4g}, "
                f"relative L2 = {self.rel_l2:.4g}")

    __repr__ = __str__

    def _repr_html_(self) -> str:
        return f"<div class='lora-nb-compare'>{html.escape(str(self))}</div>"


def _main_tensor(out: Any) -> torch.Tensor:
    if isinstance(out, torch.Tensor):
        return out
    for key in ("logits", "last_hidden_state"):
        value = getattr(out, key, None)
        if isinstance(value, torch.Tensor):
            return value
    if isinstance(out, (tuple, list)) and out and isinstance(out[0], torch.Tensor):
        return out[0]
    raise OptionError(f"cannot compare outputs of type {type(out).__name__}: no tensor, logits or hidden state")


def _device(model: torch.nn.Module) -> torch.device:
    return next((p.device for p in model.parameters() if p.device.type != "meta"), torch.device("cpu"))


def _to(inputs: Any, device: torch.device) -> Any:
    if isinstance(inputs, torch.Tensor):
        return inputs.to(device)
    if isinstance(inputs, Mapping):  # a dict, or a tokenizer's BatchEncoding (a UserDict)
        return {k: _to(v, device) for k, v in inputs.items()}
    if isinstance(inputs, (tuple, list)):
        return type(inputs)(_to(v, device) for v in inputs)
    return inputs


def _forward(model: torch.nn.Module, inputs: Any) -> tuple[torch.Tensor, bool]:
    """The main output tensor (on CPU, fp32) and whether it is a model's ``logits``."""
    inputs = _to(inputs, _device(model))
    if isinstance(inputs, Mapping):
        out = model(**inputs)
    elif isinstance(inputs, (tuple, list)):
        out = model(*inputs)
    else:
        out = model(inputs)
    is_logits = isinstance(getattr(out, "logits", None), torch.Tensor)
    return _main_tensor(out).detach().float().cpu(), is_logits


def _generate(model, tokenizer, prompt: str, max_new_tokens: int) -> tuple[list[str], str]:
    encoded = _to(dict(tokenizer(prompt, return_tensors="pt")), _device(model))
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    ids = model.generate(**encoded, max_new_tokens=max_new_tokens, do_sample=False, pad_token_id=pad)
    new = ids[0, encoded["input_ids"].shape[1]:].tolist() if not model.config.is_encoder_decoder else ids[0].tolist()
    return tokenizer.convert_ids_to_tokens(new), tokenizer.decode(new, skip_special_tokens=True)


def _on_off(session, run) -> tuple[Any, Any]:
    """``run()`` with the active adapter on, then off; peft's per-layer state is put back after."""
    from ..adapters.merge import merge

    index = switch.layer_index(session)
    merged = sorted(switch.merged_adapters(session))
    switch.unmerge_first(session)
    flags = [(layer, layer.disable_adapters) for layer, _ in index.layers]
    model = session.model
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            switch.set_enabled(session, True)
            on = run()
            switch.set_enabled(session, False)
            off = run()
    finally:
        model.train(was_training)
        for layer, disabled in flags:
            if layer.disable_adapters != disabled:
                layer.enable_adapters(not disabled)
        if merged:
            merge(model, merged[0])
    return on, off


def compare(model: Any, prompt: str | None = None, tokenizer: Any = None, inputs: Any = None,
            max_new_tokens: int = 20, top_k: int = 3):
    """Outputs with the active adapter on vs off (generation, class probabilities or difference norms)."""
    session = registry.require(model)
    session.ensure_idle("compare adapters on and off")
    adapter = session.active
    if prompt is not None:
        if tokenizer is None:
            raise OptionError("compare with a prompt needs its tokenizer (--tokenizer VAR)")
        if not hasattr(session.model, "generate"):
            raise OptionError(f"{type(session.model).__name__} cannot generate text; pass --inputs instead")
        on, off = _on_off(session, lambda: _generate(session.model, tokenizer, prompt, max_new_tokens))
        return GenerationComparison(adapter, prompt, on[0], off[0], on[1], off[1])
    if inputs is None:
        raise OptionError("compare needs --prompt TEXT with --tokenizer VAR, or --inputs VAR")
    (on, is_logits), (off, _) = _on_off(session, lambda: _forward(session.model, inputs))
    if is_logits and on.dim() == 2:  # a classifier
        id2label = getattr(getattr(session.model, "config", None), "id2label", None) or {}
        labels = [str(id2label.get(i, i)) for i in range(on.shape[1])]
        return ClassComparison(adapter, labels, on.softmax(-1), off.softmax(-1), top_k=top_k)
    diff = (on - off).abs()
    rel = (on - off).norm() / off.norm().clamp_min(1e-12)
    return OutputComparison(adapter, tuple(on.shape), float(diff.max()), float(rel))
