"""Every input of an export checked before anything is written: the format, the options it takes, the quant, the
tokenizer, the metric, the package the format needs, the model (idle, an exportable adapter, a layout the format
can describe) and the folder. A refusal is one line and leaves the model and the disk as they were."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ...errors import OptionError, PathError
from .. import registry
from ..files import folder_kind, recover
from ..kinds import check_callable, check_tokenizer
from ..paths import output_folder
from .formats import FORMATS, Format
from .request import Job


def _format(name: Any) -> Format:
    fmt = FORMATS.get(name) if isinstance(name, str) else None
    if fmt is None:
        raise OptionError(f"--format must be one of {', '.join(FORMATS)}, not `{name}`")
    return fmt


def _takers(test: Callable[[Format], bool]) -> str:
    return " and ".join(f"`{f.name}`" for f in FORMATS.values() if test(f))


def _check_options(fmt: Format, quant: Any, metric: Any, adapter: Any, options: dict[str, Any]) -> None:
    """Refuse options the format does not take, naming the formats that do."""
    given = [("--quant", quant is not None, lambda f: bool(f.quants)),
             ("--metric", metric is not None, lambda f: f.takes_metric),
             ("--adapter", adapter is not None, lambda f: f.takes_adapter)]
    for option, present, takes in given:
        if present and not takes(fmt):
            raise OptionError(f"{option} applies to {_takers(takes)} exports, not to `{fmt.name}`"
                              + (f" ({fmt.precision})" if fmt.precision else ""))
    extra = sorted(k for k, v in options.items() if v is not None)
    if extra and not fmt.takes_data:
        raise OptionError(f"{', '.join(extra)}: only a {_takers(lambda f: f.takes_data)} export takes data or "
                          "training settings")


def _quant(fmt: Format, quant: str | None) -> str | None:
    if quant is not None and quant not in fmt.quants:
        raise OptionError(f"--quant for a `{fmt.name}` export must be one of {', '.join(fmt.quants)}, not `{quant}`")
    return quant or fmt.default_quant


def _tokenizer(fmt: Format, tokenizer: Any) -> None:
    check_tokenizer(tokenizer, "tokenizer", saves=fmt.saves_tokenizer)
    if tokenizer is None and fmt.needs_tokenizer:
        raise OptionError(f"a `{fmt.name}` export carries its tokenizer: pass the one the model uses "
                          "(--tokenizer VAR)")


def _holds(fmt: Format) -> str:
    return "an export" if fmt.takes_data else f"a `{fmt.name}` export"


def is_export(folder: Path, fmt: Format) -> bool:
    """Whether ``folder`` holds an export of ``fmt``: its manifest's kind, or the marker the previous release
    wrote (folders exported before manifests existed)."""
    return folder_kind(folder) == fmt.kind or (folder / fmt.legacy_marker).exists()


def target_folder(path: Any, fmt: Format, overwrite: bool) -> Path:
    """The folder the export will write: new, empty, or an earlier export of the same format (with ``overwrite``)."""
    target = output_folder(path, "export path")
    try:
        recover(target)  # an interrupted swap there is finished (or rolled back) before the folder is judged
    except OSError:
        pass  # judged as it is; the write reports what stops it
    if not target.is_dir() or not any(target.iterdir()):
        return target
    if not is_export(target, fmt):
        raise PathError(f"export path {target} exists and is not {_holds(fmt)} folder; choose a new or empty path")
    if not overwrite:
        raise PathError(f"export path {target} already holds {_holds(fmt)}; pass `overwrite=True` (`--overwrite`) "
                        "to replace it (atomically: the old one stays until the new one is complete)")
    return target


def prepare(model: Any, path: str | os.PathLike, format: str, quant: str | None, metric: Any, tokenizer: Any,
            adapter: str | None, overwrite: bool, options: dict[str, Any]) -> Job:
    """The checked ``Job`` for an export, or a one-line ``LoraNBError``; nothing is written or changed here."""
    fmt = _format(format)
    _check_options(fmt, quant, metric, adapter, options)
    quant = _quant(fmt, quant)
    _tokenizer(fmt, tokenizer)
    check_callable(metric, "metric")
    if fmt.package is not None:
        fmt.package.require(f"a `{fmt.name}` export")
    session = registry.require(model)
    session.ensure_idle("export")
    adapter = session.check_adapter(adapter) if adapter is not None else session.active
    job = Job(fmt, model, session, adapter, Path(), quant, tokenizer, metric, dict(options))
    fmt.check(job)
    job.target = target_folder(path, fmt, overwrite)
    return job
