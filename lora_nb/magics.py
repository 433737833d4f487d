"""``%lora`` and ``%%lora``: parse the line, look up variables, delegate to core, show the result.

The magics' settings are traits (``%config LoraMagics``); their defaults and help come from
``NotebookSettings``. Tab completion on ``%lora`` lines is a matcher registered with IPython's completer.
"""

from __future__ import annotations

import math
from dataclasses import fields

from IPython.core.completer import CompletionContext, SimpleCompletion, SimpleMatcherResult, context_matcher
from IPython.core.error import UsageError
from IPython.core.magic import Magics, line_cell_magic, magics_class
from IPython.display import display
from traitlets import Bool, Enum, Float, Int, TraitError, Unicode, validate

from .cmd import VERBS, dispatch, help_text
from .cmd.complete import suggest
from .cmd.messages import as_magic
from .cmd.settings import NotebookSettings, setting_help
from .core.training.device import resolve_device
from .core.training.run import TrainRun
from .errors import LoraNBError
from .frontend import UI_MODES

_DEFAULTS = NotebookSettings()


def _setting(trait_type, name: str, **kwargs):
    """A configurable trait for the ``NotebookSettings`` field ``name``, with its default and help."""
    return trait_type(default_value=getattr(_DEFAULTS, name), help=setting_help(name), **kwargs).tag(config=True)


@magics_class
class LoraMagics(Magics):
    """The ``%lora`` magics; ``%lora?`` lists the verbs, ``%config LoraMagics`` the settings."""

    ui = _setting(Enum, "ui", values=UI_MODES)
    refresh_rate = _setting(Float, "refresh_rate", min=0.2, max=5.0)
    device = _setting(Unicode, "device")
    default_r = _setting(Int, "default_r", min=1)
    default_alpha = _setting(Float, "default_alpha")
    background = _setting(Bool, "background")

    @validate("default_alpha", "refresh_rate")
    def _finite_positive(self, proposal):
        value, name = proposal["value"], proposal["trait"].name
        if not 0 < value < math.inf:
            raise TraitError(f"LoraMagics.{name} must be positive; got {value:g}")
        return value

    @validate("device")
    def _known_device(self, proposal):
        """The device must make sense here when it is set, not only when a run starts."""
        try:
            resolve_device(proposal["value"])
        except LoraNBError as exc:
            raise TraitError(f"LoraMagics.device: {exc}") from None
        return proposal["value"]

    def settings(self) -> NotebookSettings:
        """The current values of the traits."""
        return NotebookSettings(**{f.name: getattr(self, f.name) for f in fields(NotebookSettings)})

    @line_cell_magic
    def lora(self, line: str, cell: str | None = None):
        try:
            result = dispatch(self.shell, line, cell, settings=self.settings())
        except LoraNBError as exc:
            raise UsageError(as_magic(str(exc), VERBS)) from None
        if result is not None and runs_silently(self.shell) and not isinstance(result, TrainRun):
            display(result)  # a script shows no values: show what a notebook shows (a run has printed its own)
        return result

    lora.__doc__ = help_text()

    @context_matcher(identifier="lora_nb.complete_lora")
    def complete_lora(self, context: CompletionContext) -> SimpleMatcherResult:
        """Completions on ``%lora`` lines and in ``%%lora`` cells; other matchers are silenced only there."""
        found = suggest(self.shell.user_ns, context.full_text, context.cursor_line, context.text_until_cursor,
                        hidden=self.shell.user_ns_hidden)
        if found is None:
            return {"completions": [], "suppress": False}
        return {"completions": [SimpleCompletion(text, type=kind) for text, kind in found.items],
                "matched_fragment": found.fragment, "suppress": True}


def runs_silently(shell) -> bool:
    """True while ``shell`` runs a script (``ipython tour.ipy``, ``%run tour.ipy``): IPython runs its cells with
    ``silent=True``, which displays no value, so a verb's returned result would never be seen there."""
    running = getattr(getattr(shell, "displayhook", None), "exec_result", None)
    return running is not None and bool(running.info.silent)


def drop_invalid_settings(config) -> None:
    """Forget values a ``%config LoraMagics.x = …`` refused, so they cannot break loading the extension again."""
    section = config.LoraMagics if config is not None and "LoraMagics" in config else {}
    probe = LoraMagics()  # no shell: joins no configurables
    for name in list(section):
        try:
            setattr(probe, name, section[name])
        except TraitError:
            del section[name]


def register(shell) -> LoraMagics:
    """Add the magics, their settings and their completer to ``shell`` (once, however often it is called)."""
    unregister(shell)
    drop_invalid_settings(getattr(shell, "config", None))
    magics = LoraMagics(shell=shell)  # a Magics joins shell.configurables, so `%config LoraMagics` sees it
    shell.register_magics(magics)
    shell.Completer.custom_matchers.append(magics.complete_lora)
    return magics


def unregister(shell) -> None:
    """Remove what ``register`` added."""
    for kind in ("line", "cell"):
        shell.magics_manager.magics[kind].pop("lora", None)
    for magics in [c for c in shell.configurables if isinstance(c, LoraMagics)]:
        shell.configurables.remove(magics)
        matchers = shell.Completer.custom_matchers
        matchers[:] = [m for m in matchers if getattr(m, "__self__", None) is not magics]
