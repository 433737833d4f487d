"""Sections a Ctrl-C cannot cut in half: SIGINT is held back while one runs and delivered right after.

A Ctrl-C in a notebook reaches Python as SIGINT; its handler raises ``KeyboardInterrupt`` between any two
bytecodes of the main thread, including half-way through a change to a model. Inside ``deferred_interrupts()``
the handler only records the signal; when the outermost section ends, the previous handler is put back and
receives the signal (normally raising ``KeyboardInterrupt`` there, after the change is complete). Signal
handlers can be set only from the main thread; in any other thread (which a Ctrl-C never interrupts) the
section is a plain block.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType
from typing import Any

_state = threading.local()  # depth of nested sections and the signal held back (main thread only)


def deferring() -> bool:
    """True while this thread is inside a section that holds SIGINT back."""
    return getattr(_state, "depth", 0) > 0


def _record(signum: int, frame: FrameType | None) -> None:
    _state.pending = signum


def _deliver(previous: Any, signum: int) -> None:
    """Hand a held-back signal to the handler that was in place before the section."""
    if callable(previous):
        previous(signum, None)
    elif previous == signal.SIG_DFL:
        signal.raise_signal(signum)  # SIGINT's default: what would have happened without the section
    # SIG_IGN (or a handler set outside Python): nothing to do


@contextmanager
def deferred_interrupts() -> Iterator[None]:
    """Run the body with Ctrl-C held back until it ends (nested sections: until the outermost ends)."""
    depth = getattr(_state, "depth", 0)
    if threading.current_thread() is not threading.main_thread() or depth > 0 or \
            signal.getsignal(signal.SIGINT) is None:  # None: a handler set outside Python, which cannot be put back
        try:
            _state.depth = depth + 1
            yield
        finally:
            _state.depth = depth
        return
    _state.pending = None  # before the handler goes in: a signal from then on is recorded, never dropped
    previous = signal.getsignal(signal.SIGINT)
    try:
        signal.signal(signal.SIGINT, _record)
        _state.depth = 1
        yield
    finally:
        _state.depth = 0
        signal.signal(signal.SIGINT, previous)
        pending, _state.pending = _state.pending, None
        if pending is not None:
            _deliver(previous, pending)
