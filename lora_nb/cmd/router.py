"""The ``%lora`` subcommand router: verb → (parser, handler).

Each verb is a small function ``handler(ctx, args)`` registered with :func:`verb`;
its options are declared next to it. Handlers parse nothing themselves, hold no
math and train nothing: they look up variables, call ``lora_nb.core`` and return
what the notebook should show.
"""

from __future__ import annotations

import argparse
import dataclasses
import re
import shlex
import sys
import textwrap
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from ..errors import AdapterError, LoraNBError, LoraNBWarning, OptionError, did_you_mean
from ..frontend import UI_MODES, FrontEnd, detect, in_kernel, resolve_and_note
from .lines import body_to_argv, without_comment
from .messages import as_magic
from .settings import NotebookSettings


class UnknownVariableError(LoraNBError):
    """A name that is not in the notebook namespace."""


# options people type from other tools, and the option meant (suggested, never applied silently)
SYNONYMS = {"--rank": "--r", "--lora-r": "--r", "--lora-alpha": "--alpha", "--lora-dropout": "--dropout",
            "--target": "--targets", "--target-modules": "--targets", "--learning-rate": "--lr",
            "--max-steps": "--steps", "--batch": "--batch-size", "--epoch": "--epochs", "--adapter-name": "--name"}


class _Parser(argparse.ArgumentParser):
    """argparse that reports mistakes as one-line ``OptionError``s instead of exiting."""

    argv: list[str] = []  # the words of the line being parsed (what a suggestion quotes from)

    def parse_args(self, args: Sequence[str] | None = None, namespace: Any = None) -> argparse.Namespace:  # type: ignore[override]
        self.argv = list(args or [])
        return super().parse_args(args, namespace)

    def error(self, message: str):  # type: ignore[override]
        raise OptionError(f"{self.prog}: {message}{self.suggestion(message)}")

    def suggestion(self, message: str) -> str:
        """For ``unrecognized arguments: --rank 8``: ``; did you mean `--r`?`` (a known synonym or a near miss); for
        ``unrecognized arguments: film was`` after ``--prompt The``: quote the value with spaces."""
        if not message.startswith("unrecognized arguments:"):
            return ""
        strays = message.split(":", 1)[1].split()
        known = [flag for action in self._actions for flag in action.option_strings]
        if strays and not strays[0].startswith("-"):
            return self._quote_hint(strays, known)
        for word in strays:
            flag = word.split("=", 1)[0]
            if not flag.startswith("--"):
                continue
            meant = SYNONYMS.get(flag.replace("_", "-"))
            if meant in known:
                return f"; did you mean `{meant}`?"
            hint = did_you_mean(flag, [k for k in known if k.startswith("--")])
            if hint:
                return hint
        return ""

    def _quote_hint(self, strays: list[str], known: list[str]) -> str:
        """``; a value with spaces goes in quotes: `--prompt "The film was"``` when the stray words follow an
        option's value on the line; else ``""``."""
        argv = self.argv
        at = next((i for i in range(len(argv) - len(strays) + 1) if argv[i:i + len(strays)] == strays), None)
        if at is None or at < 2 or argv[at - 2] not in known:
            return ""
        value = " ".join(argv[at - 1:at + len(strays)])
        return f"; a value with spaces goes in quotes: `{argv[at - 2]} \"{value}\"`"


def arg(*flags: str, **kwargs: Any) -> tuple[tuple[str, ...], dict[str, Any]]:
    """One option of a verb, as for ``ArgumentParser.add_argument``."""
    return flags, kwargs


