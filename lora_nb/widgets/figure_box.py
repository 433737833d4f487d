"""``FigureBox``: an ``ipywidgets.Output`` that shows one static ``go.Figure`` and replaces it on ``draw``."""

from __future__ import annotations

from typing import Any

import ipywidgets as W


class FigureBox(W.Output):
    """Shows the latest figure given to ``draw`` (a plain ``go.Figure``: no FigureWidget, no custom JavaScript)."""

    def __init__(self, figure: Any = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.figure = None
        self.draws = 0
        if figure is not None:
            self.draw(figure)

    def draw(self, figure: Any) -> None:
        """Replace the shown figure with ``figure``."""
        from IPython.display import display

        self.figure = figure
        self.draws += 1
        with self:
            self.clear_output(wait=True)
            display(figure)


def with_picture(widget: W.Widget, figure: Any, **kwargs: Any) -> dict:
    """``widget``'s display bundle plus ``figure`` as plotly JSON, which saved notebooks and nbconvert show."""
    import json

    import plotly.io as pio

    bundle = widget._repr_mimebundle_(**kwargs)
    if figure is not None:
        bundle["application/vnd.plotly.v1+json"] = json.loads(pio.to_json(figure, validate=False))
    return bundle
