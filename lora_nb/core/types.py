"""The shapes the layers of ``core`` agree on, as Protocols, so a lower layer names a higher one's objects without
importing it: the registry holds a session's run (``training.run.TrainRun`` is one) and training reads a session
(``registry.Session`` is one, so is a bare holder of a model copy). Nothing here imports the rest of lora_nb.
"""

from __future__ import annotations

from contextlib import AbstractContextManager
from typing import Any, Literal, Protocol

from torch import nn

RunState = Literal["running", "paused", "finished", "stopped", "failed"]


class RunHandle(Protocol):
    """What a session's readers see of its run and may do with it (views, verbs, status, export)."""

    adapter: str
    state: RunState
    message: str
    max_steps: int
    history: list[dict]
    evals: list[dict]
    settings: Any  # training.settings.TrainSettings (a dataclass: ``asdict`` reads it)
    spectra_history: Any  # training.longrun.spectra_history.SpectraHistory
    callbacks: list[Any]  # training.callbacks.Callback: who watches the run

    @property
    def step(self) -> int: ...

    @property
    def seconds(self) -> float: ...

    @property
    def done(self) -> bool: ...

    def stop(self) -> None: ...

    def pause(self) -> None: ...

    def resume(self) -> None: ...

    def wait(self, timeout: float | None = None) -> RunHandle: ...

    def add_callback(self, callback: Any) -> None: ...


class SessionLike(Protocol):
    """What a training loop reads of the session it trains: the model, and the lock its changes are made under."""

    @property
    def model(self) -> nn.Module: ...

    @property
    def lock(self) -> AbstractContextManager[Any]: ...
