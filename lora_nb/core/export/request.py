"""What an export works from and what it returns: ``Job`` (the inputs, every one checked before anything is
written) and ``Shipped`` (what a merged / GGUF export wrote and how much of the fine-tune survived)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .. import registry
from .survival import Survival

if TYPE_CHECKING:
    from .formats import Format
    from .layout import Layout


@dataclass
class Job:
    """One export's checked inputs. ``layout`` is set by the GGUF formats' checks, ``settings`` by the script's."""

    format: Format
    model: Any
    session: registry.Session
    adapter: str
    target: Path
    quant: str | None = None
    tokenizer: Any = None
    metric: Callable[[Any], float] | None = None
    options: dict[str, Any] = field(default_factory=dict)  # the script's data, eval_data, loss_fn, settings
    layout: Layout | None = None
    settings: dict[str, Any] | None = None


@dataclass
class Shipped:
    """What a merged / GGUF export wrote, how long it took, and how much of the fine-tune survived."""

    path: Path
    format: str
    quant: str | None
    files: list[str]
    seconds: float
    survival: Survival
    notes: list[str] = field(default_factory=list)
    file: str | None = None  # the GGUF file inside ``path``

    def __repr__(self) -> str:
        what = f"{self.format}" + (f" {self.quant}" if self.quant else "")
        lines = [f"exported {what} to {self.path} in {self.seconds:.1f} s ({', '.join(self.files)})",
                 self.survival.summary()]
        return "\n".join(lines + [f"note: {n}" for n in self.notes])


def listing(folder: Path) -> list[str]:
    """The names an export lists as written: the folder's entries, hidden ones (and the manifest) left out."""
    from ..files import MANIFEST

    return sorted(p.name for p in folder.iterdir() if not p.name.startswith(".") and p.name != MANIFEST)