def options_of(cls: type, only: Sequence[str] | None = None, skip: Sequence[str] = (), note: str = "",
               given_only: bool = False, notebook: Mapping[str, str] | None = None,
               ) -> list[tuple[tuple[str, ...], dict[str, Any]]]:
    """A verb's options from the fields of dataclass ``cls``: ``--field-name`` (and ``--field_name``), the
    field's help and default. A ``bool`` field is a flag; a field with ``choices`` metadata offers them (Tab).
    ``given_only``: the default is None, so the handler passes on only what the line gave (the callee's
    defaults apply). ``notebook`` maps fields whose default is a notebook setting to its name: their default
    is None, filled in by :func:`with_settings`."""
    notebook = notebook or {}
    options = []
    for f in dataclasses.fields(cls):
        if (only is not None and f.name not in only) or f.name in skip:
            continue
        default = None if f.default is dataclasses.MISSING else f.default
        shown = f"%%config LoraMagics.{notebook[f.name]}" if f.name in notebook else default
        default = None if given_only or f.name in notebook else default
        flags = tuple(dict.fromkeys([f"--{f.name.replace('_', '-')}", f"--{f.name}"]))
        text = f.metadata["help"].replace("%", "%%") + note
        if f.type in (bool, "bool") and f.default is True:  # on by default: the flag turns it off
            options.append(arg(f"--no-{f.name.replace('_', '-')}", dest=f.name, action="store_false",
                               default=None if given_only else True, help=f"turn off: {text}"))
        elif f.type in (bool, "bool"):
            options.append(arg(*flags, dest=f.name, action="store_true", default=default, help=text))
            if f.metadata.get("was_on"):  # on by default once: lines written then (`--no-…`) still mean what they said
                options.append(arg(f"--no-{f.name.replace('_', '-')}", dest=f.name, action="store_false",
                                   default=default, help=argparse.SUPPRESS))
        else:  # said once: not again when the help says it (`default: one epoch`), not at all when it is "not set"
            text = text if "(default:" in text or shown is None else f"{text} (default: {shown})"
            if "choices" in f.metadata:  # listed for Tab completion; any case is accepted
                options.append(arg(*flags, dest=f.name, default=default, type=str.lower,
                                   choices=f.metadata["choices"], help=text))
            else:
                options.append(arg(*flags, dest=f.name, default=default, help=text))
    return options


def with_settings(options: dict[str, Any], settings: NotebookSettings, notebook: Mapping[str, str]) -> dict[str, Any]:
    """``options`` with each entry of ``notebook`` (field → setting name) that is missing or None from ``settings``."""
    return {**options, **{k: getattr(settings, name) for k, name in notebook.items() if options.get(k) is None}}


def given(args: argparse.Namespace, cls: type) -> dict[str, Any]:
    """The options of dataclass ``cls`` that the line gave (not None)."""
    return {f.name: getattr(args, f.name) for f in dataclasses.fields(cls) if getattr(args, f.name, None) is not None}


Mutates = Literal["model", "run", "nothing"]


@dataclass
class Verb:
    name: str
    summary: str
    handler: Callable[["Context", argparse.Namespace], Any]
    parser: _Parser
    examples: Sequence[str] = field(default_factory=tuple)
    mutates: Mutates | None = None  # what it changes: the model (refused while it trains), its run, or nothing


VERBS: dict[str, Verb] = {}


UI = arg("--ui", choices=UI_MODES, default=None,
         help="how to show the view: widget, static or text (default: %%config LoraMagics.ui, auto: widget in "
              "Jupyter, static in Colab, text in a terminal)")


def verb(name: str, summary: str, *options, examples: Sequence[str] = (), model: bool = True,
         mutates: Mutates | None = None):
    """Register ``handler`` as ``%lora NAME``; ``options`` are :func:`arg` tuples. A verb given a model declares
    what it ``mutates``: ``"model"`` (the core refuses it while the model trains), ``"run"`` (it controls the
    model's run: stop, pause, resume) or ``"nothing"`` (it only reads; it works beside a run)."""
    if model and mutates is None:
        raise TypeError(f"%lora {name}: declare what it mutates (model, run or nothing)")

    def register(handler):
        parser = _Parser(prog=f"%lora {name}", add_help=False, description=summary, allow_abbrev=False)
        if model:
            parser.add_argument("model", help="notebook variable holding the model (dotted paths work)")
        for flags, kwargs in options:
            parser.add_argument(*flags, **kwargs)
        parser.usage = model_first_usage(parser)
        VERBS[name] = Verb(name, summary, handler, parser, tuple(examples), mutates)
        return handler

    return register


