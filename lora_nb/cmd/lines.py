"""How a ``%lora`` line and a ``%%lora`` cell body become command-line words: comments dropped the same way in
both (a ``#`` that starts a word outside quotes), ``key: value`` body lines turned into options."""

from __future__ import annotations

import argparse

from ..errors import OptionError, did_you_mean


def body_to_argv(cell: str, parser: argparse.ArgumentParser) -> list[str]:
    """``key: value`` lines of a ``%%lora`` cell as command-line options."""
    actions = [a for a in parser._actions  # keys: the option names (`eval`) and their dests; not hidden ones
               if a.option_strings and a.help != argparse.SUPPRESS]
    flags = {key: a for a in actions for key in [a.dest, *(o.lstrip("-").replace("-", "_") for o in a.option_strings)]}
    argv: list[str] = []
    for lineno, raw in enumerate(cell.splitlines(), 1):
        line = without_comment(raw).strip()  # comments as on a `%lora` line: `a#b` stays, `a  # note` goes
        if not line:
            continue
        key, sep, value = line.partition(":")
        if not sep:
            raise OptionError(f"line {lineno} of the cell: expected `key: value`, got `{raw.strip()}`")
        dest = key.strip().replace("-", "_")
        action = flags.get(dest)
        if action is None:
            known = list(dict.fromkeys(a.option_strings[0].lstrip("-") for a in actions))
            raise OptionError(f"{parser.prog}: unknown option `{key.strip()}`{did_you_mean(key.strip(), known)}")
        value = value.strip()
        if isinstance(action, (argparse._StoreTrueAction, argparse._StoreFalseAction)):
            truth = {"true": True, "yes": True, "1": True, "on": True, "": True,
                     "false": False, "no": False, "0": False, "off": False}.get(value.lower())
            if truth is None:
                raise OptionError(f"{parser.prog}: `{key.strip()}` takes true or false, got `{value}`")
            if truth == isinstance(action, argparse._StoreTrueAction):  # the flag says what the value says
                argv.append(action.option_strings[0])
        else:
            argv += [action.option_strings[0], value]
    return argv


def without_comment(line: str) -> str:
    """``line`` up to a ``#`` that starts a word outside quotes (`%lora attach model --r 8  # a note`), as in Python;
    a ``#`` inside a word or in quotes is kept (`--targets 'a#b'`)."""
    quote = None
    for i, char in enumerate(line):
        if quote:
            quote = None if char == quote else quote
        elif char in "'\"":
            quote = char
        elif char == "#" and (i == 0 or line[i - 1].isspace()):
            return line[:i]
    return line
