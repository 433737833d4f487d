"""Text generated from a few prompts while a run trains, to read what the adapter is learning.

``Sampler`` generates greedily (no randomness; the RNG states are left as they were) from each
prompt at the start and every ``sample_every`` steps, through the tokenizer's chat template when it
has one. Results go to ``run.samples`` as ``{"step", "prompt", "text"}``; the time spent is
``run.sample_seconds``, kept out of the steps' own ``seconds``.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

import torch

from ....errors import OptionError, a_kind
from ..callbacks import Callback

if TYPE_CHECKING:  # pragma: no cover
    from ..run import TrainRun


def check_can_sample(model: Any, tokenizer: Any) -> None:
    """A one-line error unless ``model`` can generate text with ``tokenizer``."""
    if tokenizer is None:
        raise OptionError("sample prompts need a tokenizer (`tokenizer=…`)")
    if not callable(getattr(model, "generate", None)):
        raise OptionError(f"sample prompts need a model that generates text; {a_kind(model)} has no "
                          "generate()")


def prompt_inputs(tokenizer: Any, prompt: str, device: torch.device) -> dict[str, torch.Tensor]:
    """Token ids (and mask) of ``prompt``, through the chat template when the tokenizer has one."""
    if getattr(tokenizer, "chat_template", None):
        encoded = tokenizer.apply_chat_template([{"role": "user", "content": prompt}], add_generation_prompt=True,
                                                return_tensors="pt", return_dict=True)
    else:
        encoded = tokenizer(prompt, return_tensors="pt")
    return {k: v.to(device) for k, v in encoded.items() if k in ("input_ids", "attention_mask")}


def generate_text(model: Any, tokenizer: Any, prompt: str, max_new_tokens: int, device: torch.device) -> str:
    """Greedy continuation of ``prompt`` (the new text only)."""
    inputs = prompt_inputs(tokenizer, prompt, device)
    pad = getattr(tokenizer, "pad_token_id", None)
    pad = pad if pad is not None else getattr(tokenizer, "eos_token_id", None)
    out = model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False, pad_token_id=pad)
    return tokenizer.decode(out[0, inputs["input_ids"].shape[1]:], skip_special_tokens=True)


class Sampler(Callback):
    """Generates from ``prompts`` at the start and every ``every`` steps into ``run.samples``."""

    def __init__(self, model: Any, tokenizer: Any, prompts: list[str], every: int, max_new_tokens: int) -> None:
        self.model, self.tokenizer, self.prompts = model, tokenizer, list(prompts)
        self.every, self.max_new_tokens = every, max_new_tokens

    def on_train_begin(self, run: TrainRun) -> None:
        if run.step == 0:
            self.sample(run)

    def on_step_end(self, run: TrainRun, record: dict) -> None:
        if record["step"] % self.every == 0 or record["step"] == run.max_steps:
            self.sample(run)

    def sample(self, run: TrainRun) -> None:
        t0 = time.perf_counter()
        modes = {m: m.training for m in self.model.modules()}
        devices = [run.device] if run.device.type == "cuda" else []
        try:
            self.model.eval()
            with torch.no_grad(), torch.random.fork_rng(devices=devices):
                texts = [generate_text(self.model, self.tokenizer, p, self.max_new_tokens, run.device)
                         for p in self.prompts]
        finally:
            for m, mode in modes.items():
                m.training = mode
        run.samples.extend({"step": run.step, "prompt": p, "text": t} for p, t in zip(self.prompts, texts))
        run.sample_seconds += time.perf_counter() - t0
