"""``status``: what adapters a model has, read from peft's own state each time."""

from __future__ import annotations

import html
import re
from dataclasses import dataclass, field
from typing import Any

from .. import registry


@dataclass
class AdapterInfo:
    """One adapter: its settings and state across all its layers."""

    name: str
    r: int
    alpha: float
    active: bool
    enabled: bool | str  # True, False or "irregular" (layers disagree)
    merged: bool | str
    layers: int
    params: int
    dora: bool = False


@dataclass
class ModelStatus:
    """A model's LoRA state; ``_repr_html_`` for notebooks, ``__str__`` for terminals."""

    model_type: str
    adapters: list[AdapterInfo]
    targets: list[str]
    trainable_params: int
    total_params: int
    training: str | None = None  # state of the current run, if any
    notes: list[str] = field(default_factory=list)

    @property
    def trainable_percent(self) -> float:
        return 100.0 * self.trainable_params / max(self.total_params, 1)

    def _rows(self) -> list[list[str]]:
        def flag(v: bool | str) -> str:
            return v if isinstance(v, str) else ("yes" if v else "no")

        return [
            [a.name + (" *" if a.active else ""), str(a.r), f"{a.alpha:g}", flag(a.enabled), flag(a.merged),
             str(a.layers), f"{a.params:,}"]
            for a in self.adapters
        ]

    _HEAD = ["adapter", "r", "alpha", "enabled", "merged", "layers", "params"]

    def _summary(self) -> str:
        line = (f"{self.model_type}: {len(self.targets)} adapted modules; trainable "
                f"{self.trainable_params:,} / {self.total_params:,} params ({self.trainable_percent:.3f}%)")
        if self.training:
            line += f"; training: {self.training}"
        return line

    def modules_line(self, groups: int = 8) -> str:
        """The adapted modules, grouped by their last name with counts: ``modules: q_proj ×12, v_proj ×12``
        (a module alone in its group by its whole name)."""
        named: dict[str, list[str]] = {}
        for target in self.targets:
            named.setdefault(target.rpartition(".")[2], []).append(target)
        parts = [f"{last} ×{len(full)}" if len(full) > 1 else full[0] for last, full in named.items()]
        more = f", … ({len(parts) - groups} more)" if len(parts) > groups else ""
        return f"modules: {', '.join(parts[:groups])}{more}" if parts else "modules: none"

    def __str__(self) -> str:
        rows = [self._HEAD, *self._rows()]
        widths = [max(len(r[i]) for r in rows) for i in range(len(self._HEAD))]
        table = "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths)) for r in rows)
        return "\n".join([self._summary(), self.modules_line(), table, *self.notes, "(* = active adapter)"])

    def __repr__(self) -> str:
        return str(self)

    def _repr_html_(self) -> str:
        esc = html.escape
        head = "".join(f"<th>{esc(h)}</th>" for h in self._HEAD)
        body = "".join("<tr>" + "".join(f"<td>{esc(c)}</td>" for c in r) + "</tr>" for r in self._rows())
        notes = "".join(f"<div>{esc(n)}</div>" for n in self.notes)
        more = len(self.targets) - 12
        shown = ", ".join(self.targets[:12]) + (f", … ({more} more)" if more > 0 else "")
        return (
            f"<div class='lora-nb-status'><b>{esc(self._summary())}</b>"
            f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"
            f"<details><summary>adapted modules</summary><code>{esc(shown)}</code></details>{notes}"
            "<small>* active adapter</small></div>"
        )


def _state(values: list[bool]) -> bool | str:
    if not values:
        return False
    if all(values):
        return True
    return "irregular" if any(values) else False


def adapter_named_parameters(model, adapter: str) -> list[tuple[str, Any]]:
    """``(name, parameter)`` of every parameter that belongs to ``adapter`` (LoRA factors, saved modules)."""
    rx = re.compile(rf"\.(lora_\w+|modules_to_save)\.{re.escape(adapter)}(\.|$)")
    return [(n, p) for n, p in model.named_parameters() if rx.search(n)]


def adapter_params(model, adapter: str) -> int:
    """Number of parameters that belong to ``adapter``."""
    return sum(p.numel() for _, p in adapter_named_parameters(model, adapter))


def status(model: Any) -> ModelStatus:
    """The adapters of ``model``: which exist, which is active, enabled and merged, and sizes."""
    from peft import get_layer_status

    session = registry.require(model)
    layers = get_layer_status(session.model)  # names as in the user's model
    trainable, total = session.peft.get_nb_trainable_parameters()
    active = set(session.peft.active_adapters)
    infos = []
    for name, config in session.peft.peft_config.items():
        mine = [ls for ls in layers if name in ls.available_adapters]
        infos.append(AdapterInfo(
            name=name,
            r=config.r,
            alpha=config.lora_alpha,
            active=name in active,
            enabled=_state([ls.enabled and name in ls.active_adapters for ls in mine]),
            merged=_state([name in ls.merged_adapters for ls in mine]),
            layers=len(mine),
            params=adapter_params(session.model, name),
            dora=bool(getattr(config, "use_dora", False)),
        ))
    notes = []
    if any("irregular" in (a.enabled, a.merged) for a in infos):
        notes.append("irregular: the adapter's layers disagree (some on/merged, some not)")
    run = session.run
    return ModelStatus(
        model_type=type(session.model).__name__,
        adapters=infos,
        targets=[ls.name for ls in layers],
        trainable_params=trainable,
        total_params=total,
        training=run.state if run is not None and session.training else None,
        notes=notes,
    )
