"""``NotebookSettings``: what a user sets once per notebook with ``%config LoraMagics`` (defaults and help).

``LoraMagics`` builds its configurable traits from these fields; the router hands the current values
to every verb as ``ctx.settings``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..core.adapters.options import AttachOptions
from ..core.training.settings import TrainSettings


@dataclass(frozen=True)
class NotebookSettings:
    """What a user sets once per notebook (``%config LoraMagics``); the defaults here are the only ones."""

    ui: str = field(default="auto", metadata={
        "help": "how verbs show results: auto (widgets in Jupyter, static in Colab, text in a terminal) | widget "
                "| static | text"})
    refresh_rate: float = field(default=4.0, metadata={
        "help": "live view updates per second while training (0.2 to 5)"})
    device: str = field(default=TrainSettings.device, metadata={
        "help": "device %lora train uses when the line gives no --device: "
                + TrainSettings.__dataclass_fields__["device"].metadata["help"]})
    default_r: int = field(default=AttachOptions.r, metadata={
        "help": "rank %lora attach uses when the line gives no --r"})
    default_alpha: float = field(default=AttachOptions.alpha, metadata={
        "help": "alpha %lora attach uses when the line gives no --alpha"})
    background: bool = field(default=True, metadata={
        "help": "in a notebook, %lora train runs in the background (False: the cell waits, as with --wait); "
                "in Colab it runs in the cell unless --background is given"})


def setting_help(name: str) -> str:
    """The help text of one ``NotebookSettings`` field."""
    return NotebookSettings.__dataclass_fields__[name].metadata["help"]
