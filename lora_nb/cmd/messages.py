"""One wording for the core's messages, two spellings: Python names for the API, options for the magics.

The core writes what to do in Python, in backticks — `` `name=…` ``, `` `replace=True` ``,
`` `lora_nb.attach(model)` ``, `` `run.stop()` `` — which is what a user of the Python API reads. At the magic
boundary :func:`as_magic` respells those spans as ``%lora`` options and verbs — `` `--name …` ``, `` `--replace` ``,
`` `%lora attach MODEL` ``, `` `%lora stop MODEL` ``. Nothing else in a message changes.
"""

from __future__ import annotations

import re
from collections.abc import Collection
from functools import partial

# Python parameter -> %lora option, where the option is not the parameter with `-` for `_`
OPTIONS = {"eval_data": "eval", "loss_fn": "loss", "combination_type": "type"}
# lora_nb function -> %lora verb, where the verb is not the function's name with `-` for `_`
VERBS = {"enable": "on", "disable": "off", "spectra": "spectrum", "interference": "similarity",
         "plan_memory": "plan", "spectra_history": "history", "delete_adapter": "delete"}

_SPAN = re.compile(r"`([^`\n]+)`")
_CALL = re.compile(r"(?:lora_nb\.|run\.)(\w+)\(.*\)")
_KEYWORD = re.compile(r"(\w+)=(.*)")


def option(name: str) -> str:
    """``eval_data`` → ``--eval``; ``save_every`` → ``--save-every``."""
    return "--" + OPTIONS.get(name, name).replace("_", "-")


def _value(text: str) -> str:
    text = text.strip()
    if text[:1] in "[(" and text[-1:] in "])":
        text = ",".join(part.strip() for part in text[1:-1].split(","))
    return text.strip("'\"")


def _keywords(span: str) -> str | None:
    """``batch_size=4, grad_accum=2`` → ``--batch-size 4 --grad-accum 2``; None if ``span`` is not keywords."""
    parts = [_KEYWORD.fullmatch(p.strip()) for p in re.split(r",\s*(?=\w+=)", span)]
    if not all(parts):
        return None
    out = []
    for match in parts:
        value = _value(match.group(2))
        out.append(option(match.group(1)) + ("" if value == "True" else f" {value}"))
    return " ".join(out)


def _respell(verbs: Collection[str], match: re.Match) -> str:
    span = match.group(1)
    call = _CALL.fullmatch(span)
    verb = call and VERBS.get(call.group(1), call.group(1).replace("_", "-"))
    if verb in verbs:
        return f"`%lora {verb} MODEL`"
    spelled = _keywords(span)
    return match.group(0) if spelled is None else f"`{spelled}`"


def as_magic(message: str, verbs: Collection[str]) -> str:
    """``message`` with its Python spans in backticks spelled as ``%lora`` options and ``verbs``."""
    return _SPAN.sub(partial(_respell, verbs), message)
