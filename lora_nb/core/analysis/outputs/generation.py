"""Text generation with the adapter on vs off: greedy or seeded sampling, plain or chat prompts, one or many prompts."""

from __future__ import annotations

import html
from dataclasses import dataclass
from typing import Any

import torch

from ....errors import OptionError
from ...training.data.chat import has_chat_template, render


@dataclass(frozen=True)
class Sampling:
    """How to pick tokens: greedy when ``temperature`` is 0; otherwise sampled, reproducibly when ``seed`` is set."""

    temperature: float = 0.0
    top_p: float = 1.0
    seed: int | None = None

    def __post_init__(self) -> None:
        if not self.temperature >= 0:
            raise OptionError(f"temperature must be ≥ 0 (0 = greedy); got {self.temperature:g}")
        if not 0 < self.top_p <= 1:
            raise OptionError(f"top_p must be in (0, 1]; got {self.top_p:g}")
        if self.greedy and self.top_p < 1:
            raise OptionError("top_p applies to sampling: give a temperature > 0 too (`temperature=0.7`)")

    @property
    def greedy(self) -> bool:
        return self.temperature == 0

    def generate_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for ``model.generate``; no top-k cut, so only ``top_p`` narrows the choice."""
        if self.greedy:
            return {"do_sample": False}
        return {"do_sample": True, "temperature": self.temperature, "top_p": self.top_p, "top_k": 0}

    def describe(self) -> str:
        if self.greedy:
            return "greedy"
        seed = f", seed {self.seed}" if self.seed is not None else ", unseeded"
        return f"sampled (temperature {self.temperature:g}, top-p {self.top_p:g}{seed})"


@dataclass
class GenerationComparison:
    """Continuations of ``prompt`` with the adapter on and off."""

    adapter: str
    prompt: str
    on: list[str]  # the text each generated token adds, adapter on (see `pieces`)
    off: list[str]
    on_text: str
    off_text: str
    how: str = "greedy"

    @property
    def differs(self) -> list[bool]:
        """Per position of the longer continuation: do the two token lists differ there?"""
        n = max(len(self.on), len(self.off))
        return [i >= len(self.on) or i >= len(self.off) or self.on[i] != self.off[i] for i in range(n)]

    def _marked(self, pieces: list[str], mark) -> str:
        """The text as generated, each differing piece marked (its leading space kept outside the mark)."""
        flags = self.differs
        return "".join(_mark(p, mark) if flags[i] else p for i, p in enumerate(pieces)).strip()

    def __str__(self) -> str:
        n = sum(self.differs)
        return "\n".join([
            f"prompt: {self.prompt}",
            f"on  ({self.adapter}): {self._marked(self.on, lambda t: f'[{t}]')}",
            f"off (base): {self._marked(self.off, lambda t: f'[{t}]')}",
            f"{n} of {len(self.differs)} generated tokens differ ([…] marks them; {self.how})",
        ])

    __repr__ = __str__

    def _repr_html_(self) -> str:
        def cell(pieces: list[str]) -> str:
            return html.escape(self._marked(pieces, lambda t: f"\0{t}\1")).replace("\0", "<mark>").replace(
                "\1", "</mark>")

        return (f"<div class='lora-nb-compare'><div><b>prompt:</b> {html.escape(self.prompt)}</div>"
                f"<table><tr><th>adapter <code>{html.escape(self.adapter)}</code> on</th><th>off (base)</th></tr>"
                f"<tr><td>{cell(self.on)}</td><td>{cell(self.off)}</td></tr></table>"
                f"<small>{sum(self.differs)} of {len(self.differs)} generated tokens differ "
                f"(highlighted; {html.escape(self.how)})</small></div>")


@dataclass
class GenerationTable:
    """Several prompts, one row each: the text generated with the adapter on and off."""

    adapter: str
    rows: list[GenerationComparison]
    how: str = "greedy"

    @property
    def changed(self) -> int:
        """How many prompts get a different text with the adapter on."""
        return sum(row.on_text != row.off_text for row in self.rows)

    def __getitem__(self, i: int) -> GenerationComparison:
        return self.rows[i]

    def __len__(self) -> int:
        return len(self.rows)

    def __str__(self) -> str:
        lines = [f"prompt | on ({self.adapter}) | off (base)"]
        lines += [" | ".join(_one_line(t) for t in (r.prompt, r.on_text, r.off_text)) for r in self.rows]
        lines.append(f"{self.changed} of {len(self.rows)} prompts answered differently ({self.how})")
        return "\n".join(lines)

    __repr__ = __str__

    def _repr_html_(self) -> str:
        def row(r: GenerationComparison) -> str:
            mark = "<mark>{}</mark>" if r.on_text != r.off_text else "{}"
            return (f"<tr><td>{html.escape(r.prompt)}</td><td>{mark.format(html.escape(r.on_text))}</td>"
                    f"<td>{html.escape(r.off_text)}</td></tr>")

        return (f"<table class='lora-nb-compare'><tr><th>prompt</th><th>adapter <code>{html.escape(self.adapter)}"
                f"</code> on</th><th>off (base)</th></tr>{''.join(map(row, self.rows))}</table>"
                f"<small>{self.changed} of {len(self.rows)} prompts answered differently (highlighted; "
                f"{html.escape(self.how)})</small>")


def _mark(piece: str, mark) -> str:
    body = piece.lstrip()
    return piece[:len(piece) - len(body)] + mark(body) if body else piece


def pieces(tokenizer: Any, ids: list[int]) -> list[str]:
    """The text each generated token adds, as the reader sees it (`` behavior``, not ``Ġbehavior``): the decoded
    prefix after the token minus the decoded prefix before it, so a character split over tokens comes out whole."""
    out, before = [], ""
    for i in range(len(ids)):
        text = tokenizer.decode(ids[:i + 1], skip_special_tokens=True)
        out.append(text[len(before):] if text.startswith(before) else text)
        before = text
    return out


def _one_line(text: str) -> str:
    return " ".join(text.split())


def as_prompts(prompt: Any) -> list[str]:
    """One prompt or a list of prompts, as a non-empty list of texts (or a one-line ``OptionError``)."""
    prompts = [prompt] if isinstance(prompt, str) else list(prompt) if isinstance(prompt, (list, tuple)) else None
    if not prompts or not all(isinstance(p, str) for p in prompts):
        raise OptionError("prompt must be a text or a non-empty list of texts")
    return prompts


def encode(tokenizer: Any, prompt: str, chat: bool) -> dict[str, torch.Tensor]:
    """Token ids of ``prompt``, as the user turn of a chat (with the generation prompt) when ``chat``."""
    if not chat:
        return dict(tokenizer(prompt, return_tensors="pt"))
    if not has_chat_template(tokenizer):
        raise OptionError("`chat=True` needs a tokenizer with a chat template (this one has none)")
    text = render(tokenizer, [{"role": "user", "content": prompt}], generation_prompt=True)
    return dict(tokenizer(text, add_special_tokens=False, return_tensors="pt"))


def generate(model: Any, tokenizer: Any, encoded: dict[str, torch.Tensor], max_new_tokens: int,
             sampling: Sampling) -> tuple[list[str], str]:
    """New tokens and text after ``encoded``; a seeded sample leaves the global random state as it was."""
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    device = encoded["input_ids"].device
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        if sampling.seed is not None:
            torch.manual_seed(sampling.seed)
        ids = model.generate(**encoded, max_new_tokens=max_new_tokens, pad_token_id=pad,
                             **sampling.generate_kwargs())
    new = ids[0, encoded["input_ids"].shape[1]:].tolist() if not model.config.is_encoder_decoder else ids[0].tolist()
    return pieces(tokenizer, new), tokenizer.decode(new, skip_special_tokens=True)
