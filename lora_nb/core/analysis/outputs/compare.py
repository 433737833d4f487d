"""The model with its active adapter on vs off, side by side; the adapter state is left as it was.

Causal / seq2seq LMs with a prompt (or several, shown as a table): generation both ways, greedy or seeded sampling,
the prompt as is or as a chat user turn; differing tokens marked (see ``generation``).
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

from ....errors import OptionError, a_kind
from ... import registry
from ...adapters import switch
from ...kinds import check_token_ids, check_tokenizer, user_call
from .generation import GenerationComparison, GenerationTable, Sampling, as_prompts, encode, generate

__all__ = ["ClassComparison", "GenerationComparison", "GenerationTable", "OutputComparison", "compare"]


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
    with user_call(f"{type(model).__name__}'s forward (compare)"):
        if isinstance(inputs, Mapping):
            out = model(**inputs)
        elif isinstance(inputs, (tuple, list)):
            out = model(*inputs)
        else:
            out = model(inputs)
    is_logits = isinstance(getattr(out, "logits", None), torch.Tensor)
    return _main_tensor(out).detach().float().cpu(), is_logits


def _on_off(session, run) -> tuple[Any, Any]:
    """``run()`` with the active adapter on, then off; peft's per-layer state is put back after."""
    from ...adapters.merge import merge

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


def compare(model: Any, prompt: str | list[str] | None = None, tokenizer: Any = None, inputs: Any = None,
            max_new_tokens: int = 20, top_k: int = 3, chat: bool = False, temperature: float = 0.0,
            top_p: float = 1.0, seed: int | None = None):
    """Outputs with the active adapter on vs off (generation, class probabilities or difference norms).

    ``prompt``: a text, or a list of texts (a ``GenerationTable``, one row per prompt); ``chat``: each prompt is
    a user turn under the tokenizer's chat template; ``temperature`` > 0 samples (with ``top_p``), and ``seed``
    makes each sample reproducible, the same seed on and off. Greedy by default.
    """
    session = registry.require(model)
    session.ensure_idle("compare adapters on and off")
    if prompt is not None:
        sampling = Sampling(float(temperature or 0), float(top_p), None if seed is None else int(seed))
        return _compare_generation(session, as_prompts(prompt), tokenizer, max_new_tokens, chat, sampling,
                                   single=isinstance(prompt, str))
    if inputs is None:
        raise OptionError("compare needs `prompt=…, tokenizer=…`, or `inputs=…`")
    if not isinstance(inputs, (torch.Tensor, Mapping, tuple, list)):
        raise OptionError(f"`inputs=…` must be a tensor, a dict of tensors or a tuple of them; got {a_kind(inputs)}")
    check_token_ids(session.model, inputs, "inputs")
    adapter = session.active
    (on, is_logits), (off, _) = _on_off(session, lambda: _forward(session.model, inputs))
    if is_logits and on.dim() == 2:  # a classifier
        id2label = getattr(getattr(session.model, "config", None), "id2label", None) or {}
        labels = [str(id2label.get(i, i)) for i in range(on.shape[1])]
        return ClassComparison(adapter, labels, on.softmax(-1), off.softmax(-1), top_k=top_k)
    diff = (on - off).abs()
    rel = (on - off).norm() / off.norm().clamp_min(1e-12)
    return OutputComparison(adapter, tuple(on.shape), float(diff.max()), float(rel))


def _compare_generation(session, prompts: list[str], tokenizer: Any, max_new_tokens: int, chat: bool,
                        sampling: Sampling, single: bool):
    """Each prompt generated with the adapter on, then off: one comparison, or a table for several prompts."""
    if tokenizer is None:
        raise OptionError("compare with a prompt needs its tokenizer (`tokenizer=…`)")
    check_tokenizer(tokenizer)
    model = session.model
    if not hasattr(model, "generate"):
        raise OptionError(f"{type(model).__name__} cannot generate text; pass `inputs=…` instead")
    with user_call("the tokenizer (compare)"):
        encoded = [_to(encode(tokenizer, p, chat), _device(model)) for p in prompts]

    def run():
        with user_call(f"{type(model).__name__}.generate (compare)"):
            return [generate(model, tokenizer, e, max_new_tokens, sampling) for e in encoded]

    on, off = _on_off(session, run)
    how = sampling.describe() + (", chat template" if chat else "")
    rows = [GenerationComparison(session.active, p, a[0], b[0], a[1], b[1], how=how)
            for p, a, b in zip(prompts, on, off)]
    return rows[0] if single else GenerationTable(session.active, rows, how=how)
