"""What differs between ipywidgets 7.7 (Google Colab's) and 8.x, in one place, so every view works with either.

- Display: 8.x widgets give IPython a ``_repr_mimebundle_``; 7.x widgets display themselves in
  ``_ipython_display_``, which IPython prefers and which ignores a ``display_id``. ``widget_bundle`` builds the
  same bundle under both; ``BundleDisplay`` makes a widget subclass display its own ``_repr_mimebundle_`` on 7.x.
- Tab titles: ``titles=`` (8.x) or ``set_title`` (both): ``set_titles``.
- Tooltips: ``tooltip`` on every widget (8.x); ``description_tooltip`` on 7.x widgets other than buttons:
  ``tooltip``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import ipywidgets as W

SEVEN = not hasattr(W.Widget, "_repr_mimebundle_")  # ipywidgets 7.x


def widget_bundle(widget: Any, **kwargs: Any) -> dict:
    """The display bundle of ``widget``: short ``text/plain`` and the widget-view reference a front end renders."""
    if not SEVEN:
        return W.Widget._repr_mimebundle_(widget, **kwargs)
    text = repr(widget)
    bundle = {"text/plain": text[:110] + "…" if len(text) > 110 else text}
    if widget._view_name is not None:  # as ipywidgets 7.x's _ipython_display_ builds it
        bundle["application/vnd.jupyter.widget-view+json"] = {"version_major": 2, "version_minor": 0,
                                                               "model_id": widget.model_id}
    return bundle


class BundleDisplay:
    """Mixin (before the widget class) for widgets whose ``_repr_mimebundle_`` adds outputs for tools without
    widgets: on ipywidgets 7.x they are displayed from that bundle too."""

    if SEVEN:
        def _ipython_display_(self, **kwargs: Any) -> None:
            from IPython.display import display

            display(self._repr_mimebundle_(), raw=True)


def set_titles(tab: Any, titles: Sequence[str]) -> None:
    """Name the pages of a ``Tab`` (or ``Accordion``)."""
    for index, title in enumerate(titles):
        tab.set_title(index, title)


def tooltip(cls: type, text: str) -> dict:
    """The keyword giving a ``cls`` widget the hover text ``text`` in this ipywidgets."""
    return {"tooltip" if "tooltip" in cls.class_trait_names() else "description_tooltip": text}
