"""Tab completion for ``%lora`` lines and ``%%lora`` cells, read from the verbs' own parsers.

Completes verbs, a verb's options, adapter names after ``--adapter``/``--other``/``--adapters``,
choices, and notebook variables of the kind an option expects (models, datasets, tokenizers,
losses): the kinds ``core.kinds`` defines, so Tab offers only what the verb then takes.
``suggest`` returns None where it has no opinion, so other completers go on as usual.
"""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from typing import Any

from ..core.kinds import is_callable, is_dataset, is_model, is_tokenizer
from .lines import without_comment
from .router import VERBS, lookup

_LINE = re.compile(r"\s*(?:[\w.,\[\]\s]+=\s*)?%lora\s(?P<rest>.*)$")  # `%lora …` or `run = %lora …`
_CELL = re.compile(r"\s*%%lora\s(?P<rest>.*)$")
_ADAPTER_DESTS = ("adapter", "other", "adapters")  # `adapters` takes a comma-separated list


@dataclass
class Suggestions:
    """Completions for the ``fragment`` just before the cursor: ``(text, kind)`` pairs."""

    fragment: str
    items: list[tuple[str, str]] = field(default_factory=list)


@dataclass
class _Position:
    """Where the cursor stands in a verb's arguments."""

    pending: argparse.Action | None = None  # the option whose value is being typed
    positionals: int = 0  # positional words already given (the model first)
    used: set[str] = field(default_factory=set)  # dests of the options already given
    model: str | None = None  # the model's variable path, once given


def _torch() -> Any:
    return sys.modules.get("torch")


def is_inputs(obj: Any) -> bool:
    """Model inputs: a tensor or a mapping of them."""
    torch = _torch()
    return isinstance(obj, Mapping) or (torch is not None and isinstance(obj, torch.Tensor))


def is_trainer(obj: Any) -> bool:
    """A ``transformers.Trainer`` (TRL's trainers are), without importing transformers to ask."""
    return any(cls.__name__ == "Trainer" and cls.__module__.startswith("transformers") for cls in type(obj).__mro__)


def is_prompts(obj: Any) -> bool:
    """A non-empty list or tuple of texts (``compare --prompts``)."""
    return isinstance(obj, (list, tuple)) and bool(obj) and all(isinstance(p, str) for p in obj)


_VARIABLE_KINDS: dict[str, tuple[str, Callable[[Any], bool]]] = {
    "model": ("model", is_model), "data": ("dataset", is_dataset), "eval_data": ("dataset", is_dataset),
    "tokenizer": ("tokenizer", is_tokenizer), "loss": ("function", is_callable), "loss_fn": ("function", is_callable),
    "inputs": ("inputs", is_inputs), "prompts": ("prompts", is_prompts), "metric": ("function", is_callable),
    "trainer": ("trainer", is_trainer),
}  # what counts as a model, dataset, tokenizer or function is asked of core.kinds, as a run asks it


def variables(namespace: Mapping[str, Any], hidden: Collection[str], prefix: str,
              accept: Callable[[Any], bool]) -> list[str]:
    """Names in ``namespace`` starting with ``prefix`` whose objects ``accept`` takes."""
    found = []
    for name, obj in list(namespace.items()):
        if name.startswith("_") or name in hidden or not name.startswith(prefix):
            continue
        try:
            if accept(obj):
                found.append(name)
        except Exception:  # an odd object's attributes must never break completion
            continue
    return found


def _adapter_names(namespace: Mapping[str, Any], model_path: str | None) -> list[str]:
    """Adapter names of the model at ``model_path`` (none if it is no model); never registers anything."""
    if not model_path or _torch() is None:
        return []
    from ..core.registry import find

    try:
        model = lookup(namespace, model_path)
        config = getattr(model, "peft_config", None)  # a PeftModel: read it as is, without adopting it
        session = find(model) if config is None else None
    except Exception:  # a typo or an odd object: nothing to offer
        return []
    return list(config) if config is not None else list(session.adapters) if session is not None else []


def _walk(parser: argparse.ArgumentParser, words: list[str]) -> _Position:
    """Follow ``words`` through ``parser``: which option waits for a value, which positional comes next."""
    flags = {flag: action for action in parser._actions for flag in action.option_strings}
    positionals = [a.dest for a in parser._actions if not a.option_strings]
    at = _Position()
    for word in words:
        if at.pending is not None:
            at.pending = None
            continue
        action = flags.get(word.split("=", 1)[0]) if word.startswith("-") else None
        if action is not None:
            at.used.add(action.dest)
            at.pending = action if action.nargs != 0 and "=" not in word else None
        elif not word.startswith("-"):
            if at.positionals < len(positionals) and positionals[at.positionals] == "model":
                at.model = word
            at.positionals += 1
    return at


