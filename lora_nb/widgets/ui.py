"""How views show themselves: the ``ui`` mode, SVG display bundles, display slots updated in place, pictures.

``ui`` is one of ``auto | widget | static | text``. ``widget``: core ipywidgets (charts are SVG inside
``ipywidgets.HTML``, no custom JavaScript). ``static``: outputs updated in place by display id, carrying
``image/svg+xml``. ``text``: printed progress and tables. ``auto`` is ``static`` in Google Colab, ``widget``
in any other Jupyter kernel and ``text`` elsewhere (terminal IPython, scripts). This module imports no
ipywidgets, so static and text views never pay for them.
"""

from __future__ import annotations

import contextvars
import html
import sys
import threading
from typing import Any

from ..errors import OptionError
from ..viz.svg import render

MODES = ("auto", "widget", "static", "text")


def in_kernel() -> bool:
    """True inside a Jupyter kernel (some front end may render widgets)."""
    ipython = sys.modules.get("IPython")
    shell = ipython.get_ipython() if ipython is not None else None
    return getattr(shell, "kernel", None) is not None


def resolve_ui(ui: str | None = "auto", kernel: bool | None = None) -> str:
    """``widget``, ``static`` or ``text`` for the requested mode (``auto`` decides from the front end)."""
    mode = (ui or "auto").strip().lower()
    if mode not in MODES:
        raise OptionError(f"ui must be one of {', '.join(MODES)}, not `{ui}`")
    if mode != "auto":
        return mode
    if "google.colab" in sys.modules:
        return "static"
    return "widget" if (in_kernel() if kernel is None else kernel) else "text"


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
