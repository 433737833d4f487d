"""How views show themselves: the ``ui`` mode, SVG display bundles, display slots updated in place, pictures.

``ui`` is one of ``auto | widget | static | text``. ``widget``: core ipywidgets (charts are SVG inside
``ipywidgets.HTML``, no custom JavaScript). ``static``: outputs updated in place by display id, carrying
``image/svg+xml``. ``text``: printed progress and tables. What ``auto`` means in each front end (Colab, VS Code,
other kernels, terminals) is decided in ``lora_nb.frontend`` (``resolve_ui`` comes from there). This module
imports no ipywidgets, so static and text views never pay for them.
"""

from __future__ import annotations

import contextvars
import html
import threading
from typing import Any

from ..frontend import pick, resolve_ui
from ..markup import caption_html
from ..viz.svg import render

__all__ = ["Pictures", "Report", "Slot", "close_tree", "report", "resolve_ui", "svg_bundle"]


def svg_bundle(spec: Any, text: str) -> dict:
    """A display bundle showing ``spec`` as SVG anywhere (nbconvert, GitHub, VS Code, Colab), ``text`` in a terminal."""
    return {"image/svg+xml": render(spec), "text/plain": text}


def note_of(spec: Any) -> str:
    """The plain sentence a spec carries for its chart (its layout's meta note: what a learner may not know)."""
    meta = (spec.get("layout") or {}).get("meta") if isinstance(spec, dict) else None
    return str(meta.get("note") or "") if isinstance(meta, dict) else ""


def figure_html(spec: Any, svg: str | None = None) -> str:
    """The chart's SVG (it carries its alternative text) with its sentence under it, as HTML."""
    note = note_of(spec)
    caption = caption_html(note) if note else ""
    return f"<div class='lora-nb-chart'>{svg if svg is not None else render(spec)}{caption}</div>"


def picture_bundle(specs: list, text: str) -> dict:
    """What a finished view leaves in the notebook: every chart with its sentence as HTML (nbconvert and most
    viewers), the first chart as SVG (viewers without HTML), ``text`` in a terminal."""
    svgs = [render(spec) for spec in specs]
    return {"text/html": "".join(figure_html(spec, svg) for spec, svg in zip(specs, svgs)),
            "image/svg+xml": svgs[0], "text/plain": text}


class Slot:
    """One output updated in place by display id (safe to update from a training thread)."""

    def __init__(self) -> None:
        self.handle = None
        self.updates = 0

    def show(self, obj: Any, raw: bool = False) -> None:
        """Display ``obj`` here (the first call creates the output, later calls replace it)."""
        from IPython.display import display

        if self.handle is None:
            self.handle = display(obj, raw=raw, display_id=True)
            return
        self.handle.update(obj, raw=raw)  # in JupyterLab: the output of the cell that displayed it
        if threading.current_thread() is not threading.main_thread():  # headless runners follow the latest cell
            contextvars.Context().run(self.handle.update, obj, raw=raw)
        self.updates += 1


class Report:
    """A view's text table (what a terminal shows) with its pictures as specs (``.figures``: plotly figures)."""

    def __init__(self, text: str, specs: list[dict], html: str = "", charts: bool = False) -> None:
        """``charts``: the HTML shows the pictures above the table (else they are only in ``.specs``)."""
        self.text, self.specs, self.html = text, specs, html
        self.charts = specs if charts else []

    @property
    def figures(self) -> list[Any]:
        """The pictures as plotly ``go.Figure``s."""
        from ..viz import figure

        return [figure(s) for s in self.specs]

    def __repr__(self) -> str:
        return self.text

    def _repr_html_(self) -> str:
        """Its charts (each with its sentence), then its table."""
        table = self.html or f"<pre>{html.escape(self.text)}</pre>"
        return "".join(figure_html(spec) for spec in self.charts) + table


class Pictures(Report):
    """A report shown as its table and one ``image/svg+xml`` output per picture (no widgets needed)."""

    def _ipython_display_(self) -> None:
        from IPython.display import display

        display({"text/plain": self.text, "text/html": Report._repr_html_(self)}, raw=True)
        for spec in self.specs:
            display(picture_bundle([spec], "<figure>"), raw=True)


def report(mode: str, text: str, specs: list[dict], html: str = "") -> Report:
    """A report for front end ``mode``: its pictures as SVG outputs where views are static (``Pictures``), else
    the table carrying them (``.figures``)."""
    return pick({"widget": Report, "static": Pictures, "text": Report}, mode)(text, specs, html)


def set_options(dropdown: Any, options: list) -> None:
    """New options for a dropdown that keep its choice where they hold it, else choose the first: a dropdown with
    options never shows none chosen (ipywidgets 8 leaves ``value`` at ``None`` when options replace an empty list,
    and jumps to the first option when the chosen one is still there)."""
    chosen, options = dropdown.value, list(options)
    if list(dropdown.options) != options:
        dropdown.options = options
    values = [o[1] if isinstance(o, tuple) else o for o in options]
    wanted = chosen if chosen in values else (values[0] if values else None)
    if dropdown.value != wanted:
        dropdown.value = wanted


def close_tree(widget: Any) -> None:
    """Close ``widget`` and every widget under it (children and their layouts / styles)."""
    for child in getattr(widget, "children", ()):
        close_tree(child)
    for name in ("layout", "style"):
        sub = getattr(widget, name, None)
        if sub is not None and hasattr(sub, "close"):
            sub.close()
    widget.close()
