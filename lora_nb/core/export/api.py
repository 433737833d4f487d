"""``export`` and ``check``: the public entry points of shipping (``lora_nb.export``, ``%lora export``/``check``).

An export looks its format up in ``formats.FORMATS``, checks every input before anything is written
(``inputs.prepare``), measures the user's metric on the live model, then writes through the one atomic writer: the
format's writer fills a staging folder, the metric is measured again on the export loaded back from it, and only then
does the folder replace ``path`` in one step (with a manifest of SHA-256 per file, its kind ``export-<format>``). A
refusal, a raising metric, a full disk, a kill or a Ctrl-C leave ``path`` as it was: the previous export, or nothing.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from ...errors import OptionError
from .. import registry
from ..files import atomic_folder
from ..kinds import user_call
from .formats import FORMATS, QUANTS
from .inputs import prepare
from .preflight import check
from .request import Job, Shipped

__all__ = ["FORMATS", "QUANTS", "Shipped", "check", "export", "reload"]


def reload(model: Any, shipped: Shipped, dtype: torch.dtype = torch.float32, folder: Path | None = None) -> Any:
    """The export loaded back with transformers (a GGUF file through ``gguf_file=``), in eval mode; ``folder``:
    where to read it (default ``shipped.path``)."""
    cls = type(registry.require(model).model)
    fmt = FORMATS.get(shipped.format)
    if not hasattr(cls, "from_pretrained") or fmt is None or not fmt.reloadable:
        raise OptionError(f"a {shipped.format} export of a {cls.__name__} cannot be loaded back here")
    kwargs = {"gguf_file": shipped.file} if shipped.file else {}
    loaded = cls.from_pretrained(str(folder or shipped.path), dtype=dtype, **kwargs)
    loaded.hf_quantizer = None
    return loaded.eval()


def _metric(job: Job, what: str, model: Any) -> float:
    assert job.metric is not None
    with user_call(what):
        return float(job.metric(model))


def _write(job: Job) -> Any:
    """Write the export through the atomic writer; with a metric, measured on the live model first and on the export
    loaded back from the staging folder before it replaces ``job.target`` (a raising metric leaves nothing)."""
    before = _metric(job, "the metric", job.session.model) if job.metric is not None else None
    with atomic_folder(job.target, kind=job.format.kind) as staging:
        started = time.perf_counter()
        result = job.format.writer(job, staging)
        result.seconds = time.perf_counter() - started
        if before is not None:
            again = reload(job.model, result, folder=staging)
            result.survival.metric = (before, _metric(job, "the metric (on the export loaded back)", again))
    return result


def export(model: Any, path: str | os.PathLike, format: str = "script", quant: str | None = None,
           metric: Callable[[Any], float] | None = None, tokenizer: Any = None, adapter: str | None = None,
           overwrite: bool = False, **script: Any) -> Any:
    """Export ``model``'s adapter to ``path``.

    ``format``: ``script`` (default: a folder that ``accelerate launch`` continues; ``script`` takes ``data``,
    ``eval_data``, ``loss_fn``, ``settings``), ``merged`` (a transformers folder of W + ΔW), ``gguf`` (one GGUF
    file + Ollama Modelfile; ``quant`` f16 | bf16 | q8_0 | q4_0 | f32) or ``gguf-lora`` (the adapter alone for
    llama.cpp's ``--lora``). ``metric(model) -> float`` is measured on the live model and on the reloaded export.
    A folder that holds an export already is replaced only with ``overwrite=True`` (atomically: the old export
    stays until the new one is complete).
    """
    job = prepare(model, path, format, quant, metric, tokenizer, adapter, overwrite, script)
    result = _write(job)
    if isinstance(result, Shipped):
        result.survival.warn_if_erased()
    return result
