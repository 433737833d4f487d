"""``export`` and ``check``: the public entry points of shipping (``lora_nb.export``, ``%lora export``/``check``).

``format="script"`` is the notebook-run export of ``training.processes.export`` (unchanged); ``merged``, ``gguf``
and ``gguf-lora`` write a folder with the model (or adapter) for another runtime, report how much of ΔW the
written numbers keep, and, with ``metric`` (a callable taking a model and returning a number), the metric on the
live model and on the export loaded back.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ...errors import OptionError
from .. import registry
from ..kinds import check_callable, check_tokenizer, user_call
from ..paths import output_folder
from ..training.processes.export import export as export_script
from .gguf_lora import write_gguf_lora
from .gguf_model import QUANTS, write_gguf
from .layout import Layout
from .merged import merge_aside, write_merged
from .preflight import check
from .survival import Survival, cast_rounding, kept
from .vocab import modelfile

FORMATS = ("script", "merged", "gguf", "gguf-lora")


def _marker(format: str) -> str:
    """The file that marks a folder as an earlier export of ``format`` (which a rerun may replace)."""
    return f".lora_nb-export-{format}"
__all__ = ["FORMATS", "QUANTS", "Shipped", "check", "export", "reload"]


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


def _gguf_name(format: str, quant: str) -> str:
    return f"{'adapter' if format == 'gguf-lora' else 'model'}-{quant}.gguf"


def _write(model: Any, folder: Path, format: str, quant: str | None, tokenizer: Any, adapter: str | None) -> Shipped:
    started = time.perf_counter()
    notes: list[str] = []
    folder.mkdir(parents=True, exist_ok=True)
    if format == "gguf-lora":
        quant = quant or "f32"
        name = _gguf_name(format, quant)
        survival = write_gguf_lora(model, folder / name, quant, adapter)
        notes.append(f"use with: llama-cli -m <base model>.gguf --lora {folder / name}")
        return Shipped(folder, format, quant, [name], time.perf_counter() - started, survival, notes, name)
    merged = merge_aside(model, adapter)
    if format == "merged":
        if quant is not None:
            raise OptionError(f"a merged folder keeps the base's dtype ({merged.dtype}); --quant applies to GGUF")
        files = write_merged(merged, folder, tokenizer)
        survival = Survival(str(merged.dtype).removeprefix("torch."))
        for a in merged.adapted:
            survival.modules[a.name] = kept(a.base, a.delta, cast_rounding(merged.dtype))
        if tokenizer is None:
            notes.append("no tokenizer given (--tokenizer VAR): the folder holds the model only")
        return Shipped(folder, format, None, files, time.perf_counter() - started, survival, notes)
    quant = quant or "f16"
    name = _gguf_name(format, quant)
    survival, notes = write_gguf(merged, Layout.of(merged.model), folder / name, quant, tokenizer,
                                 getattr(merged.model, "name_or_path", "") or type(merged.model).__name__)
    (folder / "Modelfile").write_text(modelfile(name, tokenizer))
    notes.append(f"Ollama: cd {folder} && ollama create my-model -f Modelfile")
    return Shipped(folder, format, quant, [name, "Modelfile"], time.perf_counter() - started, survival, notes, name)


def reload(model: Any, shipped: Shipped, dtype: torch.dtype = torch.float32) -> Any:
    """The export loaded back with transformers (a GGUF file through ``gguf_file=``), in eval mode."""
    cls = type(registry.require(model).model)
    if not hasattr(cls, "from_pretrained") or shipped.format not in ("merged", "gguf"):
        raise OptionError(f"a {shipped.format} export of a {cls.__name__} cannot be loaded back here")
    kwargs = {"gguf_file": shipped.file} if shipped.format == "gguf" else {}
    loaded = cls.from_pretrained(str(shipped.path), dtype=dtype, **kwargs)
    loaded.hf_quantizer = None
    return loaded.eval()


def export(model: Any, path: str | os.PathLike, format: str = "script", quant: str | None = None,
           metric: Callable[[Any], float] | None = None, tokenizer: Any = None, adapter: str | None = None,
           **script: Any) -> Any:
    """Export ``model``'s adapter to ``path``.

    ``format``: ``script`` (default: a folder that ``accelerate launch`` continues; ``script`` takes ``data``,
    ``eval_data``, ``loss_fn``, ``settings``), ``merged`` (a transformers folder of W + ΔW), ``gguf`` (one GGUF
    file + Ollama Modelfile; ``quant`` f16 | bf16 | q8_0 | q4_0 | f32) or ``gguf-lora`` (the adapter alone for
    llama.cpp's ``--lora``). ``metric(model) -> float`` is measured on the live model and on the reloaded export.
    """
    if format not in FORMATS:
        raise OptionError(f"--format must be one of {', '.join(FORMATS)}, not `{format}`")
    if format == "script":
        if quant is not None or metric is not None or adapter is not None:
            raise OptionError("--quant, --metric and --adapter apply to merged and GGUF exports, not to `script`")
        return export_script(model, path, tokenizer=tokenizer, **script)
    if script:
        raise OptionError(f"{', '.join(sorted(script))}: only a `script` export takes data or training settings")
    check_tokenizer(tokenizer, "tokenizer", saves=format == "merged")
    check_callable(metric, "metric")
    if metric is not None and format == "gguf-lora":
        raise OptionError("--metric applies to merged and gguf exports (a GGUF LoRA alone is no model)")
    session = registry.require(model)
    session.ensure_idle("export")
    folder = output_folder(path, "export path", marker=_marker(format), holds=f"a `{format}` export")
    shipped = _write(model, folder, format, quant, tokenizer, adapter)
    (folder / _marker(format)).write_text("written by lora_nb.export\n")
    if metric is not None:
        with user_call("the metric"):
            before = float(metric(session.model))
        again = reload(model, shipped)
        with user_call("the metric (on the export loaded back)"):
            shipped.survival.metric = (before, float(metric(again)))
    shipped.survival.warn_if_erased()
    return shipped
