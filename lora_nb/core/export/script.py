"""The ``script`` export: a notebook run as a folder that ``accelerate launch train.py`` continues anywhere.

The folder holds ``train.py`` (from ``training/processes/script_template.py``: the last run's settings, how to
rebuild the model, where the data is), ``adapter/`` (``io.save``: PEFT format), ``base/`` (the base model without
LoRA: ``save_pretrained`` for transformers models; for a plain ``nn.Module`` a ``torch.save`` pickle, which the
script can load only if the model's classes are importable there) and ``data/``.

Data that can be saved: lists/tuples/dicts of tensors, numbers and strings (read back with
``torch.load(weights_only=True)``), ``TensorDataset``s, 🤗 ``datasets.Dataset``s, and DataLoaders over
those with the default collation. Anything else (a custom ``Dataset`` class, a generator, a
``loss_fn`` function) is not saved: the script says where to write it, and ``Export.notes`` says so.
"""

from __future__ import annotations

import copy
import json
import string
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset
from torch.utils.data._utils.collate import default_collate

from ...errors import AdapterError, OptionError, a_kind
from .. import registry
from ..adapters.io import save
from ..kinds import check_callable
from ..training.processes.export import TEMPLATE
from .request import Job, listing

SCRIPT = "train.py"
_SAFE = (torch.Tensor, str, int, float, bool, type(None))


@dataclass
class Export:
    """What a script export wrote: the folder, the command that continues the run, and what could not be saved."""

    path: Path
    command: str
    files: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def __repr__(self) -> str:
        lines = [f"exported to {self.path} ({', '.join(self.files)})", f"continue with: {self.command}"]
        return "\n".join(lines + [f"note: {n}" for n in self.notes])


OPTIONS = ("data", "eval_data", "loss_fn", "settings")  # what only a script export takes


def check(job: Job) -> None:
    """Everything the script needs, before anything is written (``job.settings``: the run's settings)."""
    unknown = sorted(set(job.options) - set(OPTIONS))
    if unknown:
        raise OptionError(f"export takes no option `{unknown[0]}` (a script export takes {', '.join(OPTIONS)})")
    session = job.session
    if any(getattr(m, "merged", False) for m in session.model.modules() if hasattr(m, "merged_adapters")):
        raise AdapterError("an adapter is merged into the base weights; unmerge it before exporting "
                           "(`lora_nb.unmerge(model)`)")
    check_callable(job.options.get("loss_fn"), "loss_fn")
    job.settings = _settings(session, job.options.get("settings"))
    _check_rebuildable(session.model)


def write(job: Job, staging: Path) -> Export:
    """Write the active adapter, base, data and the run's settings as an ``accelerate launch`` script into
    ``staging`` (the folder that becomes ``job.target``)."""
    session, settings = job.session, dict(job.settings or {})
    target = job.target
    result = Export(target, f"cd {target} && accelerate launch --num_processes N {SCRIPT}   (--cpu for CPU processes)")
    save(session.model, staging / "adapter", session.active, overwrite=True)  # the export's own folder
    model_entry = _save_base(session.model, staging / "base")
    model_entry["adapter"] = session.active
    parts = {}
    for part in ("train", "eval"):
        parts[part], note, batch = _save_data(job.options.get("data" if part == "train" else "eval_data"),
                                              staging / "data", part)
        if note:
            result.notes.append(note)
        if batch is not None and part == "train":
            settings["batch_size"] = batch
    tok = None
    if job.tokenizer is not None:
        job.tokenizer.save_pretrained(str(staging / "tokenizer"))
        tok = "tokenizer"
    loss, note = _loss_entry(job.options.get("loss_fn"))
    if note:
        result.notes.append(note)
    _write_script(staging, session, settings, model_entry, parts, tok, loss)
    result.files = listing(staging)
    return result


def _settings(session: registry.Session, given: dict | None) -> dict:
    """The last run's settings (``session.run``) for the active adapter, overridden by ``given``."""
    from ..training.settings import IN_PROCESS_ONLY, TrainSettings, check_training_options

    run = session.run
    base = asdict(run.settings) if run is not None and run.adapter == session.active else {}
    if not base:
        base = asdict(TrainSettings())
    for name in IN_PROCESS_ONLY:  # checkpoints, samples, early stopping…: this kernel's run only
        base[name] = TrainSettings.__dataclass_fields__[name].default
    base.update(given or {})
    base["processes"], base["device"] = 1, "auto"  # the launcher decides both
    check_training_options(base)
    TrainSettings(**base)  # checked now, not on the cluster
    return base


