"""``watch_trainer``: put one ``WatchCallback`` on a trainer (replacing an earlier one), with the token counter on its
collator and its ``train`` guarded so that a run ended by an exception is ended as failed; ``train_in_background``
runs ``trainer.train()`` in a thread (``lora_nb.fit``)."""

from __future__ import annotations

import contextvars
import functools
import threading
import traceback
from typing import Any

from ...errors import OptionError, a_kind
from .callback import WatchCallback
from .supervised import count_tokens

_GUARD = "_lora_nb_guarded_train"


def check_trainer(trainer: Any) -> None:
    """A one-line error unless ``trainer`` is a ``transformers.Trainer`` (TRL's and Unsloth's trainers are)."""
    try:
        from transformers import Trainer
    except ImportError:  # pragma: no cover - transformers is a dependency
        raise OptionError("watching a trainer needs transformers (`pip install transformers`)") from None
    if not isinstance(trainer, Trainer):
        raise OptionError(f"watch takes a transformers Trainer (or TRL's SFTTrainer, DPOTrainer, GRPOTrainer …), "
                          f"got {a_kind(trainer)}")


def watch_trainer(trainer: Any, views: list, background: bool = False, spectra: bool = True) -> WatchCallback:
    """Watch ``trainer``'s next runs with ``views`` (lora_nb callbacks); an earlier watch of it is replaced."""
    check_trainer(trainer)
    handler = trainer.callback_handler
    for old in [cb for cb in handler.callbacks if isinstance(cb, WatchCallback)]:
        if old.run is not None and not old.run.done:
            raise OptionError("this trainer is training under an earlier watch; stop it first (`view.stop()`)")
        handler.remove_callback(old)
    callback = WatchCallback(views, spectra=spectra, background=background)
    callback.trainer = trainer
    callback.counter = count_tokens(trainer)
    trainer.add_callback(callback)
    guard_train(trainer)
    return callback


def watching(trainer: Any) -> WatchCallback | None:
    """The ``WatchCallback`` on ``trainer``, if any."""
    return next((cb for cb in trainer.callback_handler.callbacks if isinstance(cb, WatchCallback)), None)


def guard_train(trainer: Any) -> None:
    """Wrap ``trainer.train`` (on this instance only, once) so an exception ends the watched run as failed (the
    trainer calls no callback then) and is raised on as before."""
    if getattr(trainer, _GUARD, False):
        return
    original = trainer.train

    @functools.wraps(original)
    def train(*args: Any, **kwargs: Any) -> Any:
        try:
            return original(*args, **kwargs)
        except BaseException as exc:
            callback = watching(trainer)
            if callback is not None:
                callback.fail(exc, traceback.format_exc())
            raise

    trainer.train = train
    setattr(trainer, _GUARD, True)


def train_in_background(trainer: Any, callback: WatchCallback, kwargs: dict) -> threading.Thread:
    """Start ``trainer.train(**kwargs)`` in a daemon thread (its output goes where it was started); the thread keeps
    its result or exception as the callback's ``result`` / ``error``."""
    context = contextvars.copy_context()

    def work() -> None:
        try:
            callback.result = trainer.train(**kwargs)
        except BaseException as exc:  # ended as failed by the guard; kept for the caller, the kernel lives on
            callback.error = exc

    thread = threading.Thread(target=context.run, args=(work,), name="lora_nb-watch-train", daemon=True)
    thread.start()
    return thread
