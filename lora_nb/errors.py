"""The one error channel: every mistake a user can make is a ``LoraNBError``.

The magic layer turns these into one-line IPython ``UsageError``s; anything else
that escapes is a bug in lora_nb and keeps its traceback.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class LoraNBError(Exception):
    """A mistake the user can fix; shown as one line, and nothing was changed."""


class NotAModelError(LoraNBError):
    """The object given is not a ``torch.nn.Module``."""


class OptionError(LoraNBError, ValueError):
    """An option has a value lora_nb cannot use."""


class TargetError(LoraNBError):
    """Target modules match nothing, or match modules LoRA cannot adapt."""


class InjectionError(TargetError):
    """peft failed while putting LoRA layers into the model; the model was left unchanged."""


class AdapterError(LoraNBError):
    """An adapter name is unknown or already taken, or the model has no adapter."""


class TrainingActiveError(LoraNBError):
    """A command would change a model that is training right now."""


class DataError(LoraNBError):
    """Training or evaluation data lora_nb cannot use."""


class TrainingError(LoraNBError):
    """The model cannot be trained as it is (weights on the meta device, adapter off or merged, no run)."""


class AdapterFileError(LoraNBError):
    """An adapter on disk is missing, corrupt, unsafe or does not fit the model."""


class CheckpointError(LoraNBError):
    """A training checkpoint is missing, incomplete, unreadable or does not fit the run."""


class FileWriteError(LoraNBError):
    """A folder could not be written (full disk, lost mount, no permission); whatever was there before is intact."""


class PathError(OptionError):
    """A path a verb would write is unusable (a file, not writable, impossible, the working folder)."""


class ModelCallError(LoraNBError):
    """The user's model (or tokenizer, metric) raised while lora_nb called it; the model was left as it was."""


class LoraNBWarning(UserWarning):
    """Something works but deserves a note (e.g. a rank above a layer's size); shown as one line by magics."""


def a_kind(obj: object) -> str:
    """``"an int"``, ``"a list"``: the kind of ``obj`` with its article, for messages."""
    name = type(obj).__name__
    return f"{'an' if name[:1].lower() in 'aeiou' else 'a'} {name}"


def did_you_mean(name: str, candidates: Iterable[str]) -> str:
    """``"; did you mean `x`?"`` for the closest candidate, or ``""``."""
    close = difflib.get_close_matches(name, list(candidates), n=1, cutoff=0.6)
    return f"; did you mean `{close[0]}`?" if close else ""


def first_line(exc: BaseException) -> str:
    """An exception's message in one line: its first non-empty line, or its type's name when it has none."""
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def preview(names: Iterable[str], limit: int = 8) -> str:
    """A short comma-separated preview of names, with a count of the rest."""
    names = list(names)
    shown = ", ".join(names[:limit])
    more = len(names) - limit
    return f"{shown}, … ({more} more)" if more > 0 else shown