def _value(namespace, hidden, action: argparse.Action, model: str | None, fragment: str) -> Suggestions | None:
    """Values for ``action`` that start with ``fragment`` (None: no opinion, e.g. a path)."""
    if action.choices:
        return Suggestions(fragment, [(str(c), "choice") for c in action.choices if str(c).startswith(fragment)])
    if action.nargs == 0:  # a true/false key in a cell body
        return Suggestions(fragment, [(c, "choice") for c in ("true", "false") if c.startswith(fragment)])
    if action.dest in _ADAPTER_DESTS:
        given, _, fragment = fragment.rpartition(",")
        names = [n for n in _adapter_names(namespace, model) if n.startswith(fragment) and n not in given.split(",")]
        return Suggestions(fragment, [(n, "adapter") for n in names])
    if action.dest in _VARIABLE_KINDS and "." not in fragment:
        kind, accept = _VARIABLE_KINDS[action.dest]
        return Suggestions(fragment, [(n, kind) for n in variables(namespace, hidden, fragment, accept)])
    return None


def _options(parser: argparse.ArgumentParser, used: set[str], fragment: str) -> Suggestions:
    flags = [a.option_strings[0] for a in parser._actions
             if a.option_strings and a.dest not in used and a.help != argparse.SUPPRESS]
    return Suggestions(fragment, [(f, "option") for f in flags if f.startswith(fragment)])


def _line(namespace, hidden, rest: str) -> Suggestions | None:
    """Completions for the words after ``%lora`` up to the cursor."""
    words = rest.split()
    fragment = "" if not rest or rest[-1].isspace() else words.pop()
    if not words:
        return Suggestions(fragment, [(v, "verb") for v in VERBS if v.startswith(fragment)])
    spec = VERBS.get(words[0])
    if spec is None:
        return Suggestions(fragment)
    at = _walk(spec.parser, words[1:])
    if at.pending is not None:
        return _value(namespace, hidden, at.pending, at.model, fragment)
    if fragment.startswith("-"):
        flag, eq, value = fragment.partition("=")
        action = next((a for a in spec.parser._actions if flag in a.option_strings), None)
        if eq and action is not None and action.nargs != 0:
            return _value(namespace, hidden, action, at.model, value)
        return _options(spec.parser, at.used, fragment)
    positionals = [a for a in spec.parser._actions if not a.option_strings]
    if at.positionals < len(positionals):
        return _value(namespace, hidden, positionals[at.positionals], at.model, fragment)
    return _options(spec.parser, at.used, fragment)


def _body(namespace, hidden, head: str, earlier: list[str], line: str) -> Suggestions | None:
    """Completions in a ``%%lora`` cell body: ``key: `` names (those not given yet), then the key's values."""
    words = head.split()
    spec = VERBS.get(words[0]) if words else None
    if spec is None:
        return None
    at = _walk(spec.parser, words[1:])
    keys = {a.dest.replace("_", "-"): a for a in spec.parser._actions if a.option_strings}
    given = {k.strip().replace("_", "-") for k, _, _ in (without_comment(e).partition(":") for e in earlier)}
    key, colon, value = line.partition(":")
    if not colon:
        fragment = line.lstrip()
        if any(c.isspace() for c in fragment):  # `key ` without its colon: nothing sensible to offer
            return Suggestions("")
        return Suggestions(fragment, [(f"{k}: ", "option") for k, a in keys.items()
                                      if k.startswith(fragment) and a.dest not in at.used and k not in given])
    action = keys.get(key.strip().replace("_", "-"))
    if action is None:
        return None
    fragment = "" if not value or value[-1].isspace() else value.split()[-1]
    return _value(namespace, hidden, action, at.model, fragment)


def suggest(namespace: Mapping[str, Any], full_text: str, cursor_line: int, before: str,
            hidden: Collection[str] = ()) -> Suggestions | None:
    """Completions at the cursor (``before``: its line up to it); None outside ``%lora``."""
    lines = full_text.split("\n")
    match = _LINE.match(before) or (_CELL.match(before) if cursor_line == 0 else None)
    if match:
        return _line(namespace, hidden, match["rest"])
    cell = _CELL.match(lines[0]) if cursor_line > 0 and lines else None
    if cell:
        return _body(namespace, hidden, cell["rest"], lines[1:cursor_line], before)
    return None