def _base_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """The base model's state dict under its own names: peft's wrappers and adapter tensors left out."""
    out = {}
    for key, value in model.state_dict().items():
        parts = key.split(".")
        if any(p.startswith("lora_") for p in parts) or "modules_to_save" in parts:
            continue
        out[".".join(p for p in parts if p not in ("base_layer", "original_module"))] = value
    return out


def _check_rebuildable(model: nn.Module) -> None:
    """A plain module is pickled by class reference: its classes must be importable by the script."""
    if hasattr(model, "save_pretrained") and hasattr(model, "config"):
        return
    local = sorted({type(m).__name__ for m in model.modules()
                    if type(m).__module__ == "__main__" or "<locals>" in type(m).__qualname__})
    if local:
        raise OptionError(f"the model uses classes defined in the notebook ({', '.join(local)}), which a script "
                          "cannot import: move them into a .py module and rebuild the model from there")


def _save_base(model: nn.Module, folder: Path) -> dict:
    """``{"kind", "path", ...}`` saying how the script rebuilds the base model."""
    cls = type(model)
    if hasattr(model, "save_pretrained") and hasattr(model, "config"):
        model.save_pretrained(str(folder), state_dict=_base_state(model))
        return {"kind": "transformers", "module": cls.__module__, "class": cls.__name__, "path": "base"}
    from ..adapters.attach import strip_lora

    plain = copy.deepcopy(model)
    strip_lora(plain)
    folder.mkdir(parents=True, exist_ok=True)
    torch.save(plain, folder / "model.pt")
    return {"kind": "torch", "path": "base/model.pt", "class": f"{cls.__module__}.{cls.__qualname__}"}


def _plain(obj: Any, depth: int = 0) -> bool:
    """True when ``torch.load(weights_only=True)`` reads ``obj`` back (tensors, numbers, str, containers)."""
    if isinstance(obj, _SAFE):
        return True
    if isinstance(obj, (list, tuple)) and depth < 4:
        items = obj if len(obj) <= 64 else [obj[0], obj[-1]]
        return all(_plain(v, depth + 1) for v in items)
    if isinstance(obj, dict) and depth < 4:
        return all(isinstance(k, str) and _plain(v, depth + 1) for k, v in obj.items())
    return False


def _save_data(obj: Any, folder: Path, part: str) -> tuple[dict | None, str, int | None]:
    """``(entry for DATA, note, batch size imposed by a DataLoader)``; the note says what was not saved."""
    if obj is None:
        return _missing(part, "no data was given to export") if part == "train" else (None, "", None)
    batch = None
    if isinstance(obj, DataLoader):
        if obj.collate_fn is not default_collate or obj.batch_size is None:
            return _missing(part, "a DataLoader with its own collate_fn or batch sampler")
        obj, batch = obj.dataset, obj.batch_size
    if isinstance(obj, TensorDataset):
        obj = tuple(obj.tensors)
    folder.mkdir(parents=True, exist_ok=True)
    if type(obj).__module__.split(".")[0] == "datasets" and hasattr(obj, "save_to_disk"):
        obj.save_to_disk(str(folder / part))
        return {"kind": "datasets", "path": f"data/{part}"}, "", batch
    if isinstance(obj, (list, tuple, dict)) and _plain(obj):
        torch.save(obj, folder / f"{part}.pt")
        return {"kind": "torch", "path": f"data/{part}.pt"}, "", batch
    return _missing(part, f"{a_kind(obj)}, which lora_nb cannot save")


def _missing(part: str, why: str) -> tuple[dict, str, None]:
    return ({"kind": "missing", "why": why},
            f"the {part} data was not exported ({why}): write load_data() in train.py", None)


def _loss_entry(loss_fn: Any) -> tuple[dict | None, str]:
    if loss_fn is None:
        return None, ""
    name = type(loss_fn).__name__
    if isinstance(loss_fn, nn.Module) and type(loss_fn) is getattr(nn, name, None) and not list(loss_fn.parameters()):
        return {"torch.nn": name}, ""
    why = f"`{getattr(loss_fn, '__name__', name)}` is code, not data"
    return {"missing": why}, f"the loss_fn was not exported ({why}): define it in load_loss() in train.py"


def _write_script(target: Path, session, settings: dict, model: dict, data: dict, tok, loss) -> None:
    from ...version import __version__

    template = string.Template(TEMPLATE.read_text())
    text = template.substitute(
        VERSION=__version__, WHEN=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        MODEL_TYPE=type(session.model).__name__, ADAPTER=session.active,
        SETTINGS=json.dumps(settings, indent=1), MODEL=json.dumps(model), DATA=json.dumps(data),
        TOKENIZER=json.dumps(tok), LOSS=json.dumps(loss))
    (target / SCRIPT).write_text(text)


