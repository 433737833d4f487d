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

from ..frontend import resolve_ui
from ..viz.svg import render

__all__ = ["Pictures", "Report", "Slot", "close_tree", "resolve_ui", "svg_bundle"]


def svg_bundle(spec: Any, text: str) -> dict:
    """A display bundle showing ``spec`` as SVG anywhere (nbconvert, GitHub, VS Code, Colab), ``text`` in a terminal."""
    return {"image/svg+xml": render(spec), "text/plain": text}


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

    def __init__(self, text: str, specs: list[dict], html: str = "") -> None:
        self.text, self.specs, self.html = text, specs, html

    @property
    def figures(self) -> list[Any]:
        """The pictures as plotly ``go.Figure``s."""
        from ..viz import figure

        return [figure(s) for s in self.specs]

    def __repr__(self) -> str:
        return self.text

    def _repr_html_(self) -> str:
        return self.html or f"<pre>{html.escape(self.text)}</pre>"


class Pictures(Report):
    """A report shown as its table and one ``image/svg+xml`` output per picture (no widgets needed)."""

    def _ipython_display_(self) -> None:
        from IPython.display import display

        display({"text/plain": self.text, "text/html": self._repr_html_()}, raw=True)
        for spec in self.specs:
            display(svg_bundle(spec, "<figure>"), raw=True)


def close_tree(widget: Any) -> None:
    """Close ``widget`` and every widget under it (children and their layouts / styles)."""
    for child in getattr(widget, "children", ()):
        close_tree(child)
    for name in ("layout", "style"):
        sub = getattr(widget, name, None)
        if sub is not None and hasattr(sub, "close"):
            sub.close()
    widget.close()