def model_first_usage(parser: argparse.ArgumentParser, width: int = 100) -> str:
    """The usage line with the positionals first (``%lora train model --data DATA …``), as every example writes it
    (argparse puts them last), wrapped under the verb; ``%`` escaped for argparse's formatting."""
    formatter = argparse.HelpFormatter(parser.prog, width=10_000)
    formatter.add_usage(None, parser._actions, [], prefix="")
    line = formatter.format_help().strip()[len(parser.prog):]
    names = " ".join(a.metavar or a.dest for a in parser._actions if not a.option_strings)
    if names and line.endswith(" " + names):
        line = f" {names}{line[:-len(names) - 1]}"
    kept = re.sub(r"\[[^\]]*\]", lambda m: m.group(0).replace(" ", "\0"), parser.prog + line)  # `[--r R]` whole
    indent = " " * (len("usage: ") + len(parser.prog) + 1)
    lines = textwrap.wrap(kept, width - len("usage: "), subsequent_indent=indent, break_on_hyphens=False)
    return "\n".join(lines).replace("\0", " ").replace("%", "%%")


def order_verbs(order: Sequence[str]) -> None:
    """Put ``VERBS`` in the verb table's ``order``, which must name every registered verb exactly once."""
    if len(set(order)) != len(order) or set(order) != set(VERBS):
        raise RuntimeError(f"the verb table and the registered verbs differ: {sorted(set(order) ^ set(VERBS))}")
    ordered = {name: VERBS[name] for name in order}
    VERBS.clear()
    VERBS.update(ordered)


VARIABLE_PATH = re.compile(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)*")
# for a name that is no variable: what the option takes (``{name}``: the name given)
WHAT_IT_TAKES = {"tokenizer": "--tokenizer takes a variable holding a tokenizer, e.g. "
                              "`tok = AutoTokenizer.from_pretrained(\"{name}\")`, then `--tokenizer tok`"}


def lookup(namespace: dict[str, Any], path: str, kind: str | None = None) -> Any:
    """The object at ``path`` (``model`` or ``pipe.model``) in ``namespace``; one-line error for a typo, for an
    expression (never evaluated), and saying what the option takes (``kind``: ``tokenizer``, …)."""
    if not VARIABLE_PATH.fullmatch(path):
        raise UnknownVariableError(f"`{path}` is an expression: %lora reads variable names and evaluates no "
                                   f"expressions; assign it to a variable first (`part = {path}`) and pass `part`")
    head, *rest = path.split(".")
    if head not in namespace:
        visible = [k for k in namespace if not k.startswith("_")]
        takes = WHAT_IT_TAKES.get(kind or "", "").format(name=path)
        raise UnknownVariableError(f"no variable `{head}`{did_you_mean(head, visible)}{'; ' + takes if takes else ''}")
    obj = namespace[head]
    for i, part in enumerate(rest):
        if not hasattr(obj, part):
            where = ".".join([head, *rest[:i]])
            attrs = [a for a in dir(obj) if not a.startswith("_")]
            raise UnknownVariableError(f"`{where}` has no attribute `{part}`{did_you_mean(part, attrs)}")
        obj = getattr(obj, part)
    return obj


