"""The export formats as a table: one ``Format`` per format, the one place that says what each writes, which quants
it takes, what it needs (a tokenizer, a package) and whether its result loads back for a metric. ``export`` and
``%lora export`` look formats up here; a new format is a new entry."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ...errors import OptionError
from . import gguf_lora, gguf_model, merged, script
from .request import Job


@dataclass(frozen=True)
class Package:
    """A package a format imports, and the pip extra of lora-nb that installs it."""

    module: str
    extra: str

    def require(self, who: str) -> None:
        """One line naming the install command when ``module`` cannot be imported."""
        try:
            importlib.import_module(self.module)
        except ImportError:
            install = f'pip install "lora-nb[{self.extra}]"'
            raise OptionError(f"{who} needs the `{self.module}` package: {install}") from None


@dataclass(frozen=True)
class Format:
    """One export format: how it is checked and written, and what it takes."""

    name: str
    summary: str  # what the folder holds (the magic's help)
    check: Callable[[Job], None]  # format-specific refusals, before anything is written
    writer: Callable[[Job, Path], Any]  # writes everything into the staging folder; returns the result
    legacy_marker: str  # the file that marked this format's folders before manifests (still recognised)
    quants: tuple[str, ...] = ()
    default_quant: str | None = None
    precision: str = ""  # what a format without quants keeps (for the refusal of --quant)
    needs_tokenizer: bool = False
    saves_tokenizer: bool = True  # a given tokenizer is written into the folder
    takes_metric: bool = False
    reloadable: bool = False  # transformers loads the result back (what a metric is measured on)
    takes_adapter: bool = True
    takes_data: bool = False  # data, eval_data, loss_fn, settings (the script's run)
    package: Package | None = None

    @property
    def kind(self) -> str:
        """The manifest kind of this format's folders."""
        return f"export-{self.name}"


GGUF = Package("gguf", "gguf")
FORMATS: dict[str, Format] = {f.name: f for f in (
    Format("script", "train.py + adapter/base/data for accelerate launch", script.check, script.write,
           legacy_marker=script.SCRIPT, precision="the script trains the adapter as it is", takes_adapter=False,
           takes_data=True),
    Format("merged", "a transformers folder of W + ΔW", merged.check, merged.write,
           legacy_marker=".lora_nb-export-merged", precision="a merged folder keeps the base's dtype",
           takes_metric=True, reloadable=True),
    Format("gguf", "one GGUF file + Ollama Modelfile", gguf_model.check, gguf_model.write,
           legacy_marker=".lora_nb-export-gguf", quants=gguf_model.QUANTS, default_quant="f16",
           needs_tokenizer=True, saves_tokenizer=False, takes_metric=True, reloadable=True, package=GGUF),
    Format("gguf-lora", "the adapter alone for llama.cpp --lora", gguf_lora.check, gguf_lora.write,
           legacy_marker=".lora_nb-export-gguf-lora", quants=gguf_lora.LORA_QUANTS, default_quant="f32",
           saves_tokenizer=False, package=GGUF),
)}
QUANTS: tuple[str, ...] = tuple(dict.fromkeys(q for f in FORMATS.values() for q in f.quants))
