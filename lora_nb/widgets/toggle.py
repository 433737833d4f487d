"""``AdapterPanel``: switch a model's adapters on and off, set the strength, merge — one widget.

Every value shown is read from peft's state (through lora_nb.core) each time the model changes,
whoever changed it: the panel is a session listener, so ``%lora on/off``, ``lora_nb.enable`` or a
merge made in code show up at once. A change made in the panel goes through the same core
functions; a refused change (training running, merged adapter, …) is reverted and the reason is
shown in the status line.
"""

from __future__ import annotations

import html
from collections.abc import Callable
from typing import Any

import ipywidgets as w

from .. import core
from ..core import registry
from ..core.adapters import switch
from ..core.adapters.merge import merge, unmerge
from ..core.adapters.switch import set_strength, strength
from ..errors import LoraNBError
from ..markup import code_spans
from .chart import ViewBox
from .ui import close_tree


class AdapterPanel:
    """Toggle buttons per adapter, active adapter, strength slider, merge state and a status line."""

    def __init__(self, model: Any) -> None:
        self.session = registry.require(model)
        self.model = self.session.model
        self._syncing = False
        self.closed = False
        self.toggles: dict[str, w.ToggleButton] = {}
        self.toggle_box = w.HBox()
        self.active_label = w.HTML()
        self.strength = w.FloatSlider(value=1.0, min=0.0, max=2.0, step=0.05, description="strength",
                                      continuous_update=False, readout_format=".2f")
        self.merged_label = w.HTML()
        self.merge_button = w.Button(description="merge", tooltip="merge the active adapter into the base weights")
        self.unmerge_button = w.Button(description="unmerge", tooltip="restore the base weights exactly")
        self.status_line = w.HTML()
        self.strength.observe(self._on_strength, names="value")
        self.merge_button.on_click(lambda _: self._act(lambda: merge(self.model), "merged"))
        self.unmerge_button.on_click(lambda _: self._act(lambda: unmerge(self.model), "unmerged"))
        self.widget = ViewBox([
            self.toggle_box, self.active_label, self.strength,
            w.HBox([self.merged_label, self.merge_button, self.unmerge_button]), self.status_line,
        ], fallback=self.status_html)
        self.widget._lora_panel = self  # the displayed widget keeps the panel (a weakly held listener) alive
        self.session.listeners.add(self)
        self.refresh()

    # -- peft state → widgets

    def refresh(self, message: str | None = None) -> None:
        """Show peft's current state; ``message`` (if any) goes in the status line."""
        if self.closed:
            return None
        if registry.find(self.model) is not self.session:
            return self._show_detached()
        session = self.session
        enabled = {a.name: a.enabled for a in core.status(self.model).adapters}
        merged = switch.merged_adapters(session)
        self._syncing = True
        try:
            if list(self.toggles) != session.adapters:
                self._build_toggles(session.adapters)
            for name, button in self.toggles.items():
                button.value = name == session.active and enabled[name] is True
                button.button_style = "success" if button.value else ""
            value = strength(self.model)
            if value is not None:
                self.strength.value = value
            self.strength.disabled = bool(merged)
        finally:
            self._syncing = False
        state = enabled[session.active]
        on = {True: "on", False: "off"}.get(state, str(state))
        self.active_label.value = f"active: <b>{html.escape(session.active)}</b> ({on})"
        self.merged_label.value = "merged: " + (", ".join(sorted(merged)) if merged else "no")
        self.merge_button.disabled, self.unmerge_button.disabled = bool(merged), not merged
        shown = "irregular (layers disagree)" if value is None else f"{value:.2f}"
        self.status_line.value = code_spans(message or f"adapter `{session.active}` {on}, strength {shown}")

    def _build_toggles(self, adapters: list[str]) -> None:
        self.toggles = {}
        for name in adapters:
            button = w.ToggleButton(description=name, tooltip=f"switch adapter `{name}` on / off")
            button.observe(self._on_toggle(name), names="value")
            self.toggles[name] = button
        self.toggle_box.children = tuple(self.toggles.values())

    def _show_detached(self) -> None:
        for child in (*self.toggles.values(), self.strength, self.merge_button, self.unmerge_button):
            child.disabled = True
        self.status_line.value = "LoRA was removed from this model (detach)"

    def on_model_change(self, session, what: str) -> None:
        """Session listener: the model changed (here or elsewhere); show its new state."""
        self.refresh()

    # -- widgets → model

    def _act(self, action: Callable[[], Any], done: str) -> None:
        try:
            action()
        except LoraNBError as exc:
            self.refresh(message=f"refused: {exc}")
        else:
            self.refresh(message=f"{done}: adapter `{self.session.active}`")

    def _on_toggle(self, name: str):
        def changed(change: dict) -> None:
            if self._syncing:
                return
            if change["new"]:
                self._act(lambda: core.enable(self.model, name), "on")
            elif name == self.session.active:
                self._act(lambda: core.disable(self.model), "off")

        return changed

    def _on_strength(self, change: dict) -> None:
        if not self._syncing:
            self._act(lambda: set_strength(self.model, change["new"]), f"strength {change['new']:.2f}")

    def status_html(self) -> str:
        """The model's adapter table (what tools without widgets show of the panel)."""
        if registry.find(self.model) is not self.session:
            return html.escape("LoRA was removed from this model (detach)")
        return core.status(self.model)._repr_html_()

    def close(self) -> None:
        """Close the panel's widgets and stop following the model."""
        self.session.listeners.discard(self)
        self.closed = True
        close_tree(self.widget)

    def _ipython_display_(self) -> None:
        from IPython.display import display

        display(self.widget)


def text_panel(model: Any) -> str:
    """The panel's information as text, for frontends without widgets."""
    session = registry.require(model)
    value = strength(model)
    merged = switch.merged_adapters(session)
    lines = [str(core.status(model)),
             f"strength of `{session.active}`: " + ("irregular" if value is None else f"{value:.2f}"),
             "merged: " + (", ".join(sorted(merged)) if merged else "no"),
             "(no widget frontend: use %lora on/off/merge/unmerge MODEL to switch)"]
    return "\n".join(lines)