class Context:
    """What a handler may ask of the notebook: variables, the user's settings, and how to show results."""

    def __init__(self, shell, settings: NotebookSettings | None = None) -> None:
        self.shell = shell
        self.settings = settings or NotebookSettings()

    @property
    def namespace(self) -> dict[str, Any]:
        return self.shell.user_ns

    @property
    def widgets(self) -> bool:
        """True inside a Jupyter kernel (a widget frontend may exist); False in terminal IPython."""
        return in_kernel(self.shell)

    @property
    def frontend(self) -> FrontEnd:
        """The front end this notebook runs in (``lora_nb.frontend``)."""
        return detect(kernel=self.widgets)

    @property
    def ui(self) -> str:
        """The notebook's preferred view mode (``%config LoraMagics.ui``): ``auto | widget | static | text``."""
        return self.settings.ui

    def view_mode(self, args: argparse.Namespace | None = None) -> str:
        """``widget``, ``static`` or ``text``: the verb's ``--ui``, else :attr:`ui`, resolved for this shell (the
        front end's note, e.g. VS Code's widget bug, is said once when ``auto`` decides)."""
        return resolve_and_note(getattr(args, "ui", None) or self.ui, kernel=self.widgets)

    @property
    def refresh_rate(self) -> float:
        """Live view updates per second."""
        return self.settings.refresh_rate

    def lookup(self, path: str, kind: str | None = None) -> Any:
        """The object at ``path`` (``model`` or ``pipe.model``) in the notebook namespace (``kind``: what the option
        takes, said when no variable has that name)."""
        return lookup(self.namespace, path, kind)

    def model(self, path: str):
        """The model at ``path`` (a torch module with parameters, as ``core.kinds`` says), with an error naming
        what was found instead."""
        from ..core.kinds import check_model

        obj = self.lookup(path)
        check_model(obj, f"`{path}`")
        from .owners import owner

        if (name := owner(self.namespace, path, obj, self.lookup)) is not None:
            raise AdapterError(f"`{path}` is part of `{name}`, which has LoRA adapters: give `{name}` instead "
                               f"(e.g. `%lora status {name}`), so its session sees every change")
        return obj

    def display(self, obj: Any) -> None:
        from IPython.display import display

        display(obj)


def dispatch(shell, line: str, cell: str | None = None, settings: NotebookSettings | None = None) -> Any:
    """Run ``%lora LINE`` (or ``%%lora LINE`` with a cell body) under the notebook's ``settings``."""
    try:
        words = shlex.split(without_comment(line))
    except ValueError as exc:
        raise OptionError(f"%lora: cannot parse the line ({exc})") from None
    if not words or words[0] in ("help", "-h", "--help"):
        return Text(help_text())
    name, argv = words[0], words[1:]
    spec = VERBS.get(name)
    if spec is None:
        raise OptionError(f"unknown verb `{name}`{did_you_mean(name, VERBS)}; verbs: {', '.join(VERBS)}")
    if "-h" in argv or "--help" in argv:
        return Text(verb_help(spec))
    if cell is not None:
        argv += body_to_argv(cell, spec.parser)
    args = spec.parser.parse_args(argv)
    caught: list = []
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", LoraNBWarning)
            return spec.handler(Context(shell, settings), args)
    finally:  # outside the `with`: there, showwarning would append to `caught` while we iterate it
        for w in caught:  # lora_nb's notes as one line; anything else goes on as a normal warning
            if issubclass(w.category, LoraNBWarning):
                print(f"note: {as_magic(str(w.message), VERBS)}", file=sys.stderr)
            else:
                warnings.showwarning(w.message, w.category, w.filename, w.lineno)


class Text(str):
    """Plain text shown as is in any frontend (help, one-line results)."""

    def __repr__(self) -> str:
        return str(self)


def verb_help(spec: Verb) -> str:
    usage = spec.parser.format_help().strip()
    examples = "\n".join(f"  {e}" for e in spec.examples)
    return usage + (f"\n\nexamples:\n{examples}" if examples else "")


def help_text() -> str:
    lines = ["%lora VERB MODEL [options]   (%lora VERB -h for a verb's options)", "", "verbs:"]
    width = max(map(len, VERBS), default=0)
    lines += [f"  {v.name.ljust(width)}  {v.summary}" for v in VERBS.values()]
    examples = [e for v in VERBS.values() for e in v.examples[:1]]
    lines += ["", "examples:", *(f"  {e}" for e in examples)]
    lines += [
        "",
        "%%lora VERB MODEL takes more options from the cell, one `key: value` per line:",
        "  %%lora attach model",
        "  r: 16",
        "  targets: q_proj, v_proj",
        "",
        f"settings for the whole notebook ({', '.join(NotebookSettings.__dataclass_fields__)}): %config LoraMagics",
        "Tab completes verbs, options, adapter names and fitting variables.",
    ]
    return "\n".join(lines)
